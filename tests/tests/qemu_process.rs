//! The `qemu-process:` backend against an unmodified QEMU: a lab guest started with `-m SIZE`
//! and a QMP socket only (anonymous RAM, no shared file). `xsched probe` finds its kernel where
//! the guest says it is, `xsched ps` lists its processes as its own `/proc` does, and park/unpark
//! stop and restart a CPU hog, measured by the guest, and `xsched run` (fairshare on one host CPU)
//! parks and unparks the guest's hogs in turn and leaves nothing parked. Bare QEMUs (`-S`, no kernel, so nothing
//! runs) show that writes reach what QEMU itself sees, that a pause someone else holds is left
//! alone, that a QEMU that exits is a clean error, and that a QEMU with file-backed RAM or a pid
//! that is not a QEMU are refused in one line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{domain_arg, kernels_dir, plugin, xsched, xsched_ok};
use serde_json::Value;
use xsched::memory::qemu_process::QemuProcessMemory;
use xsched::memory::qmp::QmpClient;
use xsched::memory::{GuestMemory, Gpa, MemoryError, Pause};
use xsched_lab::{shared_lab, Guest, GuestSpec, Workload};

const WAIT: Duration = Duration::from_secs(60);

/// One guest with anonymous RAM: two CPU hogs and a sleeper on two vCPUs.
fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![GuestSpec::new("anon")
            .anonymous_ram(true)
            .vcpus(2)
            .workload(Workload::cpu("hog").count(2))
            .workload(Workload::sleep("snooze"))
            .view_interval_ms(1000)
            .view_kthreads(false)]
    })
}

/// The tests that park share the guest: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kernels() -> String {
    kernels_dir().to_str().expect("utf-8 path").to_owned()
}

#[test]
fn the_lab_guest_has_no_ram_file() {
    let g = &lab()[0];
    assert!(!g.ram_file().exists(), "{} exists", g.ram_file().display());
    assert!(domain_arg(g).contains("=qemu-process:"), "{}", domain_arg(g));
}

#[test]
fn probe_finds_the_kernel_where_the_guest_says_it_is() {
    let g = &lab()[0];
    let out = xsched_ok(&["probe", "--json", "--kernels", &kernels(), "--domain", &domain_arg(g)]);
    let p: Value = serde_json::from_str(&out).expect("probe prints JSON");
    eprintln!("{p}");
    let text = g.exec_ok("awk '$3 == \"_text\" { print $1 }' /proc/kallsyms").expect("kallsyms");
    let iomem = g.exec_ok("grep 'Kernel code' /proc/iomem").expect("iomem");
    let phys = iomem.trim().split('-').next().expect("range");
    assert_eq!(p["release"], g.exec_ok("uname -r").expect("uname").trim());
    assert_eq!(p["virt_text"].as_u64(), u64::from_str_radix(text.trim(), 16).ok(), "virtual _text");
    assert_eq!(p["phys_text"].as_u64(), u64::from_str_radix(phys.trim(), 16).ok(), "physical _text");
    assert_eq!(p["online_cpus"].as_array().map(Vec::len), Some(2));
}

#[test]
fn ps_lists_every_process_as_the_guest_sees_it() {
    let g = &lab()[0];
    let before = g.next_view(WAIT).expect("view before");
    let table: Value = serde_json::from_str(&xsched_ok(&["ps", "--json", "--domain", &domain_arg(g)])).expect("ps --json");
    let after = g.next_view(WAIT).expect("view after");
    let rows: BTreeMap<u64, &Value> = table["tasks"].as_array().expect("tasks").iter().map(|t| (t["key"]["pid"].as_u64().expect("pid"), t)).collect();
    let domain = &table["domains"][0];
    assert!(domain["problems"].as_array().is_some_and(Vec::is_empty), "partial table: {domain}");
    for p in &before.procs {
        let Some(later) = after.get(p.pid).filter(|l| l.start_time == p.start_time) else { continue };
        let row = rows.get(&u64::from(p.pid)).unwrap_or_else(|| panic!("pid {} ({}) missing from xsched ps", p.pid, p.comm));
        assert_eq!(row["comm"], p.comm.as_str(), "pid {}", p.pid);
        let runtime = row["runtime_ns"].as_u64().expect("runtime");
        assert!(p.run_ns <= runtime && runtime <= later.run_ns, "pid {} runtime {runtime} not in [{}, {}]", p.pid, p.run_ns, later.run_ns);
    }
    for pid in g.pids_of("hog") {
        assert_eq!(rows[&u64::from(pid)]["state"], "R", "hog {pid}");
    }
    for pid in g.pids_of("snooze") {
        assert_eq!(rows[&u64::from(pid)]["state"], "S", "snooze {pid}");
    }
}

#[test]
fn a_parked_hog_stops_and_resumes() {
    let _serial = serial();
    let g = &lab()[0];
    let journal = g.dir().join("journal-qemu-process.jsonl");
    let journal = journal.to_str().expect("utf-8");
    let dom = domain_arg(g);
    let kernels = kernels();
    let cli = |verb: &str, pid: u32| xsched_ok(&[verb, "--domain", &dom, &pid.to_string(), "--journal", journal, "--kernels", &kernels]);
    let runtime = |pid: u32| {
        let view = g.next_view(WAIT).expect("view");
        let p = view.get(pid).unwrap_or_else(|| panic!("pid {pid} not in the view"));
        (p.run_ns, p.state)
    };
    let (pid, other) = (g.pids_of("hog")[0], g.pids_of("hog")[1]);
    cli("park", pid);
    let (a, state) = runtime(pid);
    let (b, _) = runtime(pid);
    assert_eq!(state, 'P', "pid {pid} shows as parked in the guest");
    assert_eq!(a, b, "pid {pid} ran while parked");
    let (o1, _) = runtime(other);
    let (o2, _) = runtime(other);
    assert!(o2 > o1, "the other hog keeps running");
    cli("unpark", pid);
    let (c, _) = runtime(pid);
    let (d, state) = runtime(pid);
    assert_eq!(state, 'R', "pid {pid} runs again");
    assert!(d > c, "pid {pid} accumulates runtime after unpark ({c} then {d})");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
}

#[test]
fn the_loop_takes_turns_between_the_hogs_and_leaves_nothing_parked() {
    let _serial = serial();
    let g = &lab()[0];
    let config = g.dir().join("qemu-process-fairshare.toml");
    std::fs::write(&config, "half_life_ms = 200\n[[group]]\nname = \"hogs\"\nweight = 1\nmatch = { comm = \"hog\" }\n").expect("config");
    let (trace, journal) = (g.dir().join("qemu-process.trace"), g.dir().join("qemu-process.journal"));
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let lib = plugin("fairshare");
    xsched_ok(&[
        "run", "--plugin", &path(&lib), "--config", &path(&config), "--domain", &domain_arg(g), "--cpus", "1",
        "--period", "10", "--periods", "300", "--trace", &path(&trace), "--journal", &path(&journal), "--kernels", &kernels(),
    ]);
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
fn a_pid_given_must_be_the_qemu_behind_the_socket() {
    let g = &lab()[0];
    let right = format!("x=qemu-process:{},pid={}", g.qmp_socket().display(), g.qemu_pid());
    let table: Value = serde_json::from_str(&xsched_ok(&["ps", "--json", "--domain", &right])).expect("ps --json");
    assert!(table["tasks"].as_array().is_some_and(|t| !t.is_empty()), "{table}");
    let out = xsched(&["ps", "--domain", &format!("x=qemu-process:{},pid=1", g.qmp_socket().display())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pid 1 is not a QEMU to attach to") && stderr.contains("is served by pid"), "{stderr}");
}

/// A q35 QEMU that runs nothing (`-S`, no kernel), 128 MiB, its socket in `dir`; `extra` adds arguments.
struct BareQemu {
    child: Child,
    socket: std::path::PathBuf,
}

impl BareQemu {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("bare.qmp");
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-S", "-machine", "q35", "-accel", "tcg", "-m", "128M", "-display", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .args(extra)
            .stdin(Stdio::null());
        let child = command.spawn().expect("spawn qemu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no QMP socket from the bare QEMU");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }
}

impl Drop for BareQemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn writes_reach_qemu_a_held_pause_stays_and_an_exit_is_a_clean_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut qemu = BareQemu::start(dir.path(), &[]);
    let mut mem = QemuProcessMemory::open(&qemu.socket, None).expect("attach");
    assert_eq!(mem.pid(), qemu.child.id());
    assert_eq!(mem.ram_size(), (128 << 20) - 0x60000, "RAM less the legacy hole at 640 KiB - 1 MiB");
    // -S: stopped from the start, by someone else, so xsched's pause is not its own to undo.
    assert_eq!(mem.pause().expect("pause"), Pause::HeldByOthers);
    mem.write_u64(Gpa(0x20_0ff8), 0x1122_3344_5566_7788).expect("write across a page");
    mem.write_u64(Gpa(0x20_1000), 0x99aa_bbcc_ddee_ff00).expect("write");
    assert_eq!(mem.read_u64(Gpa(0x20_0ff8)).expect("read"), 0x1122_3344_5566_7788);
    mem.resume().expect("resume");
    drop(mem);
    let mut qmp = QmpClient::connect(&qemu.socket).expect("qmp");
    let seen = qmp.human_command("xp /2gx 0x200ff8").expect("xp");
    assert!(seen.contains("0x1122334455667788") && seen.contains("0x99aabbccddeeff00"), "QEMU sees {seen:?}");
    // `-S` leaves the VM in "prelaunch" (not "paused"): not running, whatever the name.
    let status = qmp.execute("query-status", None).expect("status");
    assert_eq!(status["running"], false, "a pause someone else held was undone: {status}");
    drop(qmp);
    let mem = QemuProcessMemory::open(&qemu.socket, Some(qemu.child.id())).expect("attach by pid");
    assert!(matches!(mem.read_u64(Gpa(0x9_fff8)), Ok(0)));
    assert!(matches!(mem.read_u64(Gpa(0xa_0000)), Err(MemoryError::OutOfRange { .. })), "the VGA window is no RAM");
    qemu.child.kill().expect("kill");
    qemu.child.wait().expect("wait");
    let error = mem.read_u64(Gpa(0x1000)).expect_err("QEMU is gone");
    assert!(matches!(error, MemoryError::ProcessGone { .. }), "{error}");
    assert!(matches!(mem.check_backing(), Err(MemoryError::ProcessGone { .. })));
    assert_eq!(error.to_string(), format!("QEMU process {} has exited", qemu.child.id()));
}

#[test]
fn a_qemu_with_file_backed_ram_and_a_silent_socket_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ram = dir.path().join("ram");
    let object = format!("memory-backend-file,id=mem,size=128M,mem-path={},share=on", ram.display());
    let qemu = BareQemu::start(dir.path(), &["-machine", "memory-backend=mem", "-object", &object]);
    let error = QemuProcessMemory::open(&qemu.socket, None).expect_err("file-backed RAM");
    assert!(error.to_string().contains("no anonymous read-write mapping of 0x8000000 bytes"), "{error}");
    drop(qemu);
    // A socket nobody answers on: the QMP greeting never comes.
    let silent = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    let error = QemuProcessMemory::open(&silent, None).expect_err("silent socket");
    assert!(matches!(error, MemoryError::Qmp { .. }), "{error}");
}
