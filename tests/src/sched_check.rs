//! An independent oracle for a guest's fair-scheduler state: dump the guest, then check the dump.
//!
//! [`Guest::dump_core`] writes an ELF core of guest memory (QMP `dump-guest-memory`, with the
//! guest paused so the state is consistent); [`check_core`] runs `tests/lab/sched_check.py`, which
//! reads the core with the kernel's DWARF through drgn, recomputes the scheduler's incrementally
//! kept state (red-black trees, EEVDF augmented values and sums, counts, lists, PSI counts) from
//! the trees and reports every mismatch ([`SchedCheckReport`]). It shares no code with xsched's
//! own reader, so it can judge what xsched wrote. [`corrupt_core`] (`tests/lab/sched_check_mutate.py`)
//! corrupts one piece of state in a copy of a core, to prove a rule can fail.
//!
//! drgn lives in a venv in the lab cache (`<cache>/venv`, made by `scripts/install-deps.sh`, which
//! runs on first use if it is missing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::kernel::{cache_dir, install_script};
use crate::{Guest, LabError};

/// The checker script (`tests/lab/sched_check.py`).
pub fn checker_script() -> PathBuf {
    lab_dir().join("sched_check.py")
}

/// The mutation script (`tests/lab/sched_check_mutate.py`).
pub fn mutate_script() -> PathBuf {
    lab_dir().join("sched_check_mutate.py")
}

fn lab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab")
}

/// The venv's Python, which has drgn (`<cache>/venv/bin/python`).
pub fn venv_python() -> PathBuf {
    cache_dir().join("venv").join("bin").join("python")
}

/// The venv's Python, running `scripts/install-deps.sh` first (once per process) if drgn is missing.
pub fn checker_python() -> Result<PathBuf, LabError> {
    static ENSURED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ENSURED
        .get_or_init(|| {
            let python = venv_python();
            if has_drgn(&python) {
                return Ok(python);
            }
            let script = install_script();
            eprintln!("xsched-lab: drgn missing; running {}", script.display());
            let status = Command::new(&script).status().map_err(|e| format!("run {}: {e}", script.display()))?;
            if !status.success() {
                return Err(format!("{} failed ({status}); run it by hand (as root)", script.display()));
            }
            if has_drgn(&python) {
                Ok(python)
            } else {
                Err(format!("{} has no drgn after {}", python.display(), script.display()))
            }
        })
        .clone()
        .map_err(|reason| LabError::Setup { reason })
}

fn has_drgn(python: &Path) -> bool {
    Command::new(python).args(["-c", "import drgn"]).output().is_ok_and(|o| o.status.success())
}

/// What [`check_core`] found: the checker's JSON report.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedCheckReport {
    /// The guest kernel's release (`init_uts_ns`).
    pub kernel: String,
    /// What the checker decided from the kernel's DWARF (EEVDF or not, which counts it has, ...).
    pub features: Features,
    /// One summary per online CPU.
    pub cpus: Vec<CpuSummary>,
    /// How many CPUs were checked (a CPU whose runqueue lock was held in the dump is skipped).
    pub cpus_checked: usize,
    /// Every mismatch found.
    pub violations: Vec<Violation>,
    /// Observations that are allowed but worth knowing (e.g. a task preempted on its way to sleep).
    pub notes: Vec<String>,
    /// Seconds the check took, including loading the DWARF.
    pub elapsed_s: f64,
}

impl SchedCheckReport {
    /// The distinct rule ids of the violations, sorted.
    pub fn violated_rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.violations.iter().map(|v| v.rule.clone()).collect();
        rules.sort();
        rules.dedup();
        rules
    }
}

/// The kernel features the checker found in the DWARF.
#[derive(Clone, Debug, Deserialize)]
pub struct Features {
    /// EEVDF (`sched_entity.deadline`, `cfs_rq.avg_vruntime`): the tree is ordered by deadline.
    pub eevdf: bool,
    /// `entity_key()`'s base field (`zero_vruntime` or `min_vruntime`), for EEVDF.
    pub entity_key_base: Option<String>,
    /// `sched_entity.min_slice` exists.
    pub min_slice: bool,
    /// `sched_entity.sched_delayed` exists (delayed dequeue).
    pub sched_delayed: bool,
    /// Group scheduling (`sched_entity.my_q`).
    pub fair_group_sched: bool,
    /// The flat count field (`nr_running` or `nr_queued`).
    pub flat_count: String,
    /// The hierarchical count fields checked (`h_nr_running`; or `h_nr_queued`, `h_nr_runnable`, ...).
    pub hierarchical_counts: Vec<String>,
    /// The hierarchical idle count field, if any.
    pub idle_h_count: Option<String>,
    /// The flat idle count field, if any.
    pub idle_count: Option<String>,
    /// PSI is compiled in.
    pub psi: bool,
    /// PSI rules were checked (compiled in and not disabled).
    pub psi_checked: bool,
}

/// One CPU's summary.
#[derive(Clone, Debug, Deserialize)]
pub struct CpuSummary {
    /// The CPU number.
    pub cpu: u32,
    /// Address of its `struct rq`.
    pub rq: String,
    /// Whether its state was checked.
    pub checked: bool,
    /// Why not, if it was skipped.
    #[serde(default)]
    pub skipped: Option<String>,
    /// `rq->nr_running`.
    #[serde(default)]
    pub nr_running: Option<u64>,
    /// The root cfs_rq's recomputed hierarchical task count.
    #[serde(default)]
    pub cfs_h: Option<u64>,
    /// Every cfs_rq reached from `rq->cfs` through group entities.
    #[serde(default)]
    pub cfs_rqs: Vec<CfsRqSummary>,
    /// Everything else the checker printed for this CPU (rt, dl, stop, curr, PSI count).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One cfs_rq's summary.
#[derive(Clone, Debug, Deserialize)]
pub struct CfsRqSummary {
    /// Its address.
    pub cfs_rq: String,
    /// Its task group (`/`, a cgroup name, `autogroup-N`).
    pub group: Option<String>,
    /// Depth below `rq->cfs` (0 for the root).
    pub depth: u32,
    /// Entities in its tree.
    #[serde(default)]
    pub tree_size: usize,
    /// Entities queued on it (the tree plus a queued curr).
    #[serde(default)]
    pub nr: usize,
}

/// One mismatch.
#[derive(Clone, Debug, Deserialize)]
pub struct Violation {
    /// The CPU (None for a global rule).
    pub cpu: Option<u32>,
    /// The rule id, e.g. `rb.black_height`, `eevdf.avg_load`, `count.h_nr_running`.
    pub rule: String,
    /// The cfs_rq involved, if any.
    pub cfs_rq: Option<String>,
    /// The entity (or task) involved, if any.
    pub entity: Option<String>,
    /// The task's pid, if a task is involved.
    pub pid: Option<i64>,
    /// The task's comm, if a task is involved.
    pub comm: Option<String>,
    /// What the kernel's own rules say the value must be.
    pub expected: Value,
    /// What the dump holds.
    pub found: Value,
    /// More context, if any.
    #[serde(default)]
    pub detail: Option<String>,
}

/// What [`corrupt_core`] changed.
#[derive(Clone, Debug, Deserialize)]
pub struct Mutation {
    /// The mutation's name (e.g. `rb-black-height`).
    pub mutation: String,
    /// The rules the checker must report on the corrupted copy, exactly.
    pub expect: Vec<String>,
    /// The fields written.
    pub patches: Vec<Value>,
}

/// Checks the fair-scheduler state in `core` (an ELF core with VMCOREINFO) against the DWARF in
/// `vmlinux`. A report with violations is `Ok`; an error means the check could not run.
pub fn check_core(core: &Path, vmlinux: &Path) -> Result<SchedCheckReport, LabError> {
    let output = run_script(&checker_script(), &[core, vmlinux], core)?;
    match output.status.code() {
        Some(0 | 1) => serde_json::from_slice(&output.stdout).map_err(|e| LabError::SchedCheck {
            core: core.to_path_buf(),
            reason: format!("unreadable report: {e}"),
        }),
        _ => Err(script_failure(core, &output)),
    }
}

/// Writes a copy of `core` to `out` with one piece of scheduler state corrupted by `mutation`
/// (a name `sched_check_mutate.py --help` lists). `Ok(None)` if this dump has no target for it
/// (e.g. no tree with two nodes); an error if the kernel has no such state or the tool failed.
pub fn corrupt_core(core: &Path, vmlinux: &Path, mutation: &str, out: &Path) -> Result<Option<Mutation>, LabError> {
    let mutation = Path::new(mutation);
    let output = run_script(&mutate_script(), &[core, vmlinux, mutation, out], core)?;
    match output.status.code() {
        Some(0) => serde_json::from_slice(&output.stdout).map(Some).map_err(|e| LabError::SchedCheck {
            core: core.to_path_buf(),
            reason: format!("unreadable mutation report: {e}"),
        }),
        Some(3) => Ok(None),
        _ => Err(script_failure(core, &output)),
    }
}

fn run_script(script: &Path, args: &[&Path], core: &Path) -> Result<Output, LabError> {
    let python = checker_python()?;
    Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| LabError::io("run checker for", core, e))
}

fn script_failure(core: &Path, output: &Output) -> LabError {
    LabError::SchedCheck {
        core: core.to_path_buf(),
        reason: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
    }
}

impl Guest {
    /// Writes an ELF core of guest memory to `path` (QMP `dump-guest-memory`, no paging), with the
    /// guest paused so its state is consistent: a running guest is paused for the dump and
    /// resumed after it (even if the dump failed); a guest that was already paused stays paused.
    pub fn dump_core(&self, path: &Path) -> Result<(), LabError> {
        // QEMU opens the file itself, relative to its own working directory.
        let path = std::path::absolute(path).map_err(|e| LabError::io("resolve", path, e))?;
        let qmp_error = |source| LabError::Qmp { guest: self.name().to_owned(), source };
        let mut qmp = self.qmp()?;
        let was_paused = qmp.is_paused().map_err(qmp_error)?;
        if !was_paused {
            qmp.stop().map_err(qmp_error)?;
        }
        let dumped = qmp.dump_guest_memory(&path).map_err(qmp_error);
        if !was_paused {
            qmp.cont().map_err(qmp_error)?;
        }
        dumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `sched_check.py` prints (abridged from a real 6.12 report).
    const REPORT: &str = r#"{"kernel": "6.12.117+deb12-cloud-amd64",
      "features": {"eevdf": true, "entity_key_base": "zero_vruntime", "min_slice": true,
        "sched_delayed": true, "fair_group_sched": true, "flat_count": "nr_running",
        "hierarchical_counts": ["h_nr_queued", "h_nr_runnable", "h_nr_delayed"],
        "idle_h_count": "idle_h_nr_running", "idle_count": "idle_nr_running", "psi": true, "psi_checked": true},
      "cpus": [{"cpu": 0, "rq": "0xffff8eae0f635e80", "checked": true, "nr_running": 3, "cfs_h": 3, "rt": 0,
        "dl": 0, "stop": 0, "curr": 158, "cfs_rqs": [{"cfs_rq": "0xffff8eae0f635f00", "group": "/", "depth": 0,
        "tree_size": 1, "curr": "0xffff8eae01382c00", "nr": 2, "h": {"h_nr_queued": 3}}], "psi_nr_running": 3},
        {"cpu": 1, "rq": "0xffff8eae0f735e80", "checked": false, "skipped": "rq->__lock held"}],
      "cpus_checked": 1,
      "violations": [
        {"cpu": 0, "rule": "rb.leftmost", "cfs_rq": "0xffff8eae0f635f00", "entity": null, "pid": null,
         "comm": null, "expected": "0x1", "found": "0x2"},
        {"cpu": 0, "rule": "eevdf.avg_load", "cfs_rq": "0xffff8eae0f635f00", "entity": null, "pid": 7,
         "comm": "hog", "expected": 1024, "found": 1025, "detail": "x"},
        {"cpu": 1, "rule": "rb.leftmost", "cfs_rq": null, "entity": null, "pid": null, "comm": null,
         "expected": null, "found": null}],
      "notes": [], "elapsed_s": 0.52}"#;

    #[test]
    fn parses_the_report_and_lists_rules_once() {
        let report: SchedCheckReport = serde_json::from_str(REPORT).expect("report parses");
        assert!(report.features.eevdf);
        assert_eq!(report.cpus.len(), 2);
        assert_eq!(report.cpus[0].cfs_rqs[0].tree_size, 1);
        assert_eq!(report.cpus[0].other["psi_nr_running"], 3);
        assert!(!report.cpus[1].checked && report.cpus[1].skipped.is_some());
        assert_eq!(report.violated_rules(), ["eevdf.avg_load", "rb.leftmost"]);
        assert_eq!(report.violations[1].comm.as_deref(), Some("hog"));
    }
}
