//! Helpers shared by the end-to-end tests that drive the `xsched` binary against lab guests.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use object::read::elf::{FileHeader, ProgramHeader};
use serde_json::Value;
use xsched::memory::qmp::WAIT_VAR;
use xsched_lab::{Guest, QMP_WAIT};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `xsched` binary, built once per test binary with the cargo that runs the tests.
pub fn xsched_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "xsched", "--bin", "xsched"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build for xsched");
        assert!(status.success(), "building xsched failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
        target.join("debug").join("xsched")
    })
}

/// Builds the bundled policy `name` (beside the debug `xsched`) and returns its library.
pub fn plugin(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["build", "--quiet", "-p", name]).current_dir(workspace()).status().expect("cargo");
    assert!(status.success(), "building plugin {name}");
    xsched_bin().with_file_name(format!("lib{}.so", name.replace('-', "_")))
}

/// Runs `xsched ARGS` and returns its output. It waits for a QMP monitor another client holds as
/// long as the lab's own clients do ([`QMP_WAIT`]): tests share guests.
pub fn xsched(args: &[&str]) -> Output {
    xsched_with_env(args, &[])
}

/// Runs `xsched ARGS` with extra environment variables.
pub fn xsched_with_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    Command::new(xsched_bin())
        .args(args)
        .current_dir(workspace())
        .env(WAIT_VAR, QMP_WAIT.as_secs().to_string())
        .envs(env.iter().copied())
        .output()
        .expect("run xsched")
}

/// Runs `xsched ARGS`, requires success and returns stdout.
pub fn xsched_ok(args: &[&str]) -> String {
    let out = xsched(args);
    assert!(
        out.status.success(),
        "xsched {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `--domain` argument for a lab guest: its RAM file, or for a guest with anonymous RAM its
/// QEMU process (`qemu-process:`).
pub fn domain_arg(guest: &Guest) -> String {
    if guest.spec().anonymous_ram {
        return format!("{}=qemu-process:{}", guest.name(), guest.qmp_socket().display());
    }
    format!("{}=qemu:{},qmp={}", guest.name(), guest.ram_file().display(), guest.qmp_socket().display())
}

/// The committed kernel profiles.
pub fn kernels_dir() -> PathBuf {
    workspace().join("kernels")
}

/// A trace line's tasks: comm → (state, runtime_ns).
pub type TaskStates = BTreeMap<String, (char, u64)>;

/// The tasks of one line of `xsched run --trace`: comm → (state, runtime_ns).
pub fn states(line: &Value) -> TaskStates {
    line["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let state = t["state"].as_str().and_then(|s| s.chars().next()).unwrap_or('?');
            (t["comm"].as_str().expect("comm").to_string(), (state, t["runtime_ns"].as_u64().expect("runtime")))
        })
        .collect()
}

/// bkup's CPU share in a priority run, period by period from the trace: while db or web was
/// runnable (for three periods in a row, so the loop had two periods to react) and while both
/// were idle.
#[derive(Debug)]
pub struct BkupShares {
    /// Time with db or web runnable, ns.
    pub contended_ns: u64,
    /// bkup's share of it, %.
    pub contended_pct: f64,
    /// Time with both idle, ns.
    pub free_ns: u64,
    /// bkup's share of it, %.
    pub free_pct: f64,
}

/// Computes [`BkupShares`] from `(t, states)` per trace line.
pub fn bkup_shares(lines: &[(f64, TaskStates)]) -> BkupShares {
    let busy = |s: &TaskStates, comm: &str| s.get(comm).is_some_and(|(state, _)| *state == 'R');
    let high = |s: &TaskStates| busy(s, "db") || busy(s, "web");
    let (mut contended, mut contended_ran, mut free, mut free_ran) = (0u64, 0u64, 0u64, 0u64);
    for w in lines.windows(4) {
        let [(_, a), (_, b), (t2, c), (t3, d)] = w else { continue };
        let (Some((_, r2)), Some((_, r3))) = (c.get("bkup"), d.get("bkup")) else { continue };
        let grew = r3.saturating_sub(*r2);
        let span = u64::try_from(std::time::Duration::from_secs_f64((t3 - t2).max(0.0)).as_nanos()).unwrap_or(u64::MAX);
        if [a, b, c, d].iter().all(|s| high(s)) {
            contended += span;
            contended_ran += grew;
        } else if [a, b, c, d].iter().all(|s| !high(s)) {
            free += span;
            free_ran += grew;
        }
    }
    let share = |ns: u64, span: u64| ns as f64 * 100.0 / span.max(1) as f64;
    BkupShares { contended_ns: contended, contended_pct: share(contended_ran, contended), free_ns: free, free_pct: share(free_ran, free) }
}

/// The VMCOREINFO note of a QEMU dump (`dump-guest-memory`), as `KEY=VALUE` pairs; empty if the
/// guest kernel published none (its `qemu_fw_cfg` module not loaded).
pub fn vmcoreinfo(core: &Path) -> BTreeMap<String, String> {
    let data = std::fs::read(core).expect("read core");
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data).expect("ELF");
    let endian = header.endian().expect("endian");
    let mut info = BTreeMap::new();
    for ph in header.program_headers(endian, &*data).expect("phdrs") {
        let Ok(Some(mut notes)) = ph.notes(endian, &*data) else { continue };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"VMCOREINFO" {
                for line in String::from_utf8_lossy(note.desc()).lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        info.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
    }
    info
}

/// The supervisor's pid from the first line `xsched run` prints ("…, supervised by pid N").
pub fn supervisor_pid(first_line: &str) -> u32 {
    first_line
        .rsplit_once("supervised by pid ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no supervisor pid in {first_line:?}"))
}
