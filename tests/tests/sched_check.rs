//! The scheduler-state oracle (`xsched_lab::sched_check`, `tests/lab/sched_check.py`) on a real
//! guest: every dump of the untouched guest passes every rule, and copies corrupted in precise
//! ways (`tests/lab/sched_check_mutate.py`) fail exactly the rule each corruption breaks; then the
//! Python suite (`tests/lab/test_sched_check.py`) runs every other corruption on the same dump.
//! Uses whatever kernel the lab boots, with that kernel's vmlinux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use xsched_lab::sched_check::checker_python;
use xsched_lab::{check_core, corrupt_core, Guest, GuestSpec, Lab, SchedCheckReport, Workload};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const VCPUS: u32 = 2;

/// Dumps to take until one has every CPU checked (its runqueue lock free) and a target for every
/// corruption (e.g. a red node); each of them must pass untouched.
const ATTEMPTS: usize = 8;

/// Corruptions for every kernel: a colour bit, the cached leftmost, the flat and hierarchical
/// counts, a queued task unlinked from `rq->cfs_tasks`, the PSI count.
const COMMON: &[&str] = &["rb-black-height", "rb-leftmost", "nr-running", "h-queued", "cfs-tasks", "psi-count"];
/// EEVDF only: an augmented min_vruntime, the avg_load sum.
const EEVDF: &[&str] = &["min-vruntime", "avg-load"];
/// CFS (6.1) only: a key out of vruntime order.
const CFS: &[&str] = &["rb-order"];

/// A directory for the dumps, removed with everything in it when dropped (dumps are big).
struct DumpDir(PathBuf);

impl DumpDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("xsched-sched-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for DumpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busy mix: more CPU hogs than vCPUs, tasks in a cgroup (group entities), a task that sleeps
/// and wakes all the time, and sleepers.
fn spec() -> GuestSpec {
    GuestSpec::new("chk")
        .vcpus(VCPUS)
        .workload(Workload::cpu("hog").count(6))
        .workload(Workload::cpu("bkup").count(2).in_cgroup("g1"))
        .workload(Workload::phases("web", 30, 20).count(2))
        .workload(Workload::sleep("idler").count(3))
        .view_interval_ms(0)
}

fn mutations(report: &SchedCheckReport) -> Vec<&'static str> {
    let special = if report.features.eevdf { EEVDF } else { CFS };
    COMMON.iter().chain(special).copied().collect()
}

/// Checks an untouched dump: no violation whatever the CPUs' locks.
fn check_untouched(guest: &Guest, core: &Path) -> Result<SchedCheckReport, Box<dyn std::error::Error>> {
    let started = Instant::now();
    guest.dump_core(core)?;
    let dumped = started.elapsed();
    let report = check_core(core, &guest.kernel().vmlinux)?;
    eprintln!(
        "untouched dump ({} in {dumped:?}): {} of {VCPUS} CPUs checked in {:.2} s, {} violations",
        report.kernel,
        report.cpus_checked,
        report.elapsed_s,
        report.violations.len()
    );
    assert!(report.violations.is_empty(), "an untouched guest violates rules: {:#?}", report.violations);
    // Both runqueue locks can be held at the instant of a dump (a load balance holds two): such a
    // dump has nothing to check and the loop takes another.
    if report.cpus_checked == 0 {
        eprintln!("no CPU checked in this dump: {:?}", report.cpus);
    }
    Ok(report)
}

/// Applies every corruption to a copy of `core`; `Ok(false)` if this dump lacks a target for one.
fn check_corruptions(
    guest: &Guest,
    core: &Path,
    dir: &Path,
    names: &[&str],
) -> Result<bool, Box<dyn std::error::Error>> {
    let vmlinux = &guest.kernel().vmlinux;
    let copy = dir.join("corrupted.core");
    for name in names {
        let Some(mutation) = corrupt_core(core, vmlinux, name, &copy)? else {
            eprintln!("corruption {name}: no target in this dump; taking another");
            return Ok(false);
        };
        let report = check_core(&copy, vmlinux)?;
        std::fs::remove_file(&copy)?;
        let mut expected = mutation.expect.clone();
        expected.sort();
        assert_eq!(
            report.violated_rules(),
            expected,
            "corruption {name} ({:?}) must fail exactly its rules; violations: {:#?}",
            mutation.patches,
            report.violations
        );
        eprintln!("corruption {name}: caught as {expected:?}");
    }
    Ok(true)
}

/// Runs the Python suite on `core`: every corruption whose state this kernel has, exactly its
/// rules (a corruption this dump has no target for is skipped there, not failed: the guest's
/// trees take whatever shape they take).
fn run_python_suite(core: &Path, vmlinux: &Path) -> TestResult {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab").join("test_sched_check.py");
    let output = Command::new(checker_python()?)
        .arg(&suite)
        .arg("--allow-no-target")
        .args([core, vmlinux])
        .arg("-v")
        .output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    for line in log.lines().filter(|l| l.contains("skipped") || l.starts_with("Ran ") || l.starts_with("OK")) {
        eprintln!("python suite: {line}");
    }
    assert!(output.status.success(), "{} failed ({}):\n{log}", suite.display(), output.status);
    Ok(())
}

#[test]
fn untouched_guest_passes_and_each_corruption_is_caught() -> TestResult {
    let guest = Lab::boot_one(spec())?;
    let dir = DumpDir::new()?;
    let core = dir.0.join("guest.core");

    // A guest that was paused stays paused through a dump.
    let mut qmp = guest.qmp()?;
    qmp.stop()?;
    drop(qmp);
    guest.dump_core(&core)?;
    let mut qmp = guest.qmp()?;
    assert!(qmp.is_paused()?, "dump_core resumed a guest that was paused before");
    qmp.cont()?;
    drop(qmp);
    std::fs::remove_file(&core)?;

    let mut done = false;
    for attempt in 1..=ATTEMPTS {
        let report = check_untouched(&guest, &core)?;
        if report.cpus_checked == report.cpus.len() && check_corruptions(&guest, &core, &dir.0, &mutations(&report))? {
            eprintln!("all corruptions caught on dump {attempt}");
            run_python_suite(&core, &guest.kernel().vmlinux)?;
            done = true;
            break;
        }
        std::fs::remove_file(&core)?;
    }
    assert!(done, "no dump in {ATTEMPTS} had every CPU unlocked and a target for every corruption");
    assert!(guest.console_problems().is_empty(), "guest console: {:?}", guest.console_problems());
    Ok(())
}
