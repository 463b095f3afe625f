//! The `libvirt:` backend against a real libvirtd: the lab starts a private `libvirtd`
//! (Debian's, as root, in its own mount namespace: [`xsched_lab::Libvirtd`]) and boots a lab
//! guest as its TCG domain (`type='qemu'`, anonymous RAM, libvirt holding the only monitor).
//! xsched names the domain by its libvirt name: `xsched ps` lists its processes as its own
//! `/proc` does and finds the QEMU libvirt's pid file names, park/unpark stop and restart a CPU
//! hog as the guest measures it, `xsched run` (fairshare on one host CPU) parks and unparks the
//! hogs in turn and leaves nothing parked, and none of it leaves the domain paused, not even a
//! loop killed with SIGKILL while it parks (its supervisor, forked with the loop's libvirt
//! connection, reopens the domain on a connection of its own and releases); a suspend
//! by someone else (`virsh suspend`) is read through and left in place. A domain that does not
//! exist, one that is shut off and a libvirt that does not listen are each refused in one line.
//! One boot per kernel; the daemon and the domain are stopped when the test binary exits.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{kernels_dir, plugin, xsched, xsched_ok};
use serde_json::Value;
use xsched::memory::qmp::WAIT_VAR;
use xsched_lab::{libvirt, Guest, GuestSpec, Lab, Libvirtd, Workload, QMP_WAIT};

const WAIT: Duration = Duration::from_secs(60);
/// The defined domain that is never started.
const SHUT_OFF: &str = "dormant";

/// The daemon and its one running domain.
struct LibvirtLab {
    daemon: Libvirtd,
    guest: Guest,
}

/// Starts the daemon, boots the domain `lv` (two CPU hogs and a sleeper on two vCPUs) and
/// defines a second one it never starts.
fn lab() -> &'static LibvirtLab {
    static LAB: OnceLock<Result<LibvirtLab, String>> = OnceLock::new();
    let lab = LAB.get_or_init(|| {
        let daemon = Libvirtd::start().map_err(|e| e.to_string())?;
        let spec = GuestSpec::new("lv")
            .anonymous_ram(true)
            .vcpus(2)
            .workload(Workload::cpu("hog").count(2))
            .workload(Workload::sleep("snooze"))
            .view_interval_ms(1000)
            .view_kthreads(false);
        let guest = Lab::boot_libvirt(&daemon, &[spec]).map_err(|e| e.to_string())?.pop().ok_or("no guest")?;
        let dormant = libvirt::domain_xml(&GuestSpec::new(SHUT_OFF).anonymous_ram(true), guest.kernel(), daemon.dir());
        daemon.define(SHUT_OFF, &dormant).map_err(|e| e.to_string())?;
        Ok(LibvirtLab { daemon, guest })
    });
    match lab {
        Ok(lab) => lab,
        Err(e) => panic!("libvirt lab: {e}"),
    }
}

/// The tests that change the guest's run state or park: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kernels() -> String {
    kernels_dir().to_str().expect("utf-8 path").to_owned()
}

/// `NAME=libvirt:DOMAIN,uri=…` for domain `domain` of the lab's daemon.
fn domain_arg(domain: &str) -> String {
    format!("{domain}=libvirt:{domain},uri={}", lab().daemon.uri())
}

/// The domain is running, as libvirt says: xsched left no pause behind.
fn assert_running() {
    assert_eq!(lab().daemon.domstate("lv").expect("domstate"), "running", "the domain was left paused");
}

#[test]
fn ps_lists_every_process_as_the_guest_sees_it_through_the_qemu_libvirt_started() {
    let _serial = serial();
    let g = &lab().guest;
    let before = g.next_view(WAIT).expect("view before");
    let out = xsched(&["ps", "-v", "--json", "--domain", &domain_arg("lv")]);
    assert!(out.status.success(), "xsched ps: {}", String::from_utf8_lossy(&out.stderr));
    let after = g.next_view(WAIT).expect("view after");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("QEMU pid {},", g.qemu_pid())), "xsched found another QEMU than libvirt's pid file names ({}): {log}", g.qemu_pid());
    let table: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    let rows: BTreeMap<u64, &Value> = table["tasks"].as_array().expect("tasks").iter().map(|t| (t["key"]["pid"].as_u64().expect("pid"), t)).collect();
    let domain = &table["domains"][0];
    assert!(domain["problems"].as_array().is_some_and(Vec::is_empty), "partial table: {domain}");
    assert_eq!(domain["paused_by_others"], false, "{domain}");
    let mut compared = 0;
    for p in &before.procs {
        let Some(later) = after.get(p.pid).filter(|l| l.start_time == p.start_time) else { continue };
        let row = rows.get(&u64::from(p.pid)).unwrap_or_else(|| panic!("pid {} ({}) missing from xsched ps", p.pid, p.comm));
        assert_eq!(row["comm"], p.comm.as_str(), "pid {}", p.pid);
        let runtime = row["runtime_ns"].as_u64().expect("runtime");
        assert!(p.run_ns <= runtime && runtime <= later.run_ns, "pid {} runtime {runtime} not in [{}, {}]", p.pid, p.run_ns, later.run_ns);
        compared += 1;
    }
    assert!(compared >= 4, "only {compared} processes compared");
    for pid in g.pids_of("hog") {
        assert_eq!(rows[&u64::from(pid)]["state"], "R", "hog {pid}");
    }
    for pid in g.pids_of("snooze") {
        assert_eq!(rows[&u64::from(pid)]["state"], "S", "snooze {pid}");
    }
    assert_running();
}

#[test]
fn a_parked_hog_stops_and_resumes() {
    let _serial = serial();
    let g = &lab().guest;
    let journal = g.dir().join("journal-libvirt.jsonl");
    let journal = journal.to_str().expect("utf-8");
    let dom = domain_arg("lv");
    let kernels = kernels();
    let cli = |verb: &str, pid: u32| xsched_ok(&[verb, "--domain", &dom, &pid.to_string(), "--journal", journal, "--kernels", &kernels]);
    let runtime = |pid: u32| {
        let view = g.next_view(WAIT).expect("view");
        let p = view.get(pid).unwrap_or_else(|| panic!("pid {pid} not in the view"));
        (p.run_ns, p.state)
    };
    let (pid, other) = (g.pids_of("hog")[0], g.pids_of("hog")[1]);
    cli("park", pid);
    assert_running();
    let (a, state) = runtime(pid);
    let (b, _) = runtime(pid);
    assert_eq!(state, 'P', "pid {pid} shows as parked in the guest");
    assert_eq!(a, b, "pid {pid} ran while parked");
    let (o1, _) = runtime(other);
    let (o2, _) = runtime(other);
    assert!(o2 > o1, "the other hog keeps running");
    cli("unpark", pid);
    assert_running();
    let (c, _) = runtime(pid);
    let (d, state) = runtime(pid);
    assert_eq!(state, 'R', "pid {pid} runs again");
    assert!(d > c, "pid {pid} accumulates runtime after unpark ({c} then {d})");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn the_loop_takes_turns_between_the_hogs_and_leaves_nothing_parked_or_paused() {
    let _serial = serial();
    let g = &lab().guest;
    let config = g.dir().join("libvirt-fairshare.toml");
    std::fs::write(&config, "half_life_ms = 200\n[[group]]\nname = \"hogs\"\nweight = 1\nmatch = { comm = \"hog\" }\n").expect("config");
    let (trace, journal) = (g.dir().join("libvirt.trace"), g.dir().join("libvirt.journal"));
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let lib = plugin("fairshare");
    xsched_ok(&[
        "run", "--plugin", &path(&lib), "--config", &path(&config), "--domain", &domain_arg("lv"), "--cpus", "1",
        "--period", "10", "--periods", "300", "--trace", &path(&trace), "--journal", &path(&journal), "--kernels", &kernels(),
    ]);
    assert_running();
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "everything was released");
    let view = g.next_view(WAIT).expect("view after the run");
    assert!(view.procs.iter().all(|p| p.state != 'P'), "parked tasks left after the run");
    let lines: Vec<Value> = std::fs::read_to_string(&trace).expect("trace").lines().map(|l| serde_json::from_str(l).expect("trace line")).collect();
    let decisions = |pid: u32, decision: &str| {
        lines.iter().flat_map(|l| l["tasks"].as_array().cloned().unwrap_or_default()).filter(|t| t["pid"].as_u64() == Some(u64::from(pid)) && t["decision"] == decision).count()
    };
    for pid in g.pids_of("hog") {
        assert!(decisions(pid, "park") > 0 && decisions(pid, "unpark") > 0, "hog {pid} was never parked and unparked in {} trace lines", lines.len());
    }
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn a_loop_killed_with_sigkill_leaves_nothing_parked_or_paused() {
    let _serial = serial();
    let g = &lab().guest;
    let config = g.dir().join("libvirt-kill9.toml");
    std::fs::write(&config, "half_life_ms = 200\n[[group]]\nname = \"hogs\"\nweight = 1\nmatch = { comm = \"hog\" }\n").expect("config");
    let journal = g.dir().join("libvirt-kill9.journal");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let lib = plugin("fairshare");
    let mut child = Command::new(common::xsched_bin())
        .args(["run", "--plugin", &path(&lib), "--config", &path(&config), "--domain", &domain_arg("lv"), "--cpus", "1", "--period", "10"])
        .args(["--journal", &path(&journal), "--kernels", &kernels()])
        .env(WAIT_VAR, QMP_WAIT.as_secs().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xsched run");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("first line");
    let supervisor = common::supervisor_pid(&first);
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "nothing parked within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    child.wait().expect("wait for the loop");
    let killed = Instant::now();
    while libvirt::process_alive(supervisor) {
        assert!(killed.elapsed() < WAIT, "the supervisor {supervisor} still runs after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut said = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut said).expect("stderr");
    assert!(said.contains("released"), "the supervisor says it released: {said}");
    assert_running();
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "the supervisor emptied the journal");
    let view = g.next_view(WAIT).expect("view after the kill");
    assert!(view.procs.iter().all(|p| p.state != 'P'), "parked tasks left after the loop was killed");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn a_suspend_by_someone_else_is_read_through_and_left_in_place() {
    let _serial = serial();
    let daemon = &lab().daemon;
    daemon.virsh(&["suspend", "lv"]).expect("virsh suspend");
    let out = xsched(&["ps", "--json", "--domain", &domain_arg("lv")]);
    let state = daemon.domstate("lv").expect("domstate");
    daemon.virsh(&["resume", "lv"]).expect("virsh resume");
    assert!(out.status.success(), "xsched ps of a suspended domain: {}", String::from_utf8_lossy(&out.stderr));
    let table: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    assert_eq!(table["domains"][0]["paused_by_others"], true, "{}", table["domains"][0]);
    assert!(table["tasks"].as_array().is_some_and(|t| t.len() > 4), "{table}");
    assert_eq!(state, "paused", "xsched resumed a domain someone else had suspended");
    assert_running();
}

/// The same guest read by `xsched ps` through libvirt and, as the in-run baseline, through the
/// lab's second QMP monitor (`qemu-process:`): the guest pause each reports, median of five
/// alternated runs. Printed, not asserted (a measurement; the machine is shared).
#[test]
fn the_pause_through_libvirt_beside_the_pause_through_qmp() {
    let _serial = serial();
    let g = &lab().guest;
    let pause_us = |domain: &str| {
        let table: Value = serde_json::from_str(&xsched_ok(&["ps", "--json", "--domain", domain])).expect("ps --json");
        assert!(table["tasks"].as_array().is_some_and(|t| t.len() > 4), "{table}");
        table["domains"][0]["pause_us"].as_u64().expect("pause_us")
    };
    let qmp = format!("lv=qemu-process:{}", g.qmp_socket().display());
    let (mut through_libvirt, mut through_qmp): (Vec<u64>, Vec<u64>) = (0..5).map(|_| (pause_us(&domain_arg("lv")), pause_us(&qmp))).unzip();
    through_libvirt.sort_unstable();
    through_qmp.sort_unstable();
    println!("ps pause, median of 5: through libvirt {} us {through_libvirt:?}, through QMP {} us {through_qmp:?}", through_libvirt[2], through_qmp[2]);
    assert_running();
}

#[test]
fn a_missing_or_shut_off_domain_and_an_unreachable_libvirt_are_one_line_each() {
    let uri = lab().daemon.uri();
    let nowhere = lab().daemon.dir().join("nobody-listens.sock");
    for (spec, expected) in [
        (format!("x=libvirt:nosuch,uri={uri}"), format!("libvirt at {uri} has no domain named \"nosuch\"")),
        (domain_arg(SHUT_OFF), format!("libvirt domain \"{SHUT_OFF}\" is shut off: it has no QEMU to attach to (start it: virsh start {SHUT_OFF})")),
        (format!("x=libvirt:lv,uri=qemu:///system?socket={}", nowhere.display()), format!("cannot connect to libvirt at qemu:///system?socket={}: ", nowhere.display())),
    ] {
        let out = xsched(&["ps", "--domain", &spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec}: succeeded");
        assert_eq!(stderr.lines().count(), 1, "{spec}: not one line: {stderr}");
        assert!(stderr.contains(&expected), "{spec}: {stderr}");
    }
    let out = xsched(&["ps", "--domain", &format!("x=libvirt:lv,uri=qemu:///system?socket={}", nowhere.display())]);
    assert!(String::from_utf8_lossy(&out.stderr).trim_end().ends_with("(is libvirtd running?)"), "{}", String::from_utf8_lossy(&out.stderr));
}
