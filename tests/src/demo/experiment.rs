//! Playing one scenario on booted lab guests, once per variant (without xsched, the operator's
//! weights-and-nice baselines, with xsched): the phases are played by steering the guests'
//! workloads, and the guests' own accounting is read at the start (after a settling time) and
//! the end of every phase. Every run leaves a trace: xsched's own, or an observer's.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::observe::Observer;
use super::scenario::Scenario;
use super::variant::Variant;
use crate::{guest, Guest, Steer, Workload};

/// How long xsched may take to start its loop, and to stop after SIGTERM.
const XSCHED_START: Duration = Duration::from_secs(30);

/// One guest's accounting at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct GuestReading {
    /// The guest's uptime, seconds (its own clock).
    pub uptime_s: f64,
    /// CPU time its kernel accounted to each scenario task, by name, ns.
    pub run_ns: BTreeMap<String, u64>,
    /// CPU time the host accounted to the guest's QEMU process, seconds.
    pub host_cpu_s: f64,
}

/// Every guest's accounting at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Reading {
    /// Host wall-clock time, seconds since the Unix epoch.
    pub wall: f64,
    /// By guest name.
    pub guests: BTreeMap<String, GuestReading>,
    /// CPU time the host accounted to xsched (its loop and its supervisor), seconds; with
    /// xsched only.
    pub xsched_cpu_s: Option<f64>,
}

/// What happened in one phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRecord {
    /// The phase's label.
    pub label: String,
    /// When steering the guests into the phase began (wall clock, s).
    pub steer_begun: f64,
    /// When the last guest had been steered into the phase (wall clock, s).
    pub steered_at: f64,
    /// The reading after the settling time.
    pub start: Reading,
    /// The reading at the phase's end.
    pub end: Reading,
}

/// One run of a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// The variant's name ([`Variant::name`]).
    pub variant: String,
    /// The phases.
    pub phases: Vec<PhaseRecord>,
    /// The run's trace: xsched's (with xsched), else the observer's.
    pub trace: PathBuf,
}

/// How to start xsched.
#[derive(Clone, Debug)]
pub struct Xsched {
    /// The binary.
    pub binary: PathBuf,
    /// The scheduling period, ms.
    pub period_ms: u64,
}

/// The scenario's workloads, started in the guests: task name → (guest, pid).
#[derive(Debug)]
pub struct Started(BTreeMap<String, (&'static str, u32)>);

impl Started {
    /// The pid of the task called `comm`.
    pub fn pid_of(&self, comm: &str) -> Option<u32> {
        self.0.get(comm).map(|(_, pid)| *pid)
    }
}

/// Starts the scenario's workloads: foreground ones idle, the background one spinning.
pub fn start_workloads(scenario: &Scenario, guests: &[Guest]) -> Result<Started> {
    let mut started = BTreeMap::new();
    for task in scenario.tasks() {
        let workload = if task.comm == scenario.background.comm { Workload::cpu(task.comm) } else { Workload::steered(task.comm) };
        let pids = guest(guests, task.guest).start_workload(&workload)?;
        started.insert(task.comm.to_owned(), (task.guest, pids[0]));
    }
    Ok(Started(started))
}

/// Kills the scenario's workloads.
pub fn stop_workloads(started: &Started, guests: &[Guest]) -> Result<()> {
    for (guest_name, pid) in started.0.values() {
        guest(guests, guest_name).exec_ok(&format!("kill -9 {pid}"))?;
    }
    Ok(())
}

/// Plays the scenario's phases once as `variant` (set up by the caller), with xsched running for
/// [`Variant::Xsched`] and an observer otherwise; the trace and xsched's output go into `out`.
pub fn run(scenario: &Scenario, guests: &[Guest], started: &Started, variant: Variant, xsched: &Xsched, out: &Path) -> Result<RunRecord> {
    check_sharing(scenario, guests)?;
    steer_all(scenario, guests, &[])?;
    let trace = out.join(format!("{}-{variant}.trace.jsonl", scenario.name));
    let mut loop_process = None;
    let mut observer = None;
    if variant == Variant::Xsched {
        loop_process = Some(start_xsched(xsched, scenario, guests, out, &trace)?);
    } else {
        observer = Some(Observer::start(scenario, guests, Duration::from_millis(xsched.period_ms), &trace)?);
    }
    let xsched_pids: Vec<u32> = loop_process.as_ref().map(|(child, supervisor)| vec![child.id(), *supervisor]).unwrap_or_default();
    let settle = (scenario.phase_length / 5).min(Duration::from_millis(500));
    std::thread::sleep(settle);
    let result = play(scenario, guests, started, &xsched_pids, settle);
    let stopped = loop_process.as_mut().map(|(child, _)| stop_xsched(child)).transpose();
    let observed = observer.map(Observer::stop).transpose();
    steer_all(scenario, guests, &[])?;
    let phases = result?;
    stopped?;
    observed?;
    Ok(RunRecord { variant: variant.name(), phases, trace })
}

/// Checks that the scenario's VMs contend for one host CPU, so that host weights can matter:
/// every thread of every QEMU may run on host CPU 0 only (`Cpus_allowed_list` in its status).
fn check_sharing(scenario: &Scenario, guests: &[Guest]) -> Result<()> {
    for name in scenario.guests() {
        let tasks = PathBuf::from(format!("/proc/{}/task", guest(guests, name).qemu_pid()));
        for thread in std::fs::read_dir(&tasks).with_context(|| format!("listing {}", tasks.display()))?.flatten() {
            let Ok(status) = std::fs::read_to_string(thread.path().join("status")) else { continue };
            let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(str::trim);
            if allowed != Some("0") {
                bail!("guest {name}: QEMU thread {} may run on host CPUs {allowed:?}, not only CPU 0: the VMs would not share one CPU", thread.file_name().to_string_lossy());
            }
        }
    }
    Ok(())
}

fn play(scenario: &Scenario, guests: &[Guest], started: &Started, xsched_pids: &[u32], settle: Duration) -> Result<Vec<PhaseRecord>> {
    let mut phases = Vec::with_capacity(scenario.phases.len());
    for phase in &scenario.phases {
        let begun = Instant::now();
        let steer_begun = wall_now();
        steer_all(scenario, guests, &phase.busy)?;
        let steered_at = wall_now();
        std::thread::sleep(settle.saturating_sub(begun.elapsed()));
        let start = read(guests, started, xsched_pids)?;
        std::thread::sleep(scenario.phase_length.saturating_sub(begun.elapsed()));
        let end = read(guests, started, xsched_pids)?;
        log::info!("{}: phase {:?} done", scenario.name, phase.label);
        phases.push(PhaseRecord { label: phase.label.clone(), steer_begun, steered_at, start, end });
    }
    Ok(phases)
}

/// Steers every foreground task: busy if named in `busy`, idle otherwise; one command per guest,
/// all guests at once.
fn steer_all(scenario: &Scenario, guests: &[Guest], busy: &[&str]) -> Result<()> {
    std::thread::scope(|scope| {
        let steering: Vec<_> = scenario
            .guests()
            .into_iter()
            .map(|name| {
                let settings: Vec<(&str, Steer)> = scenario
                    .foreground
                    .iter()
                    .filter(|t| t.guest == name)
                    .map(|t| (t.comm, if busy.contains(&t.comm) { Steer::Busy } else { Steer::Idle }))
                    .collect();
                scope.spawn(move || if settings.is_empty() { Ok(()) } else { guest(guests, name).steer(&settings) })
            })
            .collect();
        steering.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a steering thread panicked"))?.map_err(anyhow::Error::from))
    })
}

fn read(guests: &[Guest], started: &Started, xsched_pids: &[u32]) -> Result<Reading> {
    let mut readings = BTreeMap::new();
    for g in guests {
        let mine: Vec<(&String, u32)> = started.0.iter().filter(|(_, (name, _))| *name == g.name()).map(|(comm, (_, pid))| (comm, *pid)).collect();
        let pids: Vec<u32> = mine.iter().map(|(_, pid)| *pid).collect();
        let times = g.cpu_times(&pids)?;
        let run_ns = mine.iter().filter_map(|(comm, pid)| Some(((*comm).clone(), *times.run_ns.get(pid)?))).collect();
        readings.insert(
            g.name().to_owned(),
            GuestReading { uptime_s: times.uptime.as_secs_f64(), run_ns, host_cpu_s: host_cpu_seconds(g.qemu_pid())? },
        );
    }
    let xsched_cpu_s = if xsched_pids.is_empty() { None } else { Some(xsched_pids.iter().map(|&pid| host_cpu_seconds(pid)).sum::<Result<f64>>()?) };
    Ok(Reading { wall: wall_now(), guests: readings, xsched_cpu_s })
}

/// User + system CPU time the host accounted to process `pid` (all its threads), seconds.
fn host_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the comm.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).with_context(|| format!("{path}: no field {}", i + 3));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok((ticks(11)? + ticks(12)?) as f64 / hz as f64)
}

fn wall_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Starts `xsched run` for the scenario and waits until its loop runs; returns it and its
/// supervisor's pid.
fn start_xsched(x: &Xsched, scenario: &Scenario, guests: &[Guest], out: &Path, trace: &Path) -> Result<(Child, u32)> {
    // A journal left by an earlier demo describes guests that are gone.
    let journal = out.join(format!("{}.journal.jsonl", scenario.name));
    match std::fs::remove_file(&journal) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", journal.display())),
        _ => {}
    }
    let config = out.join(format!("{}.toml", scenario.name));
    std::fs::write(&config, scenario.config).with_context(|| format!("writing {}", config.display()))?;
    let log_path = out.join(format!("{}.xsched.log", scenario.name));
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new(&x.binary);
    command
        .arg("run")
        .args(["--plugin", scenario.plugin, "--config"])
        .arg(&config)
        .args(["--cpus", &scenario.host_cpus.to_string(), "--period", &x.period_ms.to_string(), "--trace"])
        .arg(trace)
        .arg("--journal")
        .arg(&journal);
    for name in scenario.guests() {
        let g = guest(guests, name);
        command.arg("--domain").arg(format!("{name}=qemu:{},qmp={}", g.ram_file().display(), g.qmp_socket().display()));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", x.binary.display()))?;
    let begun = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("xsched: policy")) {
            let supervisor = line.rsplit_once("supervised by pid ").and_then(|(_, pid)| pid.trim().parse().ok()).with_context(|| format!("no supervisor pid in {line:?}"))?;
            return Ok((child, supervisor));
        }
        if let Some(status) = child.try_wait()? {
            bail!("xsched exited ({status}) before its loop ran:\n{text}");
        }
        if begun.elapsed() > XSCHED_START {
            let _ = child.kill();
            bail!("xsched did not start its loop in {XSCHED_START:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops xsched with SIGTERM (it releases every parked task) and checks that it exited cleanly.
fn stop_xsched(child: &mut Child) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id()).context("xsched's pid")?;
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let begun = Instant::now();
    while begun.elapsed() < XSCHED_START {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("xsched exited with {status}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    bail!("xsched did not stop within {XSCHED_START:?} of SIGTERM")
}
