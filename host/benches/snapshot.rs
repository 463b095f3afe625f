//! Snapshot cost: nanoseconds per task to read a guest's task table, and the pause per snapshot,
//! each beside baselines measured in the same run.
//!
//! `cargo bench -p xsched --bench snapshot` always measures (a), a synthetic guest in memory.
//! With a lab guest (`scripts/bench-snapshot.sh` boots one with 1000 sleepers and sets these):
//!
//! - `XSCHED_BENCH_RAM` (+ `XSCHED_BENCH_QMP`, `XSCHED_BENCH_MACHINE`): (b) the guest's RAM file
//!   through the QEMU backend, and the QMP stop → read → cont pause;
//! - `XSCHED_BENCH_CORE`: (c) a core dump of that guest (written first with QMP
//!   `dump-guest-memory` when the file does not exist and the QMP socket is given).
//!
//! Baselines: a naive reader that copies every `task_struct` whole; one that reads field by
//! field; xsched's reader with every address translated by a page-table walk (no direct-map fast
//! path); one copy of all guest RAM; and for the pause, QMP stop → cont with no read (beside the
//! pause with a read, and with a read after an unpaused warm-up read). Reads are
//! timed warm (back to back) and cold (after streaming 64 MiB through the caches, as a pause
//! after the host did other work sees them).
//! xsched's reads walk the task list every time (a reader's walk interval set to zero), except
//! the rows "probing the known tasks": a reader that walked once re-reads the tasks it knows (see
//! `xsched::linux::incremental`), as the scheduling loop's reads do while no task forks or exits.
//! `XSCHED_BENCH_ROUNDS` sets the number of timed rounds (default 30). For profiling,
//! `XSCHED_BENCH_LOOP=N` only repeats xsched's read of (b), paused, N times (nothing else).

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xsched::linux::layout::{Field, StructBuf};
use xsched::linux::snapshot::SnapshotReader;
use xsched::linux::synthetic::{self, GuestSpec};
use xsched::linux::tasks::container_of;
use xsched::linux::virt::KernelMemory;
use xsched::linux::walk::{list_for_each, ListHeadLayout};
use xsched::linux::{Kernel, LinuxError};
use xsched::memory::core::CoreMemory;
use xsched::memory::qemu::{MachineType, QemuMemory};
use xsched::memory::qmp::QmpClient;
use xsched::memory::{Gpa, GuestMemory, Gva, PAGE_SIZE};
use xsched::profile::Profile;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing of ours.
    let rounds = std::env::var("XSCHED_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(30usize).max(3);
    if let (Some(reads), Some(ram)) = (std::env::var_os("XSCHED_BENCH_LOOP"), std::env::var_os("XSCHED_BENCH_RAM")) {
        return read_loop(reads.to_string_lossy().parse()?, Path::new(&ram), std::env::var_os("XSCHED_BENCH_QMP").map(PathBuf::from));
    }
    let profile = synthetic::lab_profile()?;
    println!("snapshot benchmark: median (min) of {rounds} rounds; ns/task = one snapshot's time / tasks read\n");
    synthetic_guest(&profile, rounds)?;
    let machine: MachineType = std::env::var("XSCHED_BENCH_MACHINE").unwrap_or_else(|_| "q35".into()).parse()?;
    let qmp = std::env::var_os("XSCHED_BENCH_QMP").map(PathBuf::from);
    let core = std::env::var_os("XSCHED_BENCH_CORE").map(PathBuf::from);
    if let (Some(core), Some(qmp)) = (&core, &qmp) {
        if !core.exists() {
            let started = Instant::now();
            QmpClient::connect(qmp)?.dump_guest_memory(core)?;
            println!("(wrote core dump {} in {:.2?})\n", core.display(), started.elapsed());
        }
    }
    match std::env::var_os("XSCHED_BENCH_RAM") {
        Some(ram) => {
            let mem = QemuMemory::open(Path::new(&ram), qmp.as_deref(), machine)?;
            live_guest(Box::new(mem), qmp.is_some(), rounds)?;
        }
        None => println!("(b) lab guest RAM: skipped (set XSCHED_BENCH_RAM, or run scripts/bench-snapshot.sh)\n"),
    }
    match core {
        Some(core) => {
            let kernel = attach(Box::new(CoreMemory::open(&core)?))?;
            println!("(c) core dump {}", core.display());
            per_task(&kernel, rounds)?;
        }
        None => println!("(c) core dump: skipped (set XSCHED_BENCH_CORE, or run scripts/bench-snapshot.sh)"),
    }
    Ok(())
}

/// Only xsched's read of the guest at `ram`, `reads` times (paused when it can be), for profiling.
fn read_loop(reads: u32, ram: &Path, qmp: Option<PathBuf>) -> Result<(), Error> {
    let mut kernel = attach(Box::new(QemuMemory::open(ram, qmp.as_deref(), MachineType::Q35)?))?;
    let mut reader = walking(SnapshotReader::for_kernel(&kernel)?);
    if qmp.is_some() {
        kernel.memory_mut().pause()?;
    }
    let started = Instant::now();
    let mut tasks = 0;
    for _ in 0..reads {
        tasks = black_box(reader.read(&kernel)).tasks.len();
    }
    let took = started.elapsed();
    if qmp.is_some() {
        kernel.memory_mut().resume()?;
    }
    println!("{reads} reads of {tasks} tasks in {took:.2?}: {}", ns(took / reads.max(1), tasks));
    Ok(())
}

/// (a) A synthetic guest of 1000 processes on 2 CPUs.
fn synthetic_guest(profile: &Profile, rounds: usize) -> Result<(), Error> {
    let mut g = synthetic::build(profile, &GuestSpec::typical(1000, 2, 1))?;
    let image = g.memory.memory_mut().bytes().to_vec();
    let mut reader = walking(g.reader(profile)?);
    let tasks = reader.read(&g.memory).tasks.len();
    println!("(a) synthetic image: {tasks} tasks, 2 CPUs, {} MiB", image.len() >> 20);
    let naive = Naive::new(profile, g.init_task)?;
    let mut probing = g.reader(profile)?;
    let rows = [
        ("xsched read", time(rounds, || reader.read(&g.memory).tasks.len())),
        ("xsched read, probing the known tasks", time(rounds, || probing.read(&g.memory).tasks.len())),
        ("baseline: copy each task_struct whole", time(rounds, || naive.read(&g.memory, Copy::Whole))),
        ("baseline: field-by-field reads", time(rounds, || naive.read(&g.memory, Copy::Fields))),
        ("xsched read, cold caches", time_cold(rounds, || reader.read(&g.memory).tasks.len())),
        ("baseline: copy each task_struct whole, cold", time_cold(rounds, || naive.read(&g.memory, Copy::Whole))),
    ];
    report(&rows, tasks);
    let copy = time(rounds, || image.to_vec());
    println!("  {:<44} {:>10}  ({} per task)\n", "baseline: one copy of the whole image", fmt(copy.0), ns(copy.0, tasks));
    Ok(())
}

/// (b) A live lab guest: reads while paused, then the pause per snapshot.
fn live_guest(mem: Box<dyn GuestMemory>, can_pause: bool, rounds: usize) -> Result<(), Error> {
    let describe = mem.describe();
    let mut kernel = attach(mem)?;
    println!("(b) lab guest, {describe}");
    if can_pause {
        kernel.memory_mut().pause()?;
    }
    let measured = per_task(&kernel, rounds);
    if can_pause {
        kernel.memory_mut().resume()?;
    }
    measured?;
    if !can_pause {
        println!("  pause per snapshot: skipped (no XSCHED_BENCH_QMP)\n");
        return Ok(());
    }
    let mut reader = walking(SnapshotReader::for_kernel(&kernel)?);
    let mut with_read = Vec::new();
    let mut warmed = Vec::new();
    let mut bare = Vec::new();
    let mut tasks = 0;
    // The three kinds alternate, so that all see the same guest activity.
    for _ in 0..rounds {
        for (kind, samples) in [(Pause::Read, &mut with_read), (Pause::WarmedRead, &mut warmed), (Pause::Bare, &mut bare)] {
            if kind == Pause::WarmedRead {
                // A read of the running guest, results dropped: it brings what the paused read
                // needs into the host's caches and TLB.
                black_box(reader.read(&kernel));
            }
            let started = Instant::now();
            kernel.memory_mut().pause()?;
            let paused = Instant::now();
            if kind != Pause::Bare {
                let snap = reader.read(&kernel);
                tasks = snap.tasks.len();
                if !snap.problems.is_empty() {
                    println!("  (partial snapshot: {:?})", snap.problems);
                }
            }
            kernel.memory_mut().resume()?;
            samples.push((started.elapsed(), paused.elapsed()));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!("  pause per snapshot ({tasks} tasks): QMP stop sent → cont answered; [stopped → running again]");
    for (name, samples) in [
        ("QMP stop → read → cont", &with_read),
        ("same, after an unpaused warm-up read", &warmed),
        ("baseline: QMP stop → cont, no read", &bare),
    ] {
        let mut total: Vec<Duration> = samples.iter().map(|s| s.0).collect();
        let mut stopped: Vec<Duration> = samples.iter().map(|s| s.1).collect();
        total.sort();
        stopped.sort();
        println!(
            "  {name:<44} median {:>9}  p90 {:>9}  max {:>9}   [median {:>9}]",
            fmt(total[total.len() / 2]),
            fmt(total[total.len() * 9 / 10]),
            fmt(total[total.len() - 1]),
            fmt(stopped[stopped.len() / 2])
        );
    }
    println!();
    Ok(())
}

/// `reader`, set to walk the task list at every read.
fn walking(mut reader: SnapshotReader) -> SnapshotReader {
    reader.set_rewalk_interval(Duration::ZERO);
    reader
}

/// Finds the kernel among the committed profiles.
fn attach(mem: Box<dyn GuestMemory>) -> Result<Kernel, Error> {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels");
    let profiles = Profile::load_dir(&kernels)?.into_iter().map(|(_, p)| p).collect();
    Ok(Kernel::attach(mem, profiles)?)
}

/// Per-task costs on a located kernel (a paused guest or a dump), with the baselines.
fn per_task(kernel: &Kernel, rounds: usize) -> Result<(), Error> {
    let mut reader = walking(SnapshotReader::for_kernel(kernel)?);
    let snap = reader.read(kernel);
    let tasks = snap.tasks.len();
    println!("  {tasks} tasks, {} CPUs{}", snap.runqueues.len(), if snap.problems.is_empty() { String::new() } else { format!(", problems: {:?}", snap.problems) });
    let naive = Naive::new(kernel.profile(), kernel.symbol("init_task")?)?;
    let walked = PageWalked(kernel);
    let mut probing = SnapshotReader::for_kernel(kernel)?;
    let rows = [
        ("xsched read", time(rounds, || reader.read(kernel).tasks.len())),
        ("xsched read, probing the known tasks", time(rounds, || probing.read(kernel).tasks.len())),
        ("baseline: copy each task_struct whole", time(rounds, || naive.read(kernel, Copy::Whole))),
        ("baseline: field-by-field reads", time(rounds, || naive.read(kernel, Copy::Fields))),
        ("baseline: xsched read, page walk per access", time(rounds, || reader.read(&walked).tasks.len())),
        ("xsched read, cold caches", time_cold(rounds, || reader.read(kernel).tasks.len())),
        ("baseline: copy each task_struct whole, cold", time_cold(rounds, || naive.read(kernel, Copy::Whole))),
    ];
    report(&rows, tasks);
    let mem = kernel.memory();
    let copy = time(3, || {
        let mut buf = vec![0u8; 8 << 20];
        for r in mem.ranges() {
            let mut at = r.start.raw();
            while at < r.end() {
                let n = usize::try_from((r.end() - at).min(buf.len() as u64)).unwrap_or(buf.len());
                mem.read_phys(Gpa(at), &mut buf[..n]).expect("RAM range");
                at += n as u64;
            }
        }
        buf[0]
    });
    println!("  {:<44} {:>10}  ({} per task)\n", format!("baseline: one copy of all RAM ({} MiB)", mem.ram_size() >> 20), fmt(copy.0), ns(copy.0, tasks));
    Ok(())
}

/// Runs `f` a few times to warm up, then `rounds` times; returns the median and minimum.
fn time<R>(rounds: usize, mut f: impl FnMut() -> R) -> (Duration, Duration) {
    for _ in 0..rounds.min(3) {
        black_box(f());
    }
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    samples.sort();
    (samples[samples.len() / 2], samples[0])
}

/// Like [`time`], but each timed run starts with caches full of other data.
fn time_cold<R>(rounds: usize, mut f: impl FnMut() -> R) -> (Duration, Duration) {
    let mut other = vec![0u8; 64 << 20];
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|round| {
            for line in other.chunks_mut(64) {
                line[0] = line[0].wrapping_add(u8::try_from(round % 251).unwrap_or(1));
            }
            black_box(&other);
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    samples.sort();
    (samples[samples.len() / 2], samples[0])
}

fn report(rows: &[(&str, (Duration, Duration))], tasks: usize) {
    let ours = rows[0].1 .0;
    for (name, (median, min)) in rows {
        let ratio = median.as_secs_f64() / ours.as_secs_f64().max(1e-12);
        println!("  {name:<44} {:>10} per task  {:>10} per snapshot (min {:>9})  {ratio:>5.1}x", ns(*median, tasks), fmt(*median), fmt(*min));
    }
}

fn ns(d: Duration, tasks: usize) -> String {
    format!("{:.0} ns", d.as_nanos() as f64 / tasks.max(1) as f64)
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_nanos() as f64 / 1e3)
    } else {
        format!("{:.2} ms", d.as_nanos() as f64 / 1e6)
    }
}

/// xsched's reader without the direct-map fast path: every access translated by a walk of the
/// guest's page tables.
struct PageWalked<'a>(&'a Kernel);

impl KernelMemory for PageWalked<'_> {
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError> {
        let (tables, mem) = (&self.0.location().page_tables, self.0.memory());
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.checked_add(done as u64).ok_or_else(|| LinuxError::Walk("wraps".into()))?;
            let n = usize::try_from(PAGE_SIZE - at.page_offset()).unwrap_or(usize::MAX).min(buf.len() - done);
            mem.read_phys(tables.translate(mem, at)?, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// What happens in a measured pause.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// A snapshot read.
    Read,
    /// A snapshot read, after one of the running guest.
    WarmedRead,
    /// Nothing: stop, then cont.
    Bare,
}

/// How a naive reader gets a task's fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// One read of the whole `task_struct` into a fresh buffer.
    Whole,
    /// One read per field.
    Fields,
}

/// A straightforward reader, as a first script would be: walk the same lists, but read each task
/// by copying its `task_struct` whole or field by field, and follow `cred` and the cgroup chain
/// for every task (no cache).
struct Naive {
    init_task: Gva,
    task_size: u64,
    tasks: Field,
    thread_node: Field,
    signal: Field,
    thread_head: Field,
    comm: Field,
    scalars: Vec<Field>,
    cred: Field,
    uid: Field,
    cgroups: Field,
    dfl_cgrp: Field,
    kn: Field,
    kn_name: Field,
    kn_parent: Field,
    list: ListHeadLayout,
}

impl Naive {
    fn new(p: &Profile, init_task: Gva) -> Result<Self, Error> {
        let t = |f: &str| Field::of(p, "task_struct", f);
        let se = t("se")?.offset;
        let se_field = |f: &str| -> Result<Field, LinuxError> { Field::of(p, "sched_entity", f).map(|x| Field { offset: se + x.offset, ..x }) };
        let mut scalars = Vec::new();
        for f in [
            "pid", "tgid", "__state", "exit_state", "flags", "thread_info.flags", "thread_info.cpu", "on_cpu", "on_rq", "prio", "static_prio",
            "rt_priority", "policy", "start_time", "sched_task_group", "pi_lock",
        ] {
            scalars.push(t(f)?);
        }
        for f in ["load.weight", "on_rq", "sum_exec_runtime", "vruntime", "cfs_rq"] {
            scalars.push(se_field(f)?);
        }
        Ok(Self {
            init_task,
            task_size: p.struct_layout("task_struct")?.size,
            tasks: t("tasks")?,
            thread_node: t("thread_node")?,
            signal: t("signal")?,
            thread_head: Field::of(p, "signal_struct", "thread_head")?,
            comm: t("comm")?,
            scalars,
            cred: t("cred")?,
            uid: Field::of(p, "cred", "uid")?,
            cgroups: t("cgroups")?,
            dfl_cgrp: Field::of(p, "css_set", "dfl_cgrp")?,
            kn: Field::of(p, "cgroup", "kn")?,
            kn_name: Field::of(p, "kernfs_node", "name")?,
            kn_parent: Field::of(p, "kernfs_node", "parent")?,
            list: ListHeadLayout::from_profile(p)?,
        })
    }

    /// Reads every task; returns how many (and folds what it read into a checksum kept alive).
    fn read<K: KernelMemory>(&self, mem: &K, how: Copy) -> usize {
        let mut count = 0;
        let mut seen = HashSet::new();
        let Ok(head) = self.tasks.at(self.init_task) else { return 0 };
        for node in list_for_each(mem, self.list, head, 1 << 22) {
            let Ok(leader) = node.and_then(|n| container_of(n, self.tasks)) else { break };
            let Ok(signal) = mem.read_u64(self.signal.at(leader).expect("va")) else { continue };
            let Ok(threads) = self.thread_head.at(Gva(signal)) else { continue };
            for thread in list_for_each(mem, self.list, threads, 1 << 22) {
                let Ok(task) = thread.and_then(|n| container_of(n, self.thread_node)) else { break };
                if seen.insert(task) {
                    let _ = black_box(self.task(mem, task, how));
                    count += 1;
                }
            }
        }
        count
    }

    fn task<K: KernelMemory>(&self, mem: &K, task: Gva, how: Copy) -> Result<(u64, String, u32, String), LinuxError> {
        let mut sum = 0u64;
        let comm = match how {
            Copy::Whole => {
                let buf = StructBuf::read(mem, task, self.task_size)?;
                for &f in &self.scalars {
                    sum = sum.wrapping_add(buf.uint(f)?);
                }
                buf.bytes(self.comm)?.to_vec()
            }
            Copy::Fields => {
                for &f in &self.scalars {
                    let mut b = [0u8; 8];
                    let n = usize::try_from(f.size.min(8)).unwrap_or(8);
                    mem.read_virt(f.at(task)?, &mut b[..n])?;
                    sum = sum.wrapping_add(u64::from_le_bytes(b));
                }
                let mut comm = vec![0u8; 16];
                mem.read_virt(self.comm.at(task)?, &mut comm)?;
                comm
            }
        };
        let comm = String::from_utf8_lossy(&comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())]).into_owned();
        let cred = mem.read_ptr(self.cred.at(task)?)?;
        let uid = mem.read_u32(self.uid.at(cred)?)?;
        let css_set = mem.read_ptr(self.cgroups.at(task)?)?;
        let cgroup = mem.read_ptr(self.dfl_cgrp.at(css_set)?)?;
        let mut kn = mem.read_ptr(self.kn.at(cgroup)?)?;
        let mut names = Vec::new();
        for _ in 0..64 {
            let parent = mem.read_ptr(self.kn_parent.at(kn)?)?;
            if parent == Gva(0) {
                break;
            }
            let name = mem.read_ptr(self.kn_name.at(kn)?)?;
            names.push(xsched::linux::cgroup::read_c_string(mem, name, 255)?);
            kn = parent;
        }
        names.reverse();
        Ok((sum, comm, uid, format!("/{}", names.join("/"))))
    }
}
