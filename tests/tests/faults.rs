//! Fault injection on a real lab guest: signals at many moments of attach and of the loop, an
//! operator-paused VM, `kill -9` of the loop holding tasks parked, plugins that abort, segfault
//! and hang, both processes killed at once with a torn journal left behind; hostile names the
//! guest gives its tasks ([`hostile_strings`]) and mapped files that shrink or are replaced
//! ([`mapped_files`]). One guest, booted once, serves them all, one test at a time.
//!
//! The truth is the guest's: its run state from the operator's own QMP monitor (a second
//! socket, as libvirt keeps its own), its tasks' states from its own `/proc`, its console, and
//! after the kills an independent check of its runqueues from a core dump (drgn).
//! Every test prints what it injected and what it found stranded (the goal is nothing).

mod common;
#[path = "faults/hostile_strings.rs"]
mod hostile_strings;
#[path = "faults/mapped_files.rs"]
mod mapped_files;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{domain_arg, kernels_dir, plugin, xsched, xsched_bin, xsched_ok};
use xsched_lab::{check_core, shared_lab, Guest, GuestSpec, Workload};

/// How long a test waits for the guest or for xsched before it fails.
const WAIT: Duration = Duration::from_secs(60);

fn lab() -> &'static Guest {
    &shared_lab(|| vec![GuestSpec::new("faults").workload(Workload::sleep("idler")).view_interval_ms(1000).view_kthreads(false)])[0]
}

/// The tests share the guest's workloads and monitor: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The operator's monitor connection, holding the guest paused until dropped.
struct OperatorPause(xsched::memory::qmp::QmpClient);

impl Drop for OperatorPause {
    fn drop(&mut self) {
        let _ = self.0.cont();
    }
}

/// The run state as the operator's open monitor connection reports it.
fn status(operator: &mut xsched::memory::qmp::QmpClient) -> String {
    operator.execute("query-status", None).expect("query-status")["status"].as_str().unwrap_or("?").to_string()
}

/// How many of the guest's tasks are parked (`P` in their own `/proc/PID/stat`).
fn parked_in_guest(g: &Guest) -> usize {
    let out = g.exec_ok("cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') P ' || true").expect("count parked");
    out.trim().parse().unwrap_or_else(|_| panic!("count of parked tasks: {out:?}"))
}

/// Waits until nothing is parked in the guest and it runs; returns how long that took.
fn until_released(g: &Guest, since: Instant) -> Duration {
    loop {
        if parked_in_guest(g) == 0 && g.qmp_status() == "running" {
            return since.elapsed();
        }
        assert!(since.elapsed() < WAIT, "tasks stay parked (or the guest paused) {WAIT:?} after the fault");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU hogs named `victim`, killed when dropped (a fatal signal also ends a parked task), so that
/// a failed test leaves the next one a clean guest.
struct Victims<'g>(&'g Guest, Vec<u32>);

impl<'g> Victims<'g> {
    fn start(g: &'g Guest) -> Self {
        Self(g, g.start_workload(&Workload::cpu("victim").count(3)).expect("victims"))
    }
}

impl Drop for Victims<'_> {
    fn drop(&mut self) {
        let pids: Vec<String> = self.1.iter().map(u32::to_string).collect();
        let _ = self.0.exec(&format!("kill -9 {}", pids.join(" ")));
    }
}

fn send(pid: u32, signal: i32) {
    // SAFETY: a signal to a child this test started and has not reaped.
    unsafe { libc::kill(i32::try_from(pid).expect("pid"), signal) };
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "xsched did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `xsched run` with the `testing-panic` fixture ranking the `victim` tasks in one class, so
/// that with one host CPU it parks all but one; `how` is how it fails after `after` periods.
fn start_run(g: &Guest, tag: &str, after: u32, how: &str, journal: &std::path::Path) -> (Child, u32) {
    let config = g.dir().join(format!("{tag}.conf"));
    std::fs::write(&config, format!("after={after} victim {how}")).expect("config");
    let lib = plugin("testing-panic");
    let mut child = Command::new(xsched_bin())
        .args(["run", "--plugin", path(&lib), "--config", path(&config), "--domain", &domain_arg(g), "--cpus", "1"])
        .args(["--journal", path(journal), "--kernels", path(&kernels_dir())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xsched run");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut first).expect("first line");
    (child, common::supervisor_pid(&first))
}

/// Waits until the loop has parked something (the journal holds a park).
fn until_parked(journal: &std::path::Path) {
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(journal).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "xsched parked nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut text).expect("stderr");
    }
    text
}

fn assert_console_clean(g: &Guest) {
    let problems = g.console_problems();
    assert!(problems.is_empty(), "the guest's console: {problems:#?}");
}

/// The guest's runqueues, checked independently of xsched from a core dump.
fn assert_runqueues_consistent(g: &Guest, tag: &str) {
    let core = g.dir().join(format!("{tag}.core"));
    g.dump_core(&core).expect("dump");
    let report = check_core(&core, &g.kernel().vmlinux).expect("check");
    let _ = std::fs::remove_file(&core);
    println!("{tag}: independent runqueue check: {} CPUs, {} violations", report.cpus_checked, report.violations.len());
    assert!(report.violations.is_empty(), "{tag}: {:#?}", report.violations);
}

#[test]
fn signals_at_any_moment_of_attach_and_of_the_loop_never_leave_the_guest_paused() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    let domain = domain_arg(g);
    let kernels = kernels_dir();
    let journal = g.dir().join("signals.journal");
    let config = g.dir().join("signals.conf");
    std::fs::write(&config, "after=1000000 victim").expect("config");
    let lib = plugin("testing-panic");
    let commands: Vec<Vec<&str>> = vec![
        vec!["probe", "--domain", &domain],
        vec!["ps", "--domain", &domain],
        vec!["ps", "--watch", "--domain", &domain],
        vec!["run", "--plugin", path(&lib), "--config", path(&config), "--domain", &domain, "--cpus", "1"],
    ];
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT, libc::SIGHUP];
    let (mut injected, mut left_paused, mut left_parked) = (0, 0, 0);
    for round in 0..24u64 {
        let args = &commands[usize::try_from(round).expect("small") % commands.len()];
        let is_run = args[0] == "run";
        // SIGHUP reloads the loop's policy: it is not a stop for `run`.
        let signal = signals[usize::try_from(round / 4).expect("small") % if is_run { 3 } else { 4 }];
        // Spread over attach (the RAM search, the validation pause) and the first periods.
        let delay = Duration::from_millis(20 + (round * 137) % 900);
        let mut child = Command::new(xsched_bin())
            .args(args)
            .args(["--kernels", path(&kernels)])
            .args(if is_run { vec!["--journal", path(&journal)] } else { vec![] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start xsched");
        std::thread::sleep(delay);
        send(child.id(), signal);
        injected += 1;
        let status = wait_exit(&mut child);
        // The supervisor (run) may still be closing: give it its second.
        let released = until_released_or_count(g);
        if g.qmp_status() != "running" {
            left_paused += 1;
        }
        left_parked += released;
        println!("round {round}: {} got signal {signal} after {delay:?}: {status}", args[0]);
    }
    println!("signals: {injected} injected; guest left paused {left_paused} times, tasks left parked {left_parked} times");
    assert_eq!((left_paused, left_parked), (0, 0), "something was stranded");
    assert_console_clean(g);
}

/// 0 when nothing stays parked two seconds after a stop, else how many do.
fn until_released_or_count(g: &Guest) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let parked = parked_in_guest(g);
        if parked == 0 || Instant::now() > deadline {
            return parked;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_operator_paused_vm_is_read_as_it_is_and_stays_paused() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    std::thread::sleep(Duration::from_millis(500));
    let mut operator = OperatorPause(g.operator_qmp().expect("operator monitor"));
    assert!(operator.0.stop().expect("stop"), "the operator's stop stopped a running guest");
    let kernels = kernels_dir();
    let domain = domain_arg(g);

    let probe = xsched(&["probe", "--domain", &domain, "--kernels", path(&kernels)]);
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    assert!(String::from_utf8_lossy(&probe.stderr).contains("paused by someone else"), "probe says so");
    assert_eq!(status(&mut operator.0), "paused", "probe resumed the operator's pause");

    let ps = xsched_ok(&["ps", "--domain", &domain, "--kernels", path(&kernels)]);
    assert!(ps.contains("paused by someone else"), "{ps}");
    assert!(ps.contains("victim"), "the paused guest was read: {ps}");
    assert_eq!(status(&mut operator.0), "paused", "ps resumed the operator's pause");

    let journal = g.dir().join("operator.journal");
    let lib = plugin("testing-panic");
    let config = g.dir().join("operator.conf");
    std::fs::write(&config, "after=1000000 victim").expect("config");
    let trace = g.dir().join("operator.trace");
    xsched_ok(&[
        "run", "--plugin", path(&lib), "--config", path(&config), "--domain", &domain, "--cpus", "1", "--periods", "30",
        "--journal", path(&journal), "--kernels", path(&kernels), "--trace", path(&trace),
    ]);
    assert_eq!(status(&mut operator.0), "paused", "run resumed the operator's pause");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace).expect("trace").lines().map(|l| serde_json::from_str(l).expect("trace line")).collect();
    assert!(lines.len() >= 30, "{} periods traced", lines.len());
    let parked_seen = lines.iter().flat_map(|l| l["tasks"].as_array().cloned().unwrap_or_default()).filter(|t| t["state"] == "P").count();
    assert_eq!(parked_seen, 0, "nothing is written into a guest someone else paused");
    operator.0.cont().expect("cont");
    assert_eq!(status(&mut operator.0), "running");
    assert_eq!(parked_in_guest(g), 0);
    println!("operator pause: probe, ps and 30 periods of run left it paused and wrote nothing");
    assert_console_clean(g);
}

#[test]
fn kill_9_of_the_loop_at_any_moment_strands_nothing() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    let journal = g.dir().join("kill9.journal");
    let mut times = Vec::new();
    for round in 0..12u64 {
        let (mut child, _) = start_run(g, "kill9", 1_000_000, "panic", &journal);
        until_parked(&journal);
        std::thread::sleep(Duration::from_millis((round * 71) % 400));
        send(child.id(), libc::SIGKILL);
        let killed = Instant::now();
        wait_exit(&mut child);
        times.push(until_released(g, killed));
        let said = stderr_of(&mut child);
        assert!(!said.contains("panicked"), "{said}");
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    println!("kill -9 of the loop: {} kills, every parked task released, the guest running: {:?} (worst {worst:?})", times.len(), times);
    assert!(worst < Duration::from_secs(5), "released only after {worst:?}");
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "the supervisor emptied the journal");
    assert_runqueues_consistent(g, "kill9");
    assert_console_clean(g);
}

#[test]
fn plugins_that_abort_segfault_or_hang_leave_nothing_parked() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    let journal = g.dir().join("plugin-faults.journal");
    for how in ["abort", "segfault", "hang"] {
        let (mut child, _) = start_run(g, how, 50, how, &journal);
        let status = wait_exit(&mut child);
        let ended = Instant::now();
        let said = stderr_of(&mut child);
        assert!(!status.success(), "{how}: the loop ended with {status}");
        let took = until_released(g, ended);
        println!("plugin that {how}s: loop {status}, released {took:?} later; it said: {}", said.trim());
        if how == "hang" {
            assert!(said.contains("stalled"), "{how}: the supervisor says the loop stalled: {said}");
        }
        assert!(said.contains("released"), "{how}: the supervisor says it released: {said}");
    }
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0);
    assert_console_clean(g);
}

#[test]
fn both_processes_killed_leave_a_journal_that_release_restores_even_torn() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    let journal = g.dir().join("both.journal");
    let (mut child, supervisor) = start_run(g, "both", 1_000_000, "panic", &journal);
    until_parked(&journal);
    std::thread::sleep(Duration::from_millis(500));
    send(supervisor, libc::SIGKILL);
    send(child.id(), libc::SIGKILL);
    wait_exit(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    if g.qmp_status() != "running" {
        // Killed inside a pause with nobody left to undo it: the operator's monitor resumes it,
        // as an operator would.
        g.operator_qmp().expect("operator").cont().expect("cont");
    }
    assert!(parked_in_guest(g) > 0, "with both processes dead the parks stay until a release");
    // A crash in the middle of an append leaves a torn last line.
    std::fs::OpenOptions::new().append(true).open(&journal).expect("journal").write_all(b"{\"op\":\"park\",\"domain\":\"fau").expect("tear");
    let out = xsched(&["release", "--all", "--journal", path(&journal), "--kernels", path(&kernels_dir())]);
    assert!(out.status.success(), "release: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unparked pid"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(parked_in_guest(g), 0, "release --all left a task parked");
    assert_console_clean(g);
}

#[test]
fn a_monitor_held_by_another_client_is_an_error_within_seconds_naming_why() {
    let _serial = serial();
    let g = lab();
    // QEMU serves one QMP client at a time: while this one is connected, xsched's is queued and
    // never greeted — a silent server.
    let _held = g.qmp().expect("hold the monitor");
    let started = Instant::now();
    let out = Command::new(xsched_bin())
        .args(["probe", "--domain", &domain_arg(g), "--kernels", path(&kernels_dir())])
        .env("XSCHED_QMP_WAIT", "1")
        .output()
        .expect("run xsched probe");
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    println!("silent monitor: probe gave up after {took:?}: {}", said.trim());
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert!(said.contains("another client may hold the monitor"), "{said}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(g.qmp_status(), "running", "the guest was never paused");
}

#[test]
fn a_guest_rewriting_its_task_list_while_the_loop_reads_it_running_is_written_into_only_correctly() {
    let _serial = serial();
    let g = lab();
    let _victims = Victims::start(g);
    // The loop reads this guest while it runs: task lists, trees and states change under it.
    // Three shells fork and reap short-lived processes as fast as they can.
    let churn = g
        .exec_ok("for i in 1 2 3; do (while :; do /bin/true; done) </dev/null >/dev/null 2>&1 & echo $!; done")
        .expect("start the churn");
    let journal = g.dir().join("racy.journal");
    let (mut child, _) = start_run(g, "racy", 1_000_000, "panic", &journal);
    until_parked(&journal);
    std::thread::sleep(Duration::from_secs(8));
    send(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child);
    g.exec_ok(&format!("kill {}", churn.split_whitespace().collect::<Vec<_>>().join(" "))).expect("stop the churn");
    assert!(status.success(), "the loop ended with {status}: {}", stderr_of(&mut child));
    assert_eq!(parked_in_guest(g), 0, "a task stayed parked");
    assert_runqueues_consistent(g, "racy");
    assert_console_clean(g);
}
