//! `xsched run` with the bundled policies on two lab guests, measured by the guests' own
//! accounting: the kernel's `se.sum_exec_runtime` of each task (what `/proc/PID/schedstat`
//! shows), from the views the guests print and, per period, from xsched's trace.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{bkup_shares, domain_arg, kernels_dir, plugin, states, xsched_ok, TaskStates};
use serde_json::Value;
use xsched_lab::{shared_lab, Guest, GuestSpec, Workload};

const WAIT: Duration = Duration::from_secs(60);

fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![
            GuestSpec::new("guest1").view_interval_ms(1000).view_kthreads(false),
            GuestSpec::new("guest2").view_interval_ms(1000).view_kthreads(false),
        ]
    })
}

/// The tests start their own workloads in the shared guests: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the loop for `periods` periods with `plugin` and `config` over both guests.
fn run_loop(plugin_name: &str, config: &str, cpus: u32, periods: u32, tag: &str) -> Vec<Value> {
    let g = lab();
    let dir = g[0].dir();
    let config_file = dir.join(format!("{tag}.toml"));
    std::fs::write(&config_file, config).expect("config");
    let trace = dir.join(format!("{tag}.trace"));
    let journal = dir.join(format!("{tag}.journal"));
    let lib = plugin(plugin_name);
    let out = xsched_ok(&[
        "run",
        "--plugin", lib.to_str().expect("utf-8"),
        "--config", config_file.to_str().expect("utf-8"),
        "--domain", &domain_arg(&g[0]),
        "--domain", &domain_arg(&g[1]),
        "--cpus", &cpus.to_string(),
        "--period", "10",
        "--periods", &periods.to_string(),
        "--trace", trace.to_str().expect("utf-8"),
        "--journal", journal.to_str().expect("utf-8"),
        "--kernels", kernels_dir().to_str().expect("utf-8"),
    ]);
    eprintln!("{}", out.lines().last().unwrap_or_default());
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "everything was released");
    for guest in g {
        let view = guest.next_view(WAIT).expect("view after the run");
        assert!(view.procs.iter().all(|p| p.state != 'P'), "{} has parked tasks after the run", guest.name());
    }
    std::fs::read_to_string(&trace).expect("trace").lines().map(|l| serde_json::from_str(l).expect("trace line")).collect()
}

fn stop(g: &Guest, pids: &[u32]) {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    g.exec_ok(&format!("kill {}", list.join(" "))).expect("kill");
}

#[test]
fn priority_db_over_web_over_bkup_across_guests() {
    let _serial = serial();
    let (g1, g2) = (&lab()[0], &lab()[1]);
    let db = g1.start_workload(&Workload::phases("db", 2000, 3000)).expect("db");
    let bkup = g1.start_workload(&Workload::cpu("bkup")).expect("bkup");
    let web = g2.start_workload(&Workload::phases("web", 1500, 2500)).expect("web");
    let config = r#"
        [[rule]]
        class = 0
        match = { domain = "guest1", comm = "db" }
        [[rule]]
        class = 1
        match = { domain = "guest2", comm = "web" }
        [[rule]]
        class = 2
        match = { comm = "bkup" }
    "#;
    let before = g1.next_view(WAIT).expect("view");
    let trace = run_loop("priority", config, 1, 2500, "priority");
    let after = g1.next_view(WAIT).expect("view");
    stop(g1, &[db[0], bkup[0]]);
    stop(g2, &[web[0]]);

    let lines: Vec<(f64, TaskStates)> = trace.iter().map(|l| (l["t"].as_f64().expect("t"), states(l))).collect();
    let shares = bkup_shares(&lines);
    eprintln!("bkup: {shares:?}");
    assert!(shares.contended_ns > 5_000_000_000, "too little contended time observed: {shares:?}");
    assert!(shares.contended_pct < 1.0, "bkup ran while db or web was runnable: {shares:?}");
    assert!(shares.free_ns > 1_000_000_000 && shares.free_pct > 50.0, "bkup barely ran while both were idle: {shares:?}");
    // The trace's runtimes are the guest's own: the guest's /proc view brackets them.
    let last = lines.last().expect("trace").1.get("bkup").expect("bkup").1;
    let (b0, b1) = (before.get(bkup[0]).expect("bkup").run_ns, after.get(bkup[0]).expect("bkup").run_ns);
    assert!(b0 <= last && last <= b1, "trace {last} outside the guest's [{b0}, {b1}]");
    assert!(g1.console_problems().is_empty() && g2.console_problems().is_empty());
}

#[test]
fn fairshare_splits_the_host_one_to_two_across_guests() {
    let _serial = serial();
    let (g1, g2) = (&lab()[0], &lab()[1]);
    let mut pids = BTreeMap::new();
    for (g, gold, bronze) in [(g1, "gold1", "bronze1"), (g2, "gold2", "bronze2")] {
        pids.insert(gold, (g, g.start_workload(&Workload::cpu(gold)).expect("gold")[0]));
        pids.insert(bronze, (g, g.start_workload(&Workload::cpu(bronze)).expect("bronze")[0]));
    }
    let config = r#"
        half_life_ms = 1000
        [[group]]
        name = "gold"
        weight = 2
        match = { comm = "gold*" }
        [[group]]
        name = "bronze"
        weight = 1
        match = { comm = "bronze*" }
    "#;
    let trace = run_loop("fairshare", config, 2, 2000, "fairshare");
    // The kernel's own runtimes of the four hogs, from the trace, after 5 s for the decayed usage
    // to settle (the policy measures over a window with a 1 s half-life).
    let lines: Vec<(f64, TaskStates)> = trace.iter().map(|l| (l["t"].as_f64().expect("t"), states(l))).collect();
    let first = lines.iter().find(|(t, s)| *t >= 5.0 && pids.keys().all(|k| s.contains_key(*k))).expect("a trace line after 5 s");
    let last = lines.iter().rev().find(|(_, s)| pids.keys().all(|k| s.contains_key(*k))).expect("a last trace line");
    let growth = |name: &str| last.1[name].1 - first.1[name].1;
    let gold = growth("gold1") + growth("gold2");
    let bronze = growth("bronze1") + growth("bronze2");
    let ratio = gold as f64 / bronze.max(1) as f64;
    eprintln!("fairshare: gold {:.2} s, bronze {:.2} s, ratio {ratio:.2} (target 2)", gold as f64 / 1e9, bronze as f64 / 1e9);
    for (g, pid) in pids.values() {
        stop(g, &[*pid]);
    }
    assert!((ratio - 2.0).abs() <= 0.2, "gold:bronze = {ratio:.2}, not within 10% of 2");
}

#[test]
fn a_panicking_policy_ends_the_loop_with_nothing_left_parked() {
    let _serial = serial();
    let g1 = &lab()[0];
    let hogs = g1.start_workload(&Workload::cpu("spinner").count(3)).expect("hogs");
    let dir = g1.dir();
    let (config, trace, journal) = (dir.join("panic.conf"), dir.join("panic.trace"), dir.join("panic.journal"));
    std::fs::write(&config, "after=150 spinner").expect("config");
    let lib = plugin("testing-panic");
    let out = common::xsched(&[
        "run",
        "--plugin", lib.to_str().expect("utf-8"),
        "--config", config.to_str().expect("utf-8"),
        "--domain", &domain_arg(g1),
        "--cpus", "1",
        "--trace", trace.to_str().expect("utf-8"),
        "--journal", journal.to_str().expect("utf-8"),
        "--kernels", kernels_dir().to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the loop must fail");
    assert!(stderr.contains("panicked"), "{stderr}");
    let parks = std::fs::read_to_string(&trace).expect("trace").lines().filter(|l| l.contains("\"park\"")).count();
    assert!(parks > 0, "the policy had xsched park tasks before it panicked");
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "the journal is empty");
    let view = g1.next_view(WAIT).expect("view");
    assert!(view.procs.iter().all(|p| p.state != 'P'), "a task stayed parked");
    stop(g1, &hogs);
}

/// Starts `xsched run` with the `testing-panic` fixture ranking the `victim` tasks in one class
/// (it panics only after a million periods), lets it park some, and kills it and its supervisor
/// with SIGKILL (what only the supervisor's own death leaves to a person: see tests/faults.rs).
fn run_and_kill(g: &Guest, journal: &std::path::Path, tag: &str) {
    let config = g.dir().join(format!("{tag}.conf"));
    std::fs::write(&config, "after=1000000 victim").expect("config");
    let lib = plugin("testing-panic");
    let mut child = Command::new(common::xsched_bin())
        .args(["run", "--plugin", lib.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8")])
        .args(["--domain", &domain_arg(g), "--cpus", "1", "--journal", journal.to_str().expect("utf-8")])
        .args(["--kernels", kernels_dir().to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start xsched run");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")), &mut first).expect("first line");
    let supervisor = i32::try_from(common::supervisor_pid(&first)).expect("pid");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::metadata(journal).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "xsched parked nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: a signal to the supervisor this test's child started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    if g.qmp_status() != "running" {
        // Killed inside a pause, with nobody left to undo it: resumed as an operator would.
        g.operator_qmp().expect("operator monitor").cont().expect("cont");
    }
}

#[test]
fn after_sigkill_release_all_or_the_next_start_restores_every_task() {
    let _serial = serial();
    let g1 = &lab()[0];
    let hogs = g1.start_workload(&Workload::cpu("victim").count(3)).expect("hogs");
    let journal = g1.dir().join("killed.journal");
    let parked = |g: &Guest| g.next_view(WAIT).expect("view").procs.iter().filter(|p| p.state == 'P').count();

    run_and_kill(g1, &journal, "killed1");
    assert!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) > 0, "the killed xsched left parks in the journal");
    let out = xsched_ok(&["release", "--all", "--journal", journal.to_str().expect("utf-8"), "--kernels", kernels_dir().to_str().expect("utf-8")]);
    assert!(out.contains("unparked pid"), "{out}");
    assert_eq!(parked(g1), 0, "release --all left a task parked");

    // The next start of the loop releases them too (here with a policy that ranks nothing).
    run_and_kill(g1, &journal, "killed2");
    assert!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) > 0);
    let config = g1.dir().join("nothing.toml");
    std::fs::write(&config, "[[rule]]\nclass = 0\nmatch = { comm = \"no-such-task\" }\n").expect("config");
    let lib = plugin("priority");
    xsched_ok(&[
        "run", "--plugin", lib.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8"),
        "--domain", &domain_arg(g1), "--periods", "20",
        "--journal", journal.to_str().expect("utf-8"), "--kernels", kernels_dir().to_str().expect("utf-8"),
    ]);
    assert_eq!(parked(g1), 0, "the next start left a task parked");
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0);
    stop(g1, &hogs);
}
