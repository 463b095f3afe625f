//! `xsched ps` against live lab guests, checked against each guest's own `/proc` view: every
//! process the guest lists appears with the same pid, comm, start time and state class; its
//! runtime lies between the guest's readings just before and just after; runnable tasks are
//! queued or running; cgroup membership matches `/proc/PID/cgroup`; a guest with over 1000
//! processes is read completely.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{domain_arg, xsched_ok};
use serde_json::Value;
use xsched_lab::{shared_lab, Guest, GuestSpec, ProcView, Workload};

const VIEW_WAIT: Duration = Duration::from_secs(90);
/// Processes started beside the workloads in the large guest.
const SLEEPERS: u32 = 1000;

fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![
            GuestSpec::new("u1")
                .vcpus(2)
                .workload(Workload::cpu("db"))
                .workload(Workload::phases("web", 200, 300))
                .workload(Workload::cpu("bkup").in_cgroup("g1"))
                .workload(Workload::sleep("snooze"))
                .view_interval_ms(1000),
            GuestSpec::new("u2")
                .workload(Workload::cpu("batch").count(2).in_cgroup("g2/sub"))
                .workload(Workload::sleep("idler"))
                .view_interval_ms(1000),
            GuestSpec::new("big").memory_mib(1024).extra_sleepers(SLEEPERS).view_interval_ms(5000),
        ]
    })
}

/// One row of `xsched ps --json`.
#[derive(Debug)]
struct Row {
    pid: u32,
    tgid: u32,
    comm: String,
    state: char,
    cpu: u32,
    queued: bool,
    running: bool,
    runtime_ns: u64,
    start_time_ns: u64,
    cgroup: String,
}

/// Runs `xsched ps --json` on `guests` and returns each domain's rows by pid.
fn ps(guests: &[&Guest]) -> (Value, Vec<BTreeMap<u32, Row>>) {
    let mut args = vec!["ps".to_string(), "--json".into()];
    for g in guests {
        args.push("--domain".into());
        args.push(domain_arg(g));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let table: Value = serde_json::from_str(&xsched_ok(&args)).expect("ps --json");
    let mut domains: Vec<BTreeMap<u32, Row>> = guests.iter().map(|_| BTreeMap::new()).collect();
    for t in table["tasks"].as_array().expect("tasks") {
        let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t}"));
        let row = Row {
            pid: u32::try_from(t["key"]["pid"].as_u64().expect("pid")).expect("pid fits"),
            tgid: u32::try_from(n("tgid")).expect("tgid fits"),
            comm: t["comm"].as_str().expect("comm").to_string(),
            state: t["state"].as_str().and_then(|s| s.chars().next()).expect("state"),
            cpu: u32::try_from(n("cpu")).expect("cpu fits"),
            queued: t["queued"].as_bool().expect("queued"),
            running: t["running"].as_bool().expect("running"),
            runtime_ns: n("runtime_ns"),
            start_time_ns: t["key"]["start_time"].as_u64().expect("start"),
            cgroup: t["cgroup"].as_str().unwrap_or("?").to_string(),
        };
        domains[usize::try_from(t["key"]["domain"].as_u64().expect("domain")).expect("index")].insert(row.pid, row);
    }
    (table, domains)
}

/// The guest's views just before and just after a `ps` run, and the `ps` rows of each guest.
fn bracketed_ps(guests: &[&Guest]) -> Vec<(ProcView, BTreeMap<u32, Row>, ProcView)> {
    let before: Vec<ProcView> = guests.iter().map(|g| g.wait_view_after(0, VIEW_WAIT).and_then(|_| g.latest_view().ok_or_else(|| unreachable!())).expect("view before")).collect();
    let (table, rows) = ps(guests);
    for d in table["domains"].as_array().expect("domains") {
        assert!(d["problems"].as_array().is_some_and(Vec::is_empty), "partial table: {d}");
        eprintln!("{}: {} tasks, pause {} µs, reading {} µs", d["name"], d["tasks"], d["pause_us"], d["read_us"]);
    }
    let after: Vec<ProcView> = guests.iter().map(|g| g.next_view(VIEW_WAIT).expect("view after")).collect();
    before.into_iter().zip(rows).zip(after).map(|((b, r), a)| (b, r, a)).collect()
}

#[test]
fn every_guest_process_is_in_the_table_as_the_guest_sees_it() {
    let guests: Vec<&Guest> = lab()[..2].iter().collect();
    for (g, (before, rows, after)) in guests.iter().zip(bracketed_ps(&guests)) {
        // Tasks whose state flips by design: the view printer (running while it prints) and the
        // busy/idle phases workload.
        // The lab's own view and control processes are not workloads: find them by name.
        let lab_procs = before.procs.iter().filter(|p| p.comm == "view" || p.comm == "control").map(|p| p.pid);
        let flipping: Vec<u32> = lab_procs.chain(g.pids_of("web")).collect();
        for p in &before.procs {
            let Some(later) = after.get(p.pid).filter(|l| l.start_time == p.start_time) else { continue };
            let row = rows.get(&p.pid).unwrap_or_else(|| panic!("{}: pid {} ({}) missing from xsched ps", g.name(), p.pid, p.comm));
            // For kernel threads /proc shows more than task->comm: the full name (kthread->full_name)
            // and, for workqueue workers, the current workqueue ("kworker/0:1-rcu_gp").
            assert!(row.comm == p.comm || (p.is_kthread() && p.comm.starts_with(&row.comm)), "{}: pid {}: {:?} vs {:?}", g.name(), p.pid, row.comm, p.comm);
            assert_eq!(row.tgid, p.pid, "{}: pid {} is a process", g.name(), p.pid);
            // /proc shows the start in clock ticks (USER_HZ = 100) of boot time; no suspend in the lab.
            assert!((row.start_time_ns / 10_000_000).abs_diff(p.start_time) <= 1, "{}: pid {} start {} ns vs {} ticks", g.name(), p.pid, row.start_time_ns, p.start_time);
            // sum_exec_runtime only grows: xsched's reading lies between the guest's two.
            assert!(p.run_ns <= row.runtime_ns && row.runtime_ns <= later.run_ns, "{}: pid {} ({}) runtime {} not in [{}, {}]", g.name(), p.pid, p.comm, row.runtime_ns, p.run_ns, later.run_ns);
            // Kernel threads sleep and wake by design (rcu_preempt every few ms): R in both views
            // says nothing about the moment in between that xsched read.
            if p.state == later.state && !flipping.contains(&p.pid) && !p.is_kthread() {
                assert!(row.state == p.state || row.state == 'R', "{}: pid {} ({}) is {} in xsched, {} in the guest", g.name(), p.pid, p.comm, row.state, p.state);
            }
            // A runnable task is on its runqueue, unless it sleeps and wakes by design and was
            // caught mid-wakeup (TASK_WAKING reads as R before the enqueue, and stays so until the
            // target CPU takes the wakeup from its list): the lab's flipping processes and kernel
            // threads (kcompactd0 wakes on a timer). The converse has a legitimate exception: a
            // task that has set its sleeping state but not yet reached schedule() (or was
            // preempted right there) is still current or queued.
            if row.state == 'R' && !flipping.contains(&p.pid) && !p.is_kthread() {
                assert!(row.queued || row.running, "{}: pid {} ({}) is runnable but on no runqueue", g.name(), p.pid, p.comm);
            }
        }
        // Every process xsched lists was in one of the guest's views, or is newer than both.
        let newest = before.procs.iter().map(|p| p.pid).max().unwrap_or(0);
        for row in rows.values().filter(|r| r.pid == r.tgid) {
            assert!(before.get(row.pid).is_some() || after.get(row.pid).is_some() || row.pid > newest, "{}: pid {} ({}) unknown to the guest", g.name(), row.pid, row.comm);
        }
        // The CPU hogs are runnable, the sleepers are not; at most one running task per CPU.
        for name in ["db", "bkup", "batch"] {
            for pid in g.pids_of(name) {
                let row = &rows[&pid];
                assert!(row.state == 'R' && (row.queued || row.running), "{}: {name} ({pid}) is {:?}", g.name(), row);
            }
        }
        for name in ["snooze", "idler"] {
            for pid in g.pids_of(name) {
                assert!(rows[&pid].state == 'S' && !rows[&pid].queued && !rows[&pid].running, "{}: {name}", g.name());
            }
        }
        let vcpus = g.spec().vcpus;
        for cpu in 0..vcpus {
            assert!(rows.values().filter(|r| r.running && r.cpu == cpu).count() <= 1, "{}: CPU {cpu} runs two tasks", g.name());
        }
    }
}

#[test]
fn cgroup_membership_matches_the_guest() {
    let guests: Vec<&Guest> = lab()[..2].iter().collect();
    let (_, rows) = ps(&guests);
    for (g, rows) in guests.iter().zip(rows) {
        for name in ["db", "bkup", "batch", "idler"] {
            for pid in g.pids_of(name) {
                let truth = g.exec_ok(&format!("cat /proc/{pid}/cgroup")).expect("cgroup");
                let path = truth.trim().strip_prefix("0::").expect("cgroup v2 line");
                assert_eq!(rows[&pid].cgroup, path, "{}: {name} ({pid})", g.name());
            }
        }
    }
    assert_eq!(guests[1].pids_of("batch").len(), 2);
}

#[test]
fn a_guest_with_over_a_thousand_processes_is_read_completely() {
    let g = &lab()[2];
    let [(before, rows, after)]: [_; 1] = bracketed_ps(&[g]).try_into().expect("one guest");
    let processes = rows.values().filter(|r| r.pid == r.tgid).count();
    assert!(processes > SLEEPERS as usize, "only {processes} processes");
    for p in before.procs.iter().filter(|p| after.get(p.pid).is_some()) {
        assert!(rows.contains_key(&p.pid), "pid {} ({}) missing", p.pid, p.comm);
    }
    assert!(before.procs.len() > SLEEPERS as usize);
}

#[test]
fn a_core_dump_lists_the_same_tasks() {
    let g = &lab()[1];
    let core = g.dir().join("ps-test.core");
    g.qmp().expect("qmp").dump_guest_memory(&core).expect("dump");
    let out = xsched_ok(&["ps", "--json", "--domain", &format!("old=core:{}", core.display())]);
    std::fs::remove_file(&core).expect("remove core");
    let table: Value = serde_json::from_str(&out).expect("json");
    let comms: Vec<&str> = table["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["comm"].as_str()).collect();
    for name in ["init", "batch", "idler"] {
        assert!(comms.contains(&name), "{name} missing from the dump's table: {comms:?}");
    }
    assert_eq!(table["domains"][0]["pause_us"], 0, "a dump is never paused");
}

#[test]
fn watch_reports_cpu_use_like_the_guest_measures_it() {
    let g = &lab()[1];
    let batch = g.pids_of("batch");
    // The guest's own measure: runtime growth of the two hogs over its uptime between two views.
    let v1 = g.next_view(VIEW_WAIT).expect("view");
    // Three seconds per refresh: the guest's view printer takes a burst of CPU every second, so
    // shorter windows sample it unevenly.
    let out = xsched_ok(&["ps", "--watch", "--json", "--count", "2", "--interval", "3000", "--domain", &domain_arg(g)]);
    let v2 = g.next_view(VIEW_WAIT).expect("view");
    let run = |v: &ProcView| -> u64 { batch.iter().map(|&p| v.get(p).expect("batch in view").run_ns).sum() };
    let guest_percent = (run(&v2) - run(&v1)) as f64 * 100.0 / (v2.uptime - v1.uptime).as_nanos() as f64;

    let tables: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(tables.len(), 2, "--count 2 prints two tables");
    let last = &tables[1];
    assert!(last["interval_ms"].as_f64().is_some_and(|ms| (2900.0..6000.0).contains(&ms)), "{}", last["interval_ms"]);
    let xsched_percent: f64 = last["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| batch.iter().any(|&p| t["key"]["pid"].as_u64() == Some(u64::from(p))))
        .map(|t| t["cpu_percent"].as_f64().expect("cpu%"))
        .sum();
    let domain_percent = last["domains"][0]["cpu_percent"].as_f64().expect("domain cpu%");
    eprintln!("batch CPU: xsched {xsched_percent:.1}%, guest {guest_percent:.1}%; domain {domain_percent:.1}%");
    // One vCPU: the two hogs share it with the lab's own processes.
    assert!((xsched_percent - guest_percent).abs() < 15.0, "xsched {xsched_percent:.1}% vs guest {guest_percent:.1}%");
    assert!(domain_percent >= xsched_percent && domain_percent <= 105.0, "domain {domain_percent:.1}%");
}
