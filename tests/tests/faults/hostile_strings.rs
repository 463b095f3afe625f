//! Names a guest chooses, made hostile: a process sets its own comm to escape sequences, a BEL,
//! a newline and a byte that is not UTF-8, in a cgroup whose name holds an escape sequence.
//! `xsched ps` must print no control byte of it, `ps --json` must give the comm's exact bytes
//! (what the guest's own `/proc/PID/comm` holds), and the timeline of a short `run --trace` must
//! be well-formed XML.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{domain_arg, kernels_dir, plugin, xsched, xsched_ok};
use serde_json::Value;
use xsched_lab::Guest;

/// The comm, as busybox `printf` writes it: ESC [2J, BEL, "ev", newline, "il", 0xff.
const COMM_PRINTF: &str = r"\033[2J\007ev\nil\377";
/// Its bytes.
const COMM: &[u8] = b"\x1b[2J\x07ev\nil\xff";
/// The cgroup's name, as `printf` writes it: "x", ESC [31m, "red", BEL.
const CGROUP_PRINTF: &str = r"x\033[31mred\007";

/// The fault suite's shared guest.
fn lab() -> &'static [Guest] {
    std::slice::from_ref(super::lab())
}

/// The bytes of a file in the guest (through `od`, since the control channel is a terminal).
fn guest_bytes(g: &Guest, path: &str) -> Vec<u8> {
    let hex = g.exec_ok(&format!("od -An -v -tx1 {path}")).expect("od");
    hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("od printed {hex:?}"))).collect()
}

/// Starts a spinning shell that renames itself to [`COMM`] and moves into the hostile cgroup;
/// returns its pid once the guest shows the new comm.
fn start_hostile(g: &Guest) -> u32 {
    g.exec_ok(&format!(r#"mkdir -p "/sys/fs/cgroup/$(printf '{CGROUP_PRINTF}')""#)).expect("mkdir cgroup");
    let script = format!(
        r#"printf "{COMM_PRINTF}" >/proc/$$/comm; echo $$ >"/sys/fs/cgroup/$(printf "{CGROUP_PRINTF}")/cgroup.procs"; while :; do :; done"#
    );
    let pid: u32 = g.exec_ok(&format!("sh -c '{script}' </dev/null >/dev/null 2>&1 & echo $!")).expect("start").trim().parse().expect("pid");
    let started = Instant::now();
    while guest_bytes(g, &format!("/proc/{pid}/comm")) != [COMM, b"\n"].concat() {
        assert!(started.elapsed() < Duration::from_secs(30), "pid {pid} never took the hostile comm");
        std::thread::sleep(Duration::from_millis(200));
    }
    pid
}

#[test]
fn hostile_names_reach_no_terminal_and_no_svg_yet_json_keeps_them_exact() {
    let _serial = super::serial();
    let g = &lab()[0];
    let pid = start_hostile(g);
    let domain = domain_arg(g);
    let kernels = kernels_dir();
    let kernels = kernels.to_str().expect("utf-8");
    let cgroup_line = guest_bytes(g, &format!("/proc/{pid}/cgroup"));
    let cgroup = String::from_utf8_lossy(cgroup_line.strip_prefix(b"0::").and_then(|c| c.strip_suffix(b"\n")).expect("0::PATH\\n")).into_owned();
    assert_eq!(cgroup, "/x\x1b[31mred\x07", "the guest made the cgroup");

    // The table for a person: not one control byte of the guest's.
    let out = xsched(&["ps", "--domain", &domain, "--kernels", kernels]);
    assert!(out.status.success(), "ps: {}", String::from_utf8_lossy(&out.stderr));
    let bad: Vec<u8> = out.stdout.iter().copied().filter(|&b| (b < 0x20 && b != b'\n') || b == 0x7f).collect();
    assert!(bad.is_empty(), "ps printed control bytes {bad:x?}");
    let text = String::from_utf8(out.stdout).expect("ps prints UTF-8");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "ps printed a C1 control");
    let row = text.lines().find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string())).unwrap_or_else(|| panic!("no row for {pid}:\n{text}"));
    assert!(row.contains("?[2J?ev?il?") && row.ends_with(" /x?[31mred?"), "{row}");

    // The table for a script: exact.
    let table: Value = serde_json::from_str(&xsched_ok(&["ps", "--json", "--domain", &domain, "--kernels", kernels])).expect("ps --json");
    let task = table["tasks"].as_array().expect("tasks").iter().find(|t| t["key"]["pid"] == pid).expect("the hostile task");
    let bytes: Vec<u8> = task["comm_bytes"].as_array().expect("comm_bytes").iter().map(|b| u8::try_from(b.as_u64().expect("byte")).expect("byte")).collect();
    assert_eq!(bytes, COMM, "comm_bytes is what the guest's /proc/{pid}/comm holds");
    assert_eq!(task["comm"], String::from_utf8_lossy(COMM).as_ref());
    assert_eq!(task["cgroup"], cgroup.as_str());

    // A short loop's trace, drawn: a well-formed SVG that shows the name safely.
    let dir = g.dir();
    let (trace, journal, svg) = (dir.join("hostile.trace"), dir.join("hostile.journal"), dir.join("hostile.svg"));
    let lib = plugin("fairshare");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    xsched_ok(&[
        "run", "--plugin", &path(&lib), "--domain", &domain, "--cpus", "1", "--periods", "30",
        "--trace", &path(&trace), "--journal", &path(&journal), "--kernels", kernels,
    ]);
    let traced = std::fs::read_to_string(&trace).expect("trace");
    let comm = serde_json::to_string(&String::from_utf8_lossy(COMM)).expect("json");
    assert!(traced.contains(&comm), "the trace has the task under its exact (lossy) comm");
    xsched_ok(&["timeline", &path(&trace), "-o", &path(&svg)]);
    let picture = std::fs::read_to_string(&svg).expect("svg");
    assert!(picture.contains("faults/?[2J?ev?il? "), "the lane is labelled safely");
    let parsed = Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])", &path(&svg)])
        .output()
        .expect("python3");
    assert!(parsed.status.success(), "the SVG is not well-formed XML: {}", String::from_utf8_lossy(&parsed.stderr));
    g.exec_ok(&format!("kill {pid}")).expect("kill");
}
