//! Parking and unparking tasks in live lab guests, measured by the guests' own `/proc`:
//! a parked CPU hog stops accumulating runtime and resumes after unpark; a parked sleeper stays
//! parked through its wakeups; SIGKILL ends a parked task; `release --all` restores what a
//! vanished xsched left parked; a guest whose kernel has no profile on the host is parked through
//! the profile built from its memory; a soak of park/unpark cycles leaves the guest sound.

mod common;

use std::time::{Duration, Instant};

use common::{domain_arg, kernels_dir, xsched, xsched_ok, xsched_with_env};
use xsched::actuate::actuator::Actuator;
use xsched::actuate::journal::{Journal, ParkRecord};
use xsched::actuate::park::{ParkOutcome, TaskIdentity, UnparkOutcome};
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::profile::Profile;
use xsched_lab::{check_core, shared_lab, Guest, GuestSpec, SchedCheckReport, Steer, Workload};

const WAIT: Duration = Duration::from_secs(60);

/// The tests park the same guest's tasks: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![
            GuestSpec::new("k1")
            .vcpus(2)
            .workload(Workload::cpu("hog").count(3))
            .workload(Workload::cpu("grp").in_cgroup("g1"))
            .workload(Workload::phases("napper", 50, 200))
            .workload(Workload::sleep("victim"))
            .workload(Workload::steered("sysc"))
            .view_interval_ms(1000)
            .view_kthreads(false),
            GuestSpec::new("k2").workload(Workload::steered("sysc")).workload(Workload::cpu("hog")).view_interval_ms(0),
        ]
    })
}

/// A journal private to one test.
fn journal(name: &str) -> String {
    let path = lab()[0].dir().join(format!("journal-{name}.jsonl"));
    path.to_str().expect("utf-8").to_string()
}

fn cli(args: &[&str], journal: &str) -> String {
    let kernels = kernels_dir();
    let mut all = args.to_vec();
    all.extend(["--journal", journal, "--kernels", kernels.to_str().expect("utf-8")]);
    xsched_ok(&all)
}

/// The guest's own runtime of `pid`, ns, from a view begun after this call.
fn runtime(g: &Guest, pid: u32) -> (u64, char) {
    let view = g.next_view(WAIT).expect("view");
    let p = view.get(pid).unwrap_or_else(|| panic!("pid {pid} not in the view"));
    (p.run_ns, p.state)
}

#[test]
fn a_parked_hog_stops_and_resumes() {
    let _serial = serial();
    let g = &lab()[0];
    let j = journal("hog");
    let dom = domain_arg(g);
    for pid in [g.pids_of("hog")[0], g.pids_of("grp")[0]] {
        let arg = pid.to_string();
        cli(&["park", "--domain", &dom, &arg], &j);
        let (a, state) = runtime(g, pid);
        let (b, _) = runtime(g, pid);
        assert_eq!(state, 'P', "pid {pid} shows as parked in the guest");
        let table: serde_json::Value = serde_json::from_str(&xsched_ok(&["ps", "--json", "--domain", &dom])).expect("ps --json");
        let row = table["tasks"].as_array().expect("tasks").iter().find(|t| t["key"]["pid"].as_u64() == Some(u64::from(pid))).expect("in ps");
        assert_eq!(row["parked"], true, "ps shows pid {pid} as parked by xsched");
        assert_eq!(a, b, "pid {pid} ran while parked");
        let other = g.pids_of("hog")[1];
        let (o1, _) = runtime(g, other);
        let (o2, _) = runtime(g, other);
        assert!(o2 > o1, "the other tasks keep running");
        cli(&["unpark", "--domain", &dom, &arg], &j);
        // From the first view after the unpark (within a second) to the next, it gets about the
        // share of the other hogs (equal weights; at least half of theirs, allowing for noise).
        let v1 = g.next_view(WAIT).expect("view");
        let v2 = g.next_view(WAIT).expect("view");
        let growth = |p: u32| v2.get(p).map_or(0, |e| e.run_ns) - v1.get(p).map_or(0, |e| e.run_ns);
        assert_eq!(v2.get(pid).map(|e| e.state), Some('R'));
        assert!(growth(pid) * 2 >= growth(other), "pid {pid} after unpark: {} ns vs {} ns of pid {other}", growth(pid), growth(other));
    }
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn a_guest_with_no_profile_on_the_host_is_parked_through_the_one_built_from_its_memory() {
    let _serial = serial();
    let g = &lab()[0];
    let j = journal("built-profile");
    let dom = domain_arg(g);
    let empty = g.dir().join("park-no-profiles");
    let cache = g.dir().join("park-profile-cache");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let _ = std::fs::remove_dir_all(&cache);
    let cli_without_profiles = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--journal", &j, "--kernels", empty.to_str().expect("utf-8")]);
        let out = xsched_with_env(&all, &[("XSCHED_PROFILE_CACHE", &cache)]);
        assert!(out.status.success(), "xsched {all:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let pid = g.pids_of("hog")[2];
    let arg = pid.to_string();
    let said = cli_without_profiles(&["park", "--domain", &dom, &arg]);
    assert!(said.contains("built one for Linux"), "park did not say it built a profile: {said}");
    let (a, state) = runtime(g, pid);
    let (b, _) = runtime(g, pid);
    assert_eq!((state, a), ('P', b), "pid {pid} parked through the built profile");
    cli_without_profiles(&["unpark", "--domain", &dom, &arg]);
    let (c, _) = runtime(g, pid);
    let (d, state) = runtime(g, pid);
    assert!(d > c && state == 'R', "pid {pid} runs again after the unpark ({state})");
    std::fs::remove_dir_all(&empty).expect("cleanup");
    std::fs::remove_dir_all(&cache).expect("cleanup");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn a_parked_sleeper_sleeps_through_its_wakeups() {
    let _serial = serial();
    let g = &lab()[0];
    let j = journal("sleeper");
    let dom = domain_arg(g);
    let pid = g.pids_of("napper")[0];
    // Park it while it sleeps (its busy phase is short); retry until it was caught sleeping.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = cli(&["park", "--domain", &dom, &pid.to_string()], &j);
        if out.contains("was sleeping") {
            break;
        }
        cli(&["unpark", "--domain", &dom, &pid.to_string()], &j);
        assert!(Instant::now() < deadline, "never caught napper asleep");
    }
    let (a, _) = runtime(g, pid);
    let (b, state) = runtime(g, pid);
    assert_eq!((a, state), (b, 'P'), "a parked sleeper ran when its timer fired");
    cli(&["unpark", "--domain", &dom, &pid.to_string()], &j);
    let (c, _) = runtime(g, pid);
    let (d, _) = runtime(g, pid);
    assert!(d > c, "napper runs again after unpark");
}

#[test]
fn sigkill_ends_a_parked_task_and_release_drops_it() {
    let _serial = serial();
    let g = &lab()[0];
    let j = journal("kill");
    let dom = domain_arg(g);
    let pid = g.pids_of("victim")[0];
    cli(&["park", "--domain", &dom, &pid.to_string()], &j);
    g.exec_ok(&format!("kill -9 {pid}")).expect("kill");
    let deadline = Instant::now() + WAIT;
    while g.next_view(WAIT).expect("view").get(pid).is_some() {
        assert!(Instant::now() < deadline, "the parked task did not die");
    }
    let out = cli(&["release", "--all"], &j);
    assert!(out.contains(&format!("pid {pid} is gone")), "{out}");
    assert_eq!(std::fs::metadata(&j).expect("journal").len(), 0, "the journal is empty");
}

#[test]
fn release_all_restores_what_a_dead_xsched_left_parked() {
    let _serial = serial();
    let g = &lab()[0];
    let j = journal("crash");
    let dom = domain_arg(g);
    let pids = [g.pids_of("hog")[2], g.pids_of("grp")[0]];
    for pid in pids {
        cli(&["park", "--domain", &dom, &pid.to_string()], &j);
    }
    // The xsched that parked them is gone; a new one finds them in the journal.
    let out = cli(&["release", "--all"], &j);
    for pid in pids {
        assert!(out.contains(&format!("unparked pid {pid}")), "{out}");
    }
    let before: Vec<u64> = pids.iter().map(|&p| runtime(g, p).0).collect();
    let after: Vec<u64> = pids.iter().map(|&p| runtime(g, p).0).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| a > b), "{before:?} -> {after:?}");
    let out = xsched(&["unpark", "--domain", &dom, &pids[0].to_string(), "--journal", &j]);
    assert!(!out.status.success(), "unparking a running task is refused");
}

/// A journal record from an earlier boot of the guest (its task address no longer even maps) is
/// dropped as gone, by `release` and by the loop's start alike, instead of ending either.
#[test]
fn a_stale_journal_record_is_dropped_as_gone() {
    let _serial = serial();
    let g = &lab()[0];
    let stale = ParkRecord { domain: domain_arg(g), pid: 4242, start_time: 7, addr: 0xffff_8b11_c2b2_e970, saved_state: 0 };
    for command in ["release", "run"] {
        let j = journal(&format!("stale-{command}"));
        Journal::open(std::path::Path::new(&j)).expect("journal").record_park(stale.clone()).expect("record");
        let out = if command == "release" {
            cli(&["release", "--all"], &j)
        } else {
            let plugin = common::plugin("priority");
            let config = common::workspace().join("plugins/priority/priority.toml");
            let (plugin, config) = (plugin.to_str().expect("utf-8"), config.to_str().expect("utf-8"));
            cli(&["run", "--plugin", plugin, "--config", config, "--domain", &domain_arg(g), "--periods", "3"], &j)
        };
        eprintln!("{command}: {out}");
        assert!(Journal::open(std::path::Path::new(&j)).expect("journal").parked().next().is_none(), "{command} left the record");
        if command == "release" {
            assert!(out.contains("pid 4242 is gone"), "{out}");
        }
    }
}

#[test]
fn soak_park_unpark_cycles() {
    let _serial = serial();
    let g = &lab()[0];
    let cycles: usize = std::env::var("XSCHED_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let profiles: Vec<Profile> = Profile::load_dir(&kernels_dir()).expect("profiles").into_iter().map(|(_, p)| p).collect();
    let spec: DomainSpec = domain_arg(g).parse().expect("spec");
    let mut domain = Domain::attach(DomainId(0), &spec, profiles).expect("attach");
    let actuator = Actuator::for_domain(&domain).expect("actuator");
    let snap = domain.snapshot().expect("snapshot");
    // `sysc` spins through system calls, so it is often parked inside the kernel.
    g.steer(&[("sysc", Steer::Busy)]).expect("steer");
    let targets: Vec<TaskIdentity> = ["hog", "grp", "napper", "sysc"]
        .iter()
        .flat_map(|name| g.pids_of(name))
        .map(|pid| {
            let t = snap.guest.tasks.iter().find(|t| t.record.pid == pid as i32).expect("task");
            TaskIdentity { addr: t.record.addr, pid: t.record.pid, start_time: t.record.start_time }
        })
        .collect();
    let (mut parks, mut unparks, mut retries, mut lost) = (0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    // Meanwhile the guest forks and execs (each exec unmaps a whole address space, a kernel
    // loop that yields only through cond_resched()): every command must come back.
    let soaking = std::sync::atomic::AtomicBool::new(true);
    let execs = std::thread::scope(|scope| {
        let execs = scope.spawn(|| {
            let mut n = 0usize;
            while soaking.load(std::sync::atomic::Ordering::Relaxed) {
                g.exec_ok("/bin/true").expect("a command during the soak");
                n += 1;
            }
            n
        });
        soak(&mut domain, &actuator, &targets, cycles, (&mut parks, &mut unparks, &mut retries, &mut lost));
        soaking.store(false, std::sync::atomic::Ordering::Relaxed);
        execs.join().expect("exec thread")
    });
    let elapsed = started.elapsed();
    eprintln!("soak: {parks} parks, {unparks} unparks, {lost} parks undone by the task itself, {retries} retries, {execs} commands in {elapsed:?}");
    assert!(execs > 0);
    assert!(lost * 10 < cycles, "{lost} of {cycles} parks undone");
    // Afterwards every workload is alive and running, and the guest's view agrees with xsched's.
    let rows = domain.snapshot().expect("snapshot");
    for t in &targets {
        let row = rows.guest.tasks.iter().find(|r| r.record.pid == t.pid).expect("alive");
        assert_ne!(row.state, 'P', "pid {} left parked", t.pid);
    }
    let before: Vec<u64> = targets.iter().map(|t| runtime(g, t.pid as u32).0).collect();
    let after: Vec<u64> = targets.iter().map(|t| runtime(g, t.pid as u32).0).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| a > b), "{before:?} -> {after:?}");
    g.steer(&[("sysc", Steer::Idle)]).expect("steer");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
    // The kernel's own incrementally kept runqueue state equals a recomputation from its trees,
    // read by an independent reader (drgn over a core dump, tests/lab/sched_check.py). QEMU
    // serves one QMP client at a time: xsched's lets go first.
    drop(domain);
    let report = independent_check(g);
    eprintln!(
        "soak: independent check of {}: {} CPUs, {} runqueues, {} violations ({:.1} s)",
        report.kernel,
        report.cpus_checked,
        report.cpus.iter().map(|c| c.cfs_rqs.len()).sum::<usize>(),
        report.violations.len(),
        report.elapsed_s
    );
    assert!(report.violations.is_empty(), "after the soak: {:#?}", report.violations);
}

/// Dumps `g` and runs the independent scheduler-state check on the dump, until a dump has every
/// CPU checked (a CPU whose runqueue lock is held in the dump is skipped by the checker).
fn independent_check(g: &Guest) -> SchedCheckReport {
    let core = g.dir().join("check.core");
    let mut last = None;
    for _ in 0..5 {
        g.dump_core(&core).expect("dump");
        let report = check_core(&core, &g.kernel().vmlinux).expect("check");
        std::fs::remove_file(&core).expect("remove the dump");
        let complete = report.cpus_checked == report.cpus.len();
        last = Some(report);
        if complete {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = last.expect("a report");
    assert_eq!(report.cpus_checked, report.cpus.len(), "no dump with every runqueue lock free");
    report
}

/// On one vCPU, a task that lives in system calls is parked and unparked over and over while the
/// guest runs commands: unpark asks the CPU's current task to reschedule, and that task is often
/// a command in the middle of an exec. The request must reach the kernel's `cond_resched()` too,
/// or the exec's unmap loop spins forever (a soft lockup).
#[test]
fn churn_on_one_vcpu_never_stalls_the_guest() {
    let g = &lab()[1];
    let profiles: Vec<Profile> = Profile::load_dir(&kernels_dir()).expect("profiles").into_iter().map(|(_, p)| p).collect();
    let spec: DomainSpec = domain_arg(g).parse().expect("spec");
    let mut domain = Domain::attach(DomainId(0), &spec, profiles).expect("attach");
    let actuator = Actuator::for_domain(&domain).expect("actuator");
    g.steer(&[("sysc", Steer::Busy)]).expect("steer");
    let pid = g.pids_of("sysc")[0] as i32;
    let snap = domain.snapshot().expect("snapshot");
    let t = snap.guest.tasks.iter().find(|t| t.record.pid == pid).expect("sysc");
    let target = [TaskIdentity { addr: t.record.addr, pid, start_time: t.record.start_time }];
    let soaking = std::sync::atomic::AtomicBool::new(true);
    let mut counters = (0, 0, 0, 0);
    let execs = std::thread::scope(|scope| {
        let execs = scope.spawn(|| {
            let mut n = 0usize;
            while soaking.load(std::sync::atomic::Ordering::Relaxed) {
                g.exec_timeout("/bin/true", Duration::from_secs(10)).expect("a command during the churn");
                n += 1;
            }
            n
        });
        soak(&mut domain, &actuator, &target, 1000, (&mut counters.0, &mut counters.1, &mut counters.2, &mut counters.3));
        soaking.store(false, std::sync::atomic::Ordering::Relaxed);
        execs.join().expect("exec thread")
    });
    eprintln!("churn: {counters:?} (parks, unparks, retries, undone), {execs} commands");
    g.steer(&[("sysc", Steer::Idle)]).expect("steer");
    assert!(execs > 0 && g.console_problems().is_empty(), "{:?}", g.console_problems());
    drop(domain);
    let report = independent_check(g);
    assert!(report.violations.is_empty(), "after the churn: {:#?}", report.violations);
}

/// `cycles` rounds of park then unpark, one target after another; counts into `counters`.
fn soak(domain: &mut Domain, actuator: &Actuator, targets: &[TaskIdentity], cycles: usize, counters: (&mut usize, &mut usize, &mut usize, &mut usize)) {
    let (parks, unparks, retries, lost) = counters;
    for i in 0..cycles {
        let task = &targets[i % targets.len()];
        loop {
            match actuator.park(domain, task).expect("park") {
                ParkOutcome::Parked { .. } => break,
                ParkOutcome::Deferred(d) => {
                    *retries += 1;
                    assert!(*retries < cycles * 20, "too many retries: {d:?}");
                }
            }
        }
        *parks += 1;
        loop {
            match actuator.unpark(domain, task).expect("unpark") {
                UnparkOutcome::Unparked { .. } => break,
                // A task parked while running kernel code can overwrite the parked state itself
                // (set_current_state before a sleep); the scheduling loop parks it again.
                UnparkOutcome::NotParked { .. } => {
                    *lost += 1;
                    break;
                }
                UnparkOutcome::Deferred(_) => *retries += 1,
            }
        }
        *unparks += 1;
    }
}
