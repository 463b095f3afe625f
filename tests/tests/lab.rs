//! End-to-end tests of the lab itself: real guests under QEMU, on the kernel `XSCHED_LAB_KERNEL`
//! chooses (default 6.1). Nothing here needs xsched to read a guest.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xsched_lab::{guest, shared_lab, Guest, GuestSpec, KernelPin, Lab, LabError, Steer, Workload};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const VIEW_WAIT: Duration = Duration::from_secs(60);

/// Two guests shared by the tests below.
fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![
            GuestSpec::new("u1")
                .vcpus(2)
                .memory_mib(256)
                .workload(Workload::cpu("db"))
                .workload(Workload::phases("web", 200, 300))
                .workload(Workload::cpu("bkup").in_cgroup("g1"))
                .view_interval_ms(1000),
            GuestSpec::new("u2")
                .workload(Workload::sleep("idler"))
                .workload(Workload::cpu("batch").count(2).in_cgroup("g2/sub"))
                .view_interval_ms(500)
                .view_kthreads(false),
        ]
    })
}

/// A steered workload sleeps until told to spin and spins until told to sleep, as the guest's own
/// /proc says; pinning QEMU to one host CPU shows in the host's /proc.
#[test]
fn steered_workloads_follow_the_host_and_qemu_can_be_pinned() -> TestResult {
    let g = guest(lab(), "u2");
    let pids = g.start_workload(&Workload::steered("tide").count(2))?;
    let state = |pid: u32| -> Result<String, LabError> {
        let stat = g.exec_ok(&format!("cat /proc/{pid}/stat"))?;
        Ok(stat.rsplit_once(") ").map_or(String::new(), |(_, rest)| rest[..1].to_owned()))
    };
    let settle = || std::thread::sleep(Duration::from_millis(300));
    settle();
    let before = g.cpu_times(&pids)?;
    settle();
    let idle = g.cpu_times(&pids)?;
    for pid in &pids {
        assert_eq!(state(*pid)?, "S", "a steered workload starts idle");
        assert!(idle.run_ns[pid] - before.run_ns[pid] < 20_000_000, "idle, yet it ran: {before:?} {idle:?}");
    }
    g.steer(&[("tide", Steer::Busy)])?;
    settle();
    let busy_start = g.cpu_times(&pids)?;
    settle();
    let busy = g.cpu_times(&pids)?;
    assert!(busy.uptime > busy_start.uptime);
    for pid in &pids {
        assert!(busy.run_ns[pid] - busy_start.run_ns[pid] > 20_000_000, "busy, yet it did not run: {busy_start:?} {busy:?}");
    }
    g.steer(&[("tide", Steer::Idle)])?;
    settle();
    for pid in &pids {
        assert_eq!(state(*pid)?, "S", "told to idle");
    }
    assert!(g.steer(&[("nosuch", Steer::Busy)]).is_err(), "an unknown workload is an error");

    g.pin_to_host_cpus(&[0])?;
    let threads = std::fs::read_dir(format!("/proc/{}/task", g.qemu_pid()))?;
    for thread in threads {
        let status = std::fs::read_to_string(thread?.path().join("status"))?;
        let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(str::trim);
        assert_eq!(allowed, Some("0"), "{status}");
    }
    let all: Vec<usize> = (0..std::thread::available_parallelism()?.get()).collect();
    g.pin_to_host_cpus(&all)?;
    g.exec_ok("kill -9 $(pidof tide)")?;
    Ok(())
}

#[test]
fn both_guests_become_ready_on_the_chosen_kernel() -> TestResult {
    let chosen = KernelPin::selected()?;
    for g in lab() {
        let boot = g.boot_time();
        eprintln!("guest {}: ready after {boot:?} on kernel {}", g.name(), g.kernel().pin);
        assert!(boot.is_some(), "{} has no boot time", g.name());
        assert!(g.is_running());
        assert!(g.qmp_socket().exists() && g.control_socket().exists() && g.console_path().exists());
        assert!(g.console_text().contains("XSCHED-LAB READY"));
        assert_eq!(g.kernel().pin, chosen, "{}", g.name());
        assert_eq!(g.exec_ok("uname -r")?.trim(), chosen.release, "{}: the kernel it runs", g.name());
    }
    Ok(())
}

/// The guest's init loaded `qemu_fw_cfg`, so QEMU's dump carries the kernel's VMCOREINFO note.
#[test]
fn a_dump_carries_the_guest_kernels_vmcoreinfo() -> TestResult {
    let g = guest(lab(), "u2");
    assert_eq!(g.exec("lsmod | grep -q '^qemu_fw_cfg '")?.0, 0, "qemu_fw_cfg is not loaded");
    let core = g.dir().join("lab-test.core");
    g.qmp()?.dump_guest_memory(&core)?;
    let info = common::vmcoreinfo(&core);
    std::fs::remove_file(&core)?;
    assert_eq!(info.get("OSRELEASE"), Some(&g.kernel().pin.release), "VMCOREINFO: {info:?}");
    assert!(info.contains_key("KERNELOFFSET"), "VMCOREINFO: {info:?}");
    Ok(())
}

#[test]
fn ram_file_has_the_guest_size() -> TestResult {
    for g in lab() {
        let len = std::fs::metadata(g.ram_file())?.len();
        assert_eq!(len, u64::from(g.spec().memory_mib) << 20, "{}", g.name());
    }
    Ok(())
}

#[test]
fn views_list_every_workload_with_its_comm() -> TestResult {
    for g in lab() {
        let view = g.next_view(VIEW_WAIT)?;
        let started = g.workload_pids();
        for w in &g.spec().workloads {
            let seen: Vec<u32> = view.by_comm(&w.name).iter().map(|p| p.pid).collect();
            assert_eq!(seen.len(), w.count as usize, "{}: {} in view round {}", g.name(), w.name, view.round);
            assert_eq!(started.get(&w.name), Some(&seen), "{}: pids of {}", g.name(), w.name);
        }
        // The lab's own processes are there too, and PID 1 is busybox init.
        assert_eq!(view.get(1).map(|p| p.comm.as_str()), Some("init"));
        assert_eq!(view.by_comm("view").len(), 1);
        let kthreads = view.procs.iter().filter(|p| p.is_kthread()).count();
        assert_eq!(kthreads > 0, g.spec().view_kthreads, "{}: {kthreads} kernel threads listed", g.name());
    }
    Ok(())
}

#[test]
fn cpu_workload_accumulates_user_time() -> TestResult {
    let u1 = guest(lab(), "u1");
    let first = u1.next_view(VIEW_WAIT)?;
    let second = u1.wait_view_after(first.round, VIEW_WAIT)?;
    assert!(second.uptime > first.uptime);
    for name in ["db", "bkup"] {
        let (a, b) = (first.by_comm(name)[0], second.by_comm(name)[0]);
        assert_eq!(a.pid, b.pid);
        assert!(b.utime > a.utime, "{name}: utime {} -> {}", a.utime, b.utime);
        assert!(b.run_ns > a.run_ns && b.slices >= a.slices, "{name}: schedstat did not grow");
        assert_eq!(b.state, 'R', "{name} spins");
    }
    let (a, b) = (first.by_comm("web")[0], second.by_comm("web")[0]);
    assert!(b.run_ns > a.run_ns, "web runs in its busy phases");
    let idler = |v: &xsched_lab::ProcView| v.by_comm("idler")[0].clone();
    let u2 = guest(lab(), "u2");
    let (i1, i2) = (idler(&u2.next_view(VIEW_WAIT)?), idler(&u2.next_view(VIEW_WAIT)?));
    assert_eq!((i1.state, i1.run_ns), (i2.state, i2.run_ns), "idler sleeps");
    assert_eq!(i1.state, 'S');
    Ok(())
}

#[test]
fn cgroup_workloads_are_in_their_cgroups() -> TestResult {
    for (guest_name, workload, group) in [("u1", "bkup", "/g1"), ("u2", "batch", "/g2/sub")] {
        let g = guest(lab(), guest_name);
        let pids = g.pids_of(workload);
        assert!(!pids.is_empty());
        for pid in pids {
            let out = g.exec_ok(&format!("cat /proc/{pid}/cgroup"))?;
            assert_eq!(out, format!("0::{group}\n"), "{guest_name}: {workload} pid {pid}");
        }
        let (_, controllers) = g.exec(&format!("cat /sys/fs/cgroup{group}/cgroup.controllers"))?;
        assert!(controllers.contains("cpu"), "cpu controller in {group}: {controllers:?}");
    }
    let out = guest(lab(), "u1").exec_ok(&format!("cat /proc/{}/cgroup", guest(lab(), "u1").pids_of("db")[0]))?;
    assert_eq!(out, "0::/\n");
    Ok(())
}

#[test]
fn exec_returns_output_and_exit_code() -> TestResult {
    let g = guest(lab(), "u2");
    assert_eq!(g.exec("echo hello; echo oops >&2; exit 3")?, (3, "hello\noops\n".to_owned()));
    assert_eq!(g.exec("printf 'no newline'")?, (0, "no newline".to_owned()));
    assert_eq!(g.exec("true")?, (0, String::new()));
    assert_eq!(g.exec("echo \"a  'b'\" $((6 * 7))")?, (0, "a  'b' 42\n".to_owned()));
    let (code, out) = g.exec("cat /nonexistent")?;
    assert_eq!(code, 1);
    assert!(out.contains("No such file"), "{out:?}");
    assert!(matches!(g.exec("echo a\necho b"), Err(LabError::Exec { .. })));
    // A command that outlives its time limit does not confuse the next one.
    assert!(g.exec_timeout("sleep 2; echo late", Duration::from_millis(300)).is_err());
    assert_eq!(g.exec("echo next")?, (0, "next\n".to_owned()));
    // Larger output comes through intact.
    let (code, out) = g.exec("seq 1 2000")?;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2000);
    assert_eq!(out.lines().last(), Some("2000"));
    Ok(())
}

#[test]
fn qmp_stops_and_resumes_the_guest() -> TestResult {
    let g = guest(lab(), "u2");
    let mut qmp = g.qmp()?;
    qmp.stop()?;
    let status = qmp.execute("query-status", None)?;
    assert_eq!(status["status"], "paused");
    qmp.cont()?;
    let status = qmp.execute("query-status", None)?;
    assert_eq!(status["status"], "running");
    drop(qmp);
    assert_eq!(g.exec("echo alive")?, (0, "alive\n".to_owned()));
    Ok(())
}

#[test]
fn shared_guests_log_no_problems() -> TestResult {
    for g in lab() {
        // Let them run a little with views and commands going on.
        g.next_view(VIEW_WAIT)?;
        assert_eq!(g.console_problems(), Vec::<String>::new(), "{}", g.name());
    }
    Ok(())
}

/// No process mentions `dir` in its command line.
fn no_process_uses(dir: &Path) -> bool {
    let needle = format!("{}/", dir.display());
    std::fs::read_dir("/proc").into_iter().flatten().flatten().all(|entry| {
        std::fs::read(entry.path().join("cmdline")).map_or(true, |c| !String::from_utf8_lossy(&c).contains(&needle))
    })
}

#[test]
fn a_dropped_guest_leaves_nothing_and_killed_tasks_leave_no_zombie() -> TestResult {
    let g = Lab::boot_one(GuestSpec::new("solo").workload(Workload::cpu("spin").count(2)).view_interval_ms(300))?;
    eprintln!("guest solo: ready after {:?}", g.boot_time());
    let dir = g.dir().to_path_buf();
    let pid = g.qemu_pid();
    assert!(dir.is_dir());
    assert!(!no_process_uses(&dir));

    let pids = g.pids_of("spin");
    assert_eq!(pids.len(), 2);
    assert_eq!(g.exec(&format!("kill -9 {}", pids[0]))?.0, 0);
    let view = g.next_view(VIEW_WAIT)?;
    assert!(view.get(pids[0]).is_none(), "killed task still listed (zombie?): {:?}", view.get(pids[0]));
    assert!(view.get(pids[1]).is_some());

    // Workloads started later, and moves between groups.
    let late = g.start_workload(&Workload::phases("late", 50, 50).count(2).in_cgroup("x/y"))?;
    assert_eq!(late.len(), 2);
    assert_eq!(g.pids_of("late"), late);
    assert_eq!(g.exec_ok(&format!("cat /proc/{}/cgroup", late[1]))?, "0::/x/y\n");
    g.move_to_cgroup(late[1], Some("z"))?;
    assert_eq!(g.exec_ok(&format!("cat /proc/{}/cgroup", late[1]))?, "0::/z\n");
    g.move_to_cgroup(late[1], None)?;
    assert_eq!(g.exec_ok(&format!("cat /proc/{}/cgroup", late[1]))?, "0::/\n");
    let view = g.next_view(VIEW_WAIT)?;
    assert_eq!(view.by_comm("late").len(), 2);
    let mark = g.console_len();
    g.exec_ok("echo marker-42 > /dev/console")?;
    assert_eq!(g.wait_console("marker-", mark, VIEW_WAIT)?, "marker-42");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());

    g.stop()?;
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(no_process_uses(&dir), "a process still uses {}", dir.display());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "qemu {pid} still exists");

    // Plain drop does the same.
    let g = Lab::boot_one(GuestSpec::new("solo2").view_interval_ms(0))?;
    let dir = g.dir().to_path_buf();
    drop(g);
    assert!(!dir.exists() && no_process_uses(&dir));
    Ok(())
}

#[test]
fn a_killed_owner_leaves_no_qemu_and_its_dir_is_swept() -> TestResult {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_xsched-lab"))
        .args(["up", "--guest", "orphan:view=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let owner_pid = owner.id();
    let mut stdout = owner.stdout.take().ok_or("no stdout")?;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !text.contains("Ctrl-C") && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut stdout, &mut chunk)?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let Some(dir_line) = text.lines().find(|l| l.trim_start().starts_with("ram:")) else {
        let _ = owner.kill();
        let mut stderr = String::new();
        if let Some(mut e) = owner.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        owner.wait()?;
        return Err(format!("no ram line in {text:?}; stderr: {stderr}").into());
    };
    let dir = Path::new(dir_line.trim_start().trim_start_matches("ram:").trim()).parent().ok_or("no dir")?.to_path_buf();
    assert!(dir.starts_with(xsched_lab::cleanup::run_dir()));
    assert!(dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("xsched-lab-{owner_pid}-"))));
    assert!(!no_process_uses(&dir), "qemu should be running");

    owner.kill()?; // SIGKILL: no exit hook runs.
    owner.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !no_process_uses(&dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(no_process_uses(&dir), "qemu outlived its killed owner");
    assert!(dir.exists(), "nobody removed the dir yet");
    xsched_lab::cleanup::sweep();
    assert!(!dir.exists(), "sweep left {}", dir.display());
    Ok(())
}

#[test]
fn la57_guest_runs_five_level_paging() -> TestResult {
    let specs = [GuestSpec::new("five").la57(true).view_interval_ms(0), GuestSpec::new("four").view_interval_ms(0)];
    let guests = Lab::boot(&specs)?;
    let vmalloc_kib = |g: &Guest| -> Result<u64, LabError> {
        let out = g.exec_ok("grep VmallocTotal /proc/meminfo")?;
        Ok(out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0))
    };
    // 4-level paging leaves 32 TiB of vmalloc space; 5-level, 12.5 PiB.
    assert_eq!(vmalloc_kib(&guests[0])?, 13_743_895_347_199);
    assert_eq!(guests[0].exec("grep -qw la57 /proc/cpuinfo")?.0, 0);
    assert_eq!(vmalloc_kib(&guests[1])?, 34_359_738_367);
    assert_eq!(guests[1].exec("grep -qw la57 /proc/cpuinfo")?.0, 1);
    Ok(())
}

#[test]
fn large_guest_runs_a_thousand_sleepers() -> TestResult {
    let spec = GuestSpec::new("big").memory_mib(1024).extra_sleepers(1000).view_interval_ms(0);
    let g = Lab::boot_one(spec)?;
    eprintln!("guest big (1000 sleepers): ready after {:?}", g.boot_time());
    let count = g.exec_ok("n=0; for d in /proc/[0-9]*; do n=$((n+1)); done; echo $n")?;
    let count: u32 = count.trim().parse()?;
    assert!(count >= 1000, "{count} processes");
    assert!(g.console_problems().is_empty(), "{:?}", g.console_problems());
    Ok(())
}

/// Host weights as libvirt sets them: the guest's QEMU, every thread, in a host cgroup of its own
/// whose weight file holds what was set; a panic while it is held still moves the QEMU back and
/// removes the groups. And the guest's own `chrt` (util-linux's, in the initramfs) sets
/// SCHED_IDLE, as the guest's /proc shows.
#[test]
fn host_weights_hold_every_qemu_thread_and_leave_nothing_and_chrt_sets_sched_idle() -> TestResult {
    use xsched_lab::host_cgroup::{Hierarchy, HostWeights};
    let g = guest(lab(), "u2");
    let hierarchy = Hierarchy::detect()?;
    let cgroup_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let home = cgroup_of(g.qemu_pid());
    let groups = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(&format!("xsched-lab-{}-", std::process::id()))).collect()
    };
    let held = std::panic::catch_unwind(|| {
        let weights = HostWeights::create(std::slice::from_ref(g)).expect("host cgroups");
        weights.set("u2", 300).expect("set weight");
        assert!(weights.holds_all_threads_of("u2").expect("threads"), "a QEMU thread stayed outside its group");
        let (name, value) = weights.current().expect("current").pop().expect("one guest");
        assert_eq!((name.as_str(), value), ("u2", hierarchy.weight_value(300)), "the weight file");
        assert_ne!(cgroup_of(g.qemu_pid()), home, "QEMU did not move");
        assert_eq!(groups(hierarchy.mount()).len(), 1, "one group for this process");
        panic!("a failure while the weights are held");
    });
    assert!(held.is_err());
    assert_eq!(cgroup_of(g.qemu_pid()), home, "QEMU is back where it was");
    assert!(groups(hierarchy.mount()).is_empty(), "groups left: {:?}", groups(hierarchy.mount()));

    let pid = g.start_workload(&Workload::sleep("lazy"))?[0];
    let stat = g.exec_ok(&format!("chrt -i -p 0 {pid} && cat /proc/{pid}/stat"))?;
    let policy = stat.trim().rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(38).map(str::to_owned));
    g.exec_ok(&format!("kill -9 {pid}"))?;
    assert_eq!(policy.as_deref(), Some("5"), "SCHED_IDLE is policy 5: {stat}");
    Ok(())
}
