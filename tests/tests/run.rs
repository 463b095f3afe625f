//! `xsched run` with the bundled policies on two lab guests, measured by the guests' own
//! accounting: the kernel's `se.sum_exec_runtime` of each task (what `/proc/PID/schedstat`
//! shows), from the views the guests print and, per period, from xsched's trace; and a run set
//! up by a settings file, its metrics scraped while it runs and checked against the guests' own
//! task counts and parked tasks.

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

/// One scrape of the loop's metrics: every sample line, by name with its labels.
fn scrape(address: &str) -> BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 ") && head.contains("application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(name, value)| Some((name.to_owned(), value.parse().ok()?))))
        .collect()
}

/// The guest's own count of its tasks: the total of `/proc/loadavg` (`nr_threads`).
fn guest_task_count(g: &Guest) -> f64 {
    let loadavg = g.exec_ok("cat /proc/loadavg").expect("loadavg");
    let total = loadavg.split_whitespace().nth(3).and_then(|f| f.split_once('/')).map(|(_, total)| total.trim().to_owned());
    total.and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("loadavg: {loadavg}"))
}

#[test]
fn a_run_from_a_settings_file_serves_metrics_that_agree_with_the_guests() {
    let _serial = serial();
    let (g1, g2) = (&lab()[0], &lab()[1]);
    let hog = g1.start_workload(&Workload::cpu("victim")).expect("hog");
    let other = g2.start_workload(&Workload::cpu("victim")).expect("hog");
    let dir = g1.dir();
    let (config, journal, settings) = (dir.join("metrics.conf"), dir.join("metrics.journal"), dir.join("xsched.toml"));
    std::fs::write(&config, "after=1000000 victim").expect("config");
    // Everything from a settings file, as the service runs it.
    let toml_string = |p: &std::path::Path| format!("{:?}", p.to_str().expect("utf-8"));
    std::fs::write(
        &settings,
        format!(
            "plugin = {}\npolicy-config = {}\ndomains = [{:?}, {:?}]\ncpus = 1\nmetrics = \"127.0.0.1:0\"\njournal = {}\nkernels = {}\n",
            toml_string(&plugin("testing-panic")),
            toml_string(&config),
            domain_arg(g1),
            domain_arg(g2),
            toml_string(&journal),
            toml_string(&kernels_dir()),
        ),
    )
    .expect("settings");
    let mut child = Command::new(common::xsched_bin())
        .args(["run", "--config-file", settings.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start xsched run");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let address = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).expect("a line") > 0, "xsched run ended");
        if let Some(url) = line.trim().strip_prefix("xsched: metrics at http://") {
            break url.trim_end_matches("/metrics").to_owned();
        }
    };
    // One of the two hogs is parked (one host CPU): the guests' own /proc says which.
    let deadline = std::time::Instant::now() + WAIT;
    let parked_in = loop {
        let parked: Vec<&Guest> = [g1, g2].into_iter().filter(|g| g.next_view(WAIT).expect("view").procs.iter().any(|p| p.state == 'P')).collect();
        if parked.len() == 1 {
            break parked[0].name().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "never exactly one guest with a parked task");
    };
    let first = scrape(&address);
    std::thread::sleep(Duration::from_secs(2));
    let second = scrape(&address);
    let counts = [(g1.name(), guest_task_count(g1)), (g2.name(), guest_task_count(g2))];
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    assert!(child.wait().expect("reap").success(), "xsched run stopped by SIGTERM exits 0");
    stop(g1, &hog);
    stop(g2, &other);

    let value = |scrape: &BTreeMap<String, f64>, name: &str| *scrape.get(name).unwrap_or_else(|| panic!("no {name} in {scrape:?}"));
    eprintln!("metrics: {second:?}");
    let periods = value(&second, "xsched_periods_total") - value(&first, "xsched_periods_total");
    assert!((20.0..=250.0).contains(&periods), "{periods} periods in 2 s at a 10 ms period");
    assert!(value(&second, "xsched_parks_total") >= 1.0);
    assert_eq!(value(&second, "xsched_class_parked_tasks{class=\"0\"}"), 1.0, "one victim parked ({parked_in}'s)");
    assert_eq!(value(&second, "xsched_class_running_tasks{class=\"0\"}"), 1.0, "one victim runs");
    for (name, count) in counts {
        let tasks = value(&second, &format!("xsched_domain_tasks{{domain=\"{name}\"}}"));
        assert!((tasks - count).abs() <= 3.0, "{name}: {tasks} tasks read, the guest counts {count}");
        // Paused only to change it: the guest with the parked task was, for the park; in a
        // steady state neither is, so well under the run's length.
        let paused = value(&second, &format!("xsched_domain_paused_seconds_total{{domain=\"{name}\"}}"));
        assert!(paused < 1.0 && (paused > 0.0 || name != parked_in), "{name}: held paused {paused} s in all");
    }
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "everything was released");
}

/// `web`'s share of its vCPU in guest2 while `xsched run --plugin priority` runs on one host
/// CPU, guest2 given `guest2_share` (e.g. `,floor=30%`); guest1 lies: it names its batch jobs
/// `db`, which an unscoped rule puts in the top class. From guest2's own `/proc`: web's runtime
/// over guest2's uptime between two views taken while the loop runs.
fn web_share_against_a_liar(guest2_share: &str, tag: &str) -> f64 {
    let (g1, g2) = (&lab()[0], &lab()[1]);
    let dir = g1.dir();
    let (config, journal) = (dir.join(format!("{tag}.toml")), dir.join(format!("{tag}.journal")));
    // The top class matched by comm alone: any guest may claim it.
    std::fs::write(&config, "[[rule]]\nclass = 0\nmatch = { comm = \"db\" }\n[[rule]]\nclass = 1\nmatch = { domain = \"guest2\", comm = \"web\" }\n").expect("config");
    let lies = g1.start_workload(&Workload::cpu("db").count(4)).expect("the liar's batch jobs");
    let web = g2.start_workload(&Workload::cpu("web")).expect("web");
    let mut child = Command::new(common::xsched_bin())
        .args(["run", "--plugin", plugin("priority").to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8")])
        .args(["--domain", &domain_arg(g1), "--domain", &format!("{}{guest2_share}", domain_arg(g2)), "--cpus", "1"])
        .args(["--journal", journal.to_str().expect("utf-8"), "--kernels", kernels_dir().to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start xsched run");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")), &mut first).expect("first line");
    assert!(first.contains("supervised by"), "xsched run did not start: {first}");
    std::thread::sleep(Duration::from_secs(1));
    let before = g2.next_view(WAIT).expect("view");
    std::thread::sleep(Duration::from_secs(4));
    let after = g2.next_view(WAIT).expect("view");
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    assert!(child.wait().expect("reap").success(), "xsched run stopped by SIGTERM exits 0");
    stop(g1, &lies);
    stop(g2, &web);
    assert_eq!(std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0), 0, "everything was released");
    let ran = after.get(web[0]).expect("web").run_ns - before.get(web[0]).expect("web").run_ns;
    let wall = after.uptime.saturating_sub(before.uptime).as_nanos() as f64;
    100.0 * ran as f64 / wall
}

#[test]
fn a_floor_keeps_a_guest_its_share_against_a_guest_that_lies() {
    let _serial = serial();
    let starved = web_share_against_a_liar("", "liar-no-floor");
    let floored = web_share_against_a_liar(",floor=30%", "liar-floor");
    eprintln!("web in guest2 against a guest naming its batch jobs db: {starved:.1}% of its vCPU without a floor, {floored:.1}% with floor=30%");
    assert!(starved < 10.0, "without a floor the lie should starve web: {starved:.1}%");
    assert!(floored > 20.0, "with a 30% floor web keeps its share: {floored:.1}%");
    assert!(lab().iter().all(|g| g.console_problems().is_empty()));
}
