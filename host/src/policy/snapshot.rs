//! The task table as a plugin sees it, and the plugin's decisions as task keys.

use std::collections::HashSet;

use abi_stable::std_types::RString;
use xsched_plugin_api::{Decision, DomainInfo, Snapshot, TaskView};

use crate::domain::DomainId;
use crate::run::Ranked;
use crate::table::{TaskKey, TaskTable};

/// The snapshot handed to a plugin: every domain and task of `table`; `parked` tells the tasks
/// xsched holds parked, which count as runnable (they were when parked, and the policy must rank
/// them for the host to unpark them).
pub fn snapshot_of(table: &TaskTable, parked: impl Fn(&TaskKey) -> bool, time_ns: u64, period_ns: u64, host_cpus: u32) -> Snapshot {
    let domains = table.domains.iter().map(|d| DomainInfo { id: d.id.0, name: d.name.as_str().into(), vcpus: d.vcpus });
    let tasks = table.tasks.iter().map(|t| {
        let parked = parked(&t.key);
        TaskView {
            domain: t.key.domain.0,
            pid: t.key.pid,
            start_time: t.key.start_time,
            tgid: t.tgid,
            comm: t.comm.as_str().into(),
            uid: t.uid.into(),
            cgroup: t.cgroup.as_deref().map(RString::from).into(),
            state: u8::try_from(u32::from(t.state)).unwrap_or(b'?'),
            runnable: t.state == 'R' || parked,
            running: t.running,
            parked,
            kthread: t.kthread,
            nice: t.nice,
            weight: t.weight,
            runtime_ns: t.runtime_ns,
            runtime_delta_ns: t.runtime_delta_ns,
        }
    });
    Snapshot { time_ns, period_ns, host_cpus, domains: domains.collect(), tasks: tasks.collect() }
}

/// The ranking of `decisions` over `table`: decisions about tasks that are not in the table
/// (exited, or their pid reused by a task with another start time) are dropped, and of several
/// decisions about one task the first counts.
pub fn ranking_of(decisions: &[Decision], table: &TaskTable) -> Vec<Ranked> {
    let mut known: HashSet<TaskKey> = table.tasks.iter().map(|t| t.key).collect();
    let ranked: Vec<Ranked> = decisions
        .iter()
        .filter_map(|d| {
            let key = TaskKey { domain: DomainId(d.domain), pid: d.pid, start_time: d.start_time };
            // Removing makes a second decision about the same task miss.
            known.remove(&key).then_some(Ranked { key, class: d.class, order: d.order })
        })
        .collect();
    if ranked.len() < decisions.len() {
        log::debug!("policy: {} of {} decisions dropped (unknown or repeated tasks)", decisions.len() - ranked.len(), decisions.len());
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{DomainSummary, TaskEntry};

    fn entry(domain: u32, pid: i32, state: char) -> TaskEntry {
        let key = TaskKey { domain: DomainId(domain), pid, start_time: 7 };
        TaskEntry {
            nice: -5,
            prio: 115,
            weight: 3121,
            runtime_ns: 900,
            runtime_delta_ns: 90,
            cgroup: Some("/batch".into()),
            uid: Some(1000),
            ..TaskEntry::plain(key, &format!("t{pid}"), state)
        }
    }

    fn table() -> TaskTable {
        let domain = |id: u32| DomainSummary {
            id: DomainId(id),
            name: format!("guest{id}"),
            release: "6.1".into(),
            vcpus: 2,
            tasks: 0,
            cpu_percent: 0.0,
            pause_us: 0,
            read_us: 0,
            paused_by_others: false,
            problems: vec![],
        };
        TaskTable { interval_ms: None, domains: vec![domain(0), domain(1)], tasks: vec![entry(0, 10, 'R'), entry(1, 20, 'S'), entry(1, 21, 'P')] }
    }

    #[test]
    fn the_snapshot_carries_every_domain_and_task() {
        let t = table();
        let parked = TaskKey { domain: DomainId(1), pid: 21, start_time: 7 };
        let snap = snapshot_of(&t, |k| *k == parked, 5, 10_000_000, 3);
        assert_eq!((snap.time_ns, snap.period_ns, snap.host_cpus), (5, 10_000_000, 3));
        assert_eq!(snap.domains.iter().map(|d| (d.id, d.name.as_str(), d.vcpus)).collect::<Vec<_>>(), [(0, "guest0", 2), (1, "guest1", 2)]);
        let view = &snap.tasks[0];
        assert_eq!((view.domain, view.pid, view.start_time, view.tgid, view.comm()), (0, 10, 7, 10, "t10"));
        assert_eq!((view.uid(), view.cgroup(), view.state, view.nice, view.weight), (Some(1000), Some("/batch"), b'R', -5, 3121));
        assert_eq!((view.runtime_ns, view.runtime_delta_ns), (900, 90));
        assert_eq!(snap.tasks.iter().map(|v| (v.runnable, v.parked)).collect::<Vec<_>>(), [(true, false), (false, false), (true, true)]);
    }

    #[test]
    fn decisions_about_unknown_tasks_are_dropped() {
        let t = table();
        let d = |domain, pid, start_time, class| Decision { domain, pid, start_time, class, order: 4 };
        let ranked = ranking_of(&[d(0, 10, 7, 1), d(1, 20, 8, 0), d(5, 10, 7, 0), d(0, 10, 7, 0), d(1, 21, 7, 2)], &t);
        let keys: Vec<(u32, i32, u32)> = ranked.iter().map(|r| (r.key.domain.0, r.key.pid, r.class)).collect();
        // pid 20 with another start time is a reused pid; domain 5 does not exist; the second
        // decision about pid 10 is ignored.
        assert_eq!(keys, [(0, 10, 1), (1, 21, 2)]);
    }
}
