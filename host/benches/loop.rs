//! Scheduling-loop cost (issues 5 and 13): host CPU time per period for 2, 8 and 32 domains of
//! about 250 tasks each, with the bundled `priority` and `fairshare` plugins, beside baselines
//! measured in the same run. The aims (issue 13): at a 10 ms period, ≤ 100 µs per period (1 % of
//! one CPU) for 8 domains with `priority`, ≤ 400 µs for 32.
//!
//! `cargo bench -p xsched --bench loop` builds the plugins first (`$CARGO build [--release] -p
//! priority -p fairshare`, into this benchmark's own target directory and profile) and loads them
//! with [`PolicyPlugin::load`], configured by their example files (`plugins/*/*.toml`).
//!
//! One period is what [`Scheduler`](xsched::run::Scheduler) does between reading and writing:
//! [`SnapshotReader::read`] of every domain (each configuration has its own readers, which keep
//! what they learnt from one period to the next), [`TaskTable::rebuild_from`] of the previous
//! period's table (so the CPU-use deltas are computed), [`Ranker::rank`] and [`admit`]. The
//! domains are synthetic guest images in memory ([`synthetic::build`] of
//! [`GuestSpec::typical`]: 2 vCPUs each, named `guest1`, `guest2`, … so that the example configs'
//! rules match). Not included: pausing and resuming the guests (QEMU's cost, measured by the
//! snapshot benchmark: `scripts/bench-snapshot.sh`), parking and unparking, and the loop's
//! bookkeeping of parked tasks (no task is parked here: the images do not change).
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), read between the stages; the cost
//! of one clock read is printed too. The configurations take turns period by period, so that all
//! see the same machine. `XSCHED_BENCH_ROUNDS` sets the periods per configuration (default 300),
//! `XSCHED_BENCH_DOMAINS` the shapes, domains per shape (default `2,8,32`),
//! `XSCHED_BENCH_PROCESSES` the processes per guest (default 200, about 250 tasks: some processes
//! are multi-threaded). For profiling, `XSCHED_BENCH_ONLY=TEXT` runs only the configurations whose
//! name contains TEXT.
//!
//! Baselines: the snapshot reads alone; and the whole period with a trivial in-process ranker
//! (every task in one class, in table order) in place of a plugin, so that the table's and the
//! plugin's shares show. The images do not change, so the readers walk the task lists only at
//! their first read and then once a second; the last row is `priority` with readers that walk
//! at every read (as every read did before the incremental reader), the cost of a period in
//! which every guest forked or exited a task.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xsched::domain::{DomainId, DomainSnapshot};
use xsched::linux::snapshot::SnapshotReader;
use xsched::linux::synthetic::{self, GuestSpec, SyntheticGuest};
use xsched::policy::{PolicyError, PolicyPlugin, Ranked, Ranker};
use xsched::profile::Profile;
use xsched::run::admit;
use xsched::table::{DomainFacts, TaskKey, TaskTable};

type Error = Box<dyn std::error::Error>;

/// The loop's period: the budget the percentages are of.
const PERIOD: Duration = Duration::from_millis(10);
/// vCPUs of each synthetic guest.
const VCPUS: u32 = 2;
/// The host CPU budget handed to the policy and to [`admit`].
const HOST_CPUS: u32 = 2;
/// Untimed periods before the timed ones.
const WARMUP: usize = 20;
/// How often the readers walk the task lists when nothing says they changed: the default.
const REWALK: Duration = xsched::linux::incremental::DEFAULT_REWALK;

fn main() -> Result<(), Error> {
    let rounds = env_number("XSCHED_BENCH_ROUNDS", 300).max(10);
    let processes = env_number("XSCHED_BENCH_PROCESSES", 200).max(1);
    let shapes = env_list("XSCHED_BENCH_DOMAINS", &[2, 8, 32]);
    let plugins = build_plugins()?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let priority = PolicyPlugin::load(plugins.join("libpriority.so"))?;
    let fairshare = PolicyPlugin::load(plugins.join("libfairshare.so"))?;
    let profile = synthetic::lab_profile()?;
    let clock = clock_cost();
    println!("scheduling-loop benchmark: host CPU time per period (CLOCK_THREAD_CPUTIME_ID of the loop's thread), {rounds} periods each");
    println!("one period = snapshot read of every domain + TaskTable::rebuild + rank + admit, synthetic guests in memory");
    println!("NOT included: guest pause/resume (QEMU's cost: see scripts/bench-snapshot.sh), park/unpark writes");
    println!("% CPU = CPU time per period / {PERIOD:?} period; one clock read costs {:.2} µs (5 per period, included)", us(clock));
    // CPU time is not inflated by preemption, but a busy machine's caches still slow the reads.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {} (on {} CPUs)\n", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "), std::thread::available_parallelism().map_or(0, |n| n.get()));
    let mut summary = Vec::new();
    for domains in shapes {
        let guests = (0..domains)
            .map(|i| Guest::build(&profile, processes, u64::from(i) + 1))
            .collect::<Result<Vec<_>, Error>>()?;
        let tasks: usize = guests.iter().map(|g| g.tasks).sum();
        println!("{domains} domains × {processes} processes ({tasks} tasks, {} to {} per domain), {VCPUS} vCPUs each, host budget {HOST_CPUS} CPUs",
            guests.iter().map(|g| g.tasks).min().unwrap_or(0), guests.iter().map(|g| g.tasks).max().unwrap_or(0));
        let priority_config = examples.join("priority/priority.toml");
        let fairshare_config = examples.join("fairshare/fairshare.toml");
        let mut configs = vec![
            Config::new("baseline: snapshot reads only", None, &profile, &guests, REWALK)?,
            Config::new("baseline: period, one-class ranker (no plugin)", Some(Box::new(OneClass)), &profile, &guests, REWALK)?,
            Config::new("priority (priority.toml)", Some(Box::new(priority.instantiate(Some(&priority_config))?)), &profile, &guests, REWALK)?,
            Config::new("fairshare (fairshare.toml)", Some(Box::new(fairshare.instantiate(Some(&fairshare_config))?)), &profile, &guests, REWALK)?,
            Config::new("priority, task lists walked every period", Some(Box::new(priority.instantiate(Some(&priority_config))?)), &profile, &guests, Duration::ZERO)?,
        ];
        if let Ok(only) = std::env::var("XSCHED_BENCH_ONLY") {
            configs.retain(|c| c.name.contains(&only));
        }
        for round in 0..WARMUP + rounds {
            for config in &mut configs {
                let sample = config.period(&profile, &guests)?;
                if round >= WARMUP {
                    config.samples.push(sample);
                }
            }
        }
        println!(
            "  {:<48} {:>9} {:>9} {:>8} {:>8} {:>9} │ {:>8} {:>8} {:>8} {:>8} │ {:>6} {:>6} {:>6}",
            "", "median", "p90", "%CPU", "%CPU p90", "wall med", "read", "table", "rank", "admit", "ranked", "parks", "walks"
        );
        for config in &configs {
            config.report();
            summary.push((format!("{domains} × {}", tasks / domains as usize), config.name, config.median()));
        }
        println!();
    }
    println!("summary: median host CPU per period (domains × tasks per domain)");
    for (shape, name, median) in summary {
        println!("  {shape:<10} {name:<48} {:>8.1} µs {:>7.3}%", us(median), percent(median));
    }
    Ok(())
}

/// One synthetic domain: its image and name.
struct Guest {
    image: SyntheticGuest,
    name: String,
    tasks: usize,
}

impl Guest {
    fn build(profile: &Profile, processes: usize, seed: u64) -> Result<Self, Error> {
        let image = synthetic::build(profile, &GuestSpec::typical(processes, VCPUS, seed))?;
        let snap = image.reader(profile)?.read(&image.memory);
        if !snap.problems.is_empty() {
            return Err(format!("synthetic guest {seed}: {:?}", snap.problems).into());
        }
        Ok(Self { image, name: format!("guest{seed}"), tasks: snap.tasks.len() })
    }
}

/// The CPU time of one period's stages.
#[derive(Clone, Copy, Default)]
struct Sample {
    read: Duration,
    table: Duration,
    rank: Duration,
    admit: Duration,
    wall: Duration,
    ranked: usize,
    parks: usize,
}

impl Sample {
    fn total(&self) -> Duration {
        self.read + self.table + self.rank + self.admit
    }
}

/// A configuration measured: a ranker (none: the reads alone), its readers (one per guest), its
/// previous table, its samples.
struct Config {
    name: &'static str,
    ranker: Option<Box<dyn Ranker>>,
    readers: Vec<SnapshotReader>,
    table: TaskTable,
    periods: usize,
    samples: Vec<Sample>,
}

impl Config {
    fn new(name: &'static str, ranker: Option<Box<dyn Ranker>>, profile: &Profile, guests: &[Guest], rewalk: Duration) -> Result<Self, Error> {
        let readers = guests
            .iter()
            .map(|g| {
                let mut reader = g.image.reader(profile)?;
                reader.set_rewalk_interval(rewalk);
                Ok(reader)
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self { name, ranker, readers, table: TaskTable::default(), periods: 0, samples: Vec::new() })
    }

    /// One period, as the loop runs it.
    fn period(&mut self, profile: &Profile, guests: &[Guest]) -> Result<Sample, Error> {
        let wall = Instant::now();
        let t0 = cpu_now();
        let snaps: Vec<DomainSnapshot> = guests
            .iter()
            .zip(&mut self.readers)
            .map(|(g, reader)| {
                let started = Instant::now();
                let guest = reader.read(&g.image.memory);
                DomainSnapshot { guest, pause: Duration::ZERO, read: started.elapsed(), held_by_others: false }
            })
            .collect();
        self.periods += 1;
        let t1 = cpu_now();
        let Some(ranker) = self.ranker.as_mut() else {
            black_box(snaps);
            return Ok(Sample { read: t1 - t0, wall: wall.elapsed(), ..Sample::default() });
        };
        let pass: Vec<(DomainFacts<'_>, &DomainSnapshot)> = guests
            .iter()
            .zip(&snaps)
            .zip(0u32..)
            .map(|((g, snap), id)| (DomainFacts { id: DomainId(id), name: &g.name, release: &profile.release, vcpus: VCPUS, profile }, snap))
            .collect();
        let elapsed = (self.periods > 1).then_some(PERIOD);
        self.table.rebuild_from(&pass, elapsed);
        let table = &self.table;
        let t2 = cpu_now();
        let parked = HashSet::new();
        let ranking = ranker.rank(table, &parked, PERIOD, HOST_CPUS).map_err(|e| format!("{}: {e}", self.name))?;
        let t3 = cpu_now();
        let plan = admit(table, &ranking, &parked, HOST_CPUS);
        let t4 = cpu_now();
        let wall = wall.elapsed();
        let sample = Sample { read: t1 - t0, table: t2 - t1, rank: t3 - t2, admit: t4 - t3, wall, ranked: ranking.len(), parks: plan.park.len() };
        black_box(plan);
        Ok(sample)
    }

    /// The share of the reads that walked the task list, percent.
    fn walk_percent(&self) -> f64 {
        let walks: u64 = self.readers.iter().map(SnapshotReader::walks).sum();
        walks as f64 * 100.0 / (self.periods * self.readers.len()).max(1) as f64
    }

    /// The median CPU time of a whole period.
    fn median(&self) -> Duration {
        quantile(self.samples.iter().map(Sample::total).collect(), 50)
    }

    fn report(&self) {
        let pick = |f: fn(&Sample) -> Duration, percent: usize| quantile(self.samples.iter().map(f).collect(), percent);
        let median = pick(Sample::total, 50);
        let p90 = pick(Sample::total, 90);
        let last = self.samples.last().copied().unwrap_or_default();
        let dash = |d: Duration| if self.ranker.is_some() { format!("{:.1}", us(d)) } else { "-".into() };
        println!(
            "  {:<48} {:>6.1} µs {:>6.1} µs {:>7.3}% {:>7.3}% {:>6.1} µs │ {:>8.1} {:>8} {:>8} {:>8} │ {:>6} {:>6} {:>5.0}%",
            self.name,
            us(median),
            us(p90),
            percent(median),
            percent(p90),
            us(pick(|s| s.wall, 50)),
            us(pick(|s| s.read, 50)),
            dash(pick(|s| s.table, 50)),
            dash(pick(|s| s.rank, 50)),
            dash(pick(|s| s.admit, 50)),
            last.ranked,
            last.parks,
            self.walk_percent(),
        );
    }
}

/// The baseline ranker: every task in one class, in table order.
struct OneClass;

impl Ranker for OneClass {
    fn rank(&mut self, table: &TaskTable, _: &HashSet<TaskKey>, _: Duration, _: u32) -> Result<Vec<Ranked>, PolicyError> {
        Ok(table.tasks.iter().zip(0u64..).map(|(t, order)| Ranked { key: t.key, class: 0, order }).collect())
    }

    fn reload(&mut self) -> Result<(), PolicyError> {
        Ok(())
    }
}

/// Builds the bundled plugins into this benchmark's target directory and profile; returns that
/// profile directory (`target/release` under `cargo bench`).
fn build_plugins() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let profile = exe.parent().and_then(Path::parent).ok_or("benchmark binary not in target/<profile>/deps")?.to_path_buf();
    let target = profile.parent().ok_or("no target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "priority", "-p", "fairshare"]).env("CARGO_TARGET_DIR", target).current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = build.output()?;
    if !out.status.success() {
        return Err(format!("cargo build of the plugins failed:\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(profile)
}

/// The calling thread's CPU time.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration; the clock id is a
    // constant every Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// What one [`cpu_now`] costs, in CPU time.
fn clock_cost() -> Duration {
    const READS: u32 = 10_000;
    let started = cpu_now();
    for _ in 0..READS {
        black_box(cpu_now());
    }
    (cpu_now() - started) / READS
}

/// The `percent`th percentile of `samples`.
fn quantile(mut samples: Vec<Duration>, percent: usize) -> Duration {
    samples.sort();
    let i = (samples.len() * percent / 100).min(samples.len().saturating_sub(1));
    samples.get(i).copied().unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

fn percent(d: Duration) -> f64 {
    d.as_secs_f64() * 100.0 / PERIOD.as_secs_f64()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A comma-separated list of numbers from the environment (`default` when unset or unparsable).
fn env_list(name: &str, default: &[u32]) -> Vec<u32> {
    let parsed = std::env::var(name).ok().and_then(|v| v.split(',').map(|n| n.trim().parse().ok().filter(|&n| n > 0)).collect::<Option<Vec<u32>>>());
    parsed.filter(|l| !l.is_empty()).unwrap_or_else(|| default.to_vec())
}
