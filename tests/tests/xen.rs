//! xsched in a real Xen dom0 (the Xen lab, `tests/xen/`): Xen 4.17 under QEMU TCG, Debian's
//! generic kernel as PV dom0, two PV domUs running the cloud kernel with the QEMU lab's workloads.
//! xsched, built with `--features xen`, runs inside dom0 against the domUs through foreign mapping;
//! everything is checked against the domUs' own `/proc` (their `XSV` views, logged by xenconsoled)
//! and their kernels' own accounting.
//!
//! - u1 runs `db` (busy 2 s / idle 3 s), `bkup` (a CPU hog) and `idler` (asleep, in cgroup g1);
//! - u2 runs `web` (busy 1.5 s / idle 2.5 s) and `cache` (asleep).
//!
//! One test (one boot: about a minute or two under TCG), in steps.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{bkup_shares, states, TaskStates};
use serde_json::Value;
use xsched_lab::xen::{XenLab, DOMUS, EXEC_TIMEOUT};
use xsched_lab::ProcView;

/// The domUs' processes that sleep and wake on their own: the phases workloads and the lab's
/// view and control loops.
const WAKING_BY_DESIGN: &[&str] = &["db", "web", "view", "control", "sh"];

/// `--domain` arguments for each domU, as dom0 knows them.
fn domain_args(lab: &mut XenLab) -> Vec<String> {
    DOMUS.iter().map(|d| format!("--domain {d}=xen:{}", lab.domid(d))).collect()
}

/// One row of `xsched ps --json`.
#[derive(Debug)]
struct Row {
    tgid: i64,
    comm: String,
    state: char,
    queued: bool,
    running: bool,
    runtime_ns: u64,
    start_time_ns: u64,
    cgroup: String,
    kthread: bool,
}

/// Rows of `xsched ps --json` per domU name, by pid.
type Rows = BTreeMap<String, BTreeMap<u32, Row>>;
/// Per domain: its name, the snapshot's read time (µs) and its task count.
type ReadCosts = Vec<(String, u64, u64)>;

/// `xsched ps --json` in dom0: the rows, and what reading each domain cost.
fn ps(lab: &mut XenLab, domains: &str) -> (Rows, ReadCosts) {
    let table: Value = serde_json::from_str(&lab.exec_packed(&format!("xsched ps --json {domains}"), EXEC_TIMEOUT)).expect("ps --json");
    let names: Vec<String> = table["domains"].as_array().expect("domains").iter().map(|d| d["name"].as_str().expect("name").to_owned()).collect();
    let mut costs = Vec::new();
    for d in table["domains"].as_array().expect("domains") {
        assert!(d["problems"].as_array().is_some_and(Vec::is_empty), "partial table: {d}");
        let tasks = d["tasks"].as_u64().expect("task count");
        costs.push((d["name"].as_str().expect("name").to_owned(), d["read_us"].as_u64().expect("read_us"), tasks));
    }
    let mut rows = Rows::new();
    for t in table["tasks"].as_array().expect("tasks") {
        let domain = usize::try_from(t["key"]["domain"].as_u64().expect("domain")).expect("index");
        let pid = u32::try_from(t["key"]["pid"].as_u64().expect("pid")).expect("pid");
        let row = Row {
            tgid: t["tgid"].as_i64().expect("tgid"),
            comm: t["comm"].as_str().expect("comm").to_owned(),
            state: t["state"].as_str().and_then(|s| s.chars().next()).expect("state"),
            queued: t["queued"].as_bool().expect("queued"),
            running: t["running"].as_bool().expect("running"),
            runtime_ns: t["runtime_ns"].as_u64().expect("runtime"),
            start_time_ns: t["key"]["start_time"].as_u64().expect("start"),
            cgroup: t["cgroup"].as_str().expect("cgroup").to_owned(),
            kthread: t["kthread"].as_bool().expect("kthread"),
        };
        rows.entry(names[domain].clone()).or_default().insert(pid, row);
    }
    (rows, costs)
}

/// (a) `xsched ps` in dom0 lists both domUs' processes as their own `/proc` shows them.
fn ps_matches_the_domus_own_proc(lab: &mut XenLab, domains: &str) {
    let before: Vec<ProcView> = DOMUS.iter().map(|d| lab.next_view(d)).collect();
    let (rows, costs) = ps(lab, domains);
    let after: Vec<ProcView> = DOMUS.iter().map(|d| lab.next_view(d)).collect();
    for (name, read_us, tasks) in &costs {
        eprintln!("xen: ps of {name}: {tasks} tasks read in {read_us} µs ({:.2} µs/task), guest paused", *read_us as f64 / (*tasks).max(1) as f64);
    }
    for ((name, before), after) in DOMUS.iter().zip(&before).zip(&after) {
        let rows = rows.get(*name).unwrap_or_else(|| panic!("no rows for {name}"));
        let mut checked = 0;
        for p in &before.procs {
            // A process that lived through the whole snapshot, as the domU saw it before and after.
            let Some(later) = after.get(p.pid).filter(|l| l.start_time == p.start_time) else { continue };
            let row = rows.get(&p.pid).unwrap_or_else(|| panic!("{name}: pid {} ({}) missing from xsched ps", p.pid, p.comm));
            assert_eq!(row.comm, p.comm, "{name}: pid {}", p.pid);
            assert_eq!(row.tgid, i64::from(p.pid), "{name}: pid {} is a process", p.pid);
            assert!((row.start_time_ns / 10_000_000).abs_diff(p.start_time) <= 1, "{name}: pid {} start {} ns vs {} ticks", p.pid, row.start_time_ns, p.start_time);
            assert!(p.run_ns <= row.runtime_ns && row.runtime_ns <= later.run_ns, "{name}: pid {} ({}) runtime {} not in [{}, {}]", p.pid, p.comm, row.runtime_ns, p.run_ns, later.run_ns);
            // Tasks that sleep and wake by design may have run between the two views, and can be
            // caught mid-wakeup (TASK_WAKING reads as R before the enqueue) or mid-sleep (state
            // set, schedule() not reached yet). The others keep the guest's state and are on a
            // runqueue exactly when runnable.
            if !WAKING_BY_DESIGN.contains(&p.comm.as_str()) {
                if p.state == later.state && p.state != 'R' {
                    assert_eq!(row.state, p.state, "{name}: pid {} ({})", p.pid, p.comm);
                }
                assert_eq!(row.state == 'R', row.queued || row.running, "{name}: pid {} ({}) {row:?}", p.pid, p.comm);
            }
            checked += 1;
        }
        // Every user process xsched lists, the domU knows (the views leave kernel threads out).
        for (pid, row) in rows.iter().filter(|(_, r)| !r.kthread) {
            assert!(before.get(*pid).is_some() || after.get(*pid).is_some(), "{name}: pid {pid} ({}) unknown to the domU", row.comm);
        }
        assert!(checked >= 4, "{name}: only {checked} processes compared");
        eprintln!("xen: {name}: {checked} processes match the domU's own /proc; {} tasks in all", rows.len());
    }
    let row = |domu: &str, comm: &str| rows[domu].values().find(|r| r.comm == comm).unwrap_or_else(|| panic!("{domu}: {comm} missing"));
    assert_eq!(row("u1", "idler").cgroup, "/g1");
    assert_eq!(row("u1", "bkup").state, 'R');
    assert_eq!(row("u2", "web").cgroup, "/");
}

/// (b) db > web > bkup across the two domUs on one host CPU: bkup gets (almost) nothing while db
/// or web is runnable, and runs while both are idle, by the domUs' own kernel accounting.
fn priority_across_domus(lab: &mut XenLab, domains: &str) {
    let config = r#"[[rule]]\nclass = 0\nmatch = { domain = "u1", comm = "db" }\n[[rule]]\nclass = 1\nmatch = { domain = "u2", comm = "web" }\n[[rule]]\nclass = 2\nmatch = { comm = "bkup" }\n"#;
    lab.exec_ok(&format!("printf '{config}' >/tmp/priority.toml"), EXEC_TIMEOUT);
    let before = lab.next_view("u1");
    let started = Instant::now();
    let out = lab.exec_ok(
        &format!(
            "xsched run --plugin priority --config /tmp/priority.toml {domains} --cpus 1 --period 10 --periods 2000 \
             --trace /tmp/priority.trace --journal /tmp/priority.journal 2>&1"
        ),
        Duration::from_secs(600),
    );
    let wall = started.elapsed();
    eprintln!("xen: {}", out.lines().last().unwrap_or_default());
    let after = lab.next_view("u1");
    assert_eq!(lab.exec_ok("wc -c </tmp/priority.journal", EXEC_TIMEOUT).trim(), "0", "everything was released");
    for d in DOMUS {
        let view = lab.next_view(d);
        assert!(view.procs.iter().all(|p| p.state != 'P'), "{d} has parked tasks after the run");
    }

    let trace: Vec<Value> = lab.exec_packed("cat /tmp/priority.trace", EXEC_TIMEOUT).lines().map(|l| serde_json::from_str(l).expect("trace line")).collect();
    let lines: Vec<(f64, TaskStates)> = trace.iter().map(|l| (l["t"].as_f64().expect("t"), states(l))).collect();
    let shares = bkup_shares(&lines);
    eprintln!(
        "xen: priority over {} periods in {:.1} s: bkup got {:.2}% of {:.1} s while db or web was runnable, {:.1}% of {:.1} s while both were idle",
        lines.len(),
        wall.as_secs_f64(),
        shares.contended_pct,
        shares.contended_ns as f64 / 1e9,
        shares.free_pct,
        shares.free_ns as f64 / 1e9
    );
    assert!(shares.contended_ns > 5_000_000_000, "too little contended time observed: {shares:?}");
    assert!(shares.contended_pct < 1.0, "bkup ran while db or web was runnable: {shares:?}");
    assert!(shares.free_ns > 1_000_000_000 && shares.free_pct > 50.0, "bkup barely ran while both were idle: {shares:?}");
    // The trace's runtimes are u1's own: its /proc view brackets them.
    let bkup = before.by_comm("bkup").first().map(|p| p.pid).expect("bkup in u1's view");
    let last = lines.iter().rev().find_map(|(_, s)| s.get("bkup")).expect("bkup in the trace").1;
    let (b0, b1) = (before.get(bkup).expect("bkup").run_ns, after.get(bkup).expect("bkup").run_ns);
    assert!(b0 <= last && last <= b1, "trace {last} outside u1's own [{b0}, {b1}]");
}

/// Prints what reading the domUs costs through foreign mapping (a measurement, not a check):
/// warm snapshots of `xsched ps --watch` (guest paused) per task, and the time of `xsched probe`,
/// which maps both domUs and scans all their RAM for the kernel banner.
fn measure_reads(lab: &mut XenLab, each: &[String]) {
    let domains = each.join(" ");
    let out = lab.exec_packed(&format!("xsched ps --watch --json --count 6 --interval 300 {domains}"), EXEC_TIMEOUT);
    let mut per_task: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // The first table is the cold one.
    for table in out.lines().skip(1).map(|l| serde_json::from_str::<Value>(l).expect("ps --watch line")) {
        for d in table["domains"].as_array().expect("domains") {
            let (read, tasks) = (d["read_us"].as_f64().expect("read_us"), d["tasks"].as_f64().expect("tasks"));
            per_task.entry(d["name"].as_str().expect("name").to_owned()).or_default().push(read / tasks.max(1.0));
        }
    }
    for (name, mut costs) in per_task {
        costs.sort_by(f64::total_cmp);
        eprintln!("xen: warm snapshot of {name}: median {:.2} µs/task over {} snapshots", costs[costs.len() / 2], costs.len());
    }
    let probes: Vec<String> = each.iter().map(|d| format!("xsched probe {d} >/dev/null")).collect();
    let timed = lab.exec_ok(&format!("read a _ </proc/uptime; {}; read b _ </proc/uptime; echo $a $b", probes.join("; ")), EXEC_TIMEOUT);
    let t: Vec<f64> = timed.split_whitespace().map(|w| w.parse().expect("uptime")).collect();
    // Both domUs have 160 MiB (tests/xen/domus).
    let ram_mib: f64 = DOMUS.len() as f64 * 160.0;
    eprintln!("xen: probe (map + scan {ram_mib} MiB) took {:.1} s in dom0: {:.0} MiB/s", t[1] - t[0], ram_mib / (t[1] - t[0]).max(0.01));
}

#[test]
fn xsched_in_a_xen_dom0() {
    let mut lab = XenLab::boot();
    eprintln!("xen: Xen + dom0 + both domUs up in {:.1} s", lab.boot_time.as_secs_f64());
    let each = domain_args(&mut lab);
    let domains = each.join(" ");
    for domain in &each {
        let probe = lab.exec_ok(&format!("xsched probe {domain}"), EXEC_TIMEOUT);
        assert!(probe.contains("kernel release:   6.1.0-56-cloud-amd64"), "{probe}");
        assert!(probe.contains("direct map base:  0xffff888000000000"), "a PV kernel is not relocated: {probe}");
    }
    ps_matches_the_domus_own_proc(&mut lab, &domains);
    measure_reads(&mut lab, &each);
    priority_across_domus(&mut lab, &domains);
    let problems = lab.problems();
    assert!(problems.is_empty(), "kernel problems on the consoles: {problems:#?}");
}
