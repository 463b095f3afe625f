//! The task table as a plugin sees it, and the plugin's decisions as task keys.
//!
//! Both run every period, so neither allocates per task in a steady state:
//! [`update_snapshot`] rewrites the previous period's snapshot in place (a task's strings are
//! copied only when they changed), [`update_snapshot_changes`] rewrites only the tasks that
//! changed, and [`ranking_of`] checks the decisions against the table by walking both in order
//! (a policy that decides in snapshot order needs no index).

use std::collections::HashSet;

use abi_stable::std_types::{RNone, RSome, RString};
use xsched_plugin_api::{Decision, DomainInfo, Snapshot, TaskView};

use crate::domain::DomainId;
use crate::table::{Finder, TaskEntry, TaskKey, TaskTable};

use super::Ranked;

/// How many of the likely table indices [`ranking_of`] tries for each decision.
const LIKELY_LOOKAHEAD: usize = 4;

/// The snapshot handed to a plugin: every domain and task of `table`; `parked` tells the tasks
/// xsched holds parked, which count as runnable (they were when parked, and the policy must rank
/// them for the host to unpark them).
pub fn snapshot_of(table: &TaskTable, parked: impl Fn(&TaskKey) -> bool, time_ns: u64, period_ns: u64, host_cpus: u32) -> Snapshot {
    let mut snapshot = Snapshot::default();
    update_snapshot(&mut snapshot, table, parked, time_ns, period_ns, host_cpus);
    snapshot
}

/// Makes `snapshot` what [`snapshot_of`] returns for the same arguments, reusing what it holds:
/// a task at the same place with the same names costs no allocation.
pub fn update_snapshot(snapshot: &mut Snapshot, table: &TaskTable, parked: impl Fn(&TaskKey) -> bool, time_ns: u64, period_ns: u64, host_cpus: u32) {
    set_header(snapshot, table, time_ns, period_ns, host_cpus);
    let tasks = &mut snapshot.tasks;
    tasks.truncate(table.tasks.len());
    for (i, t) in table.tasks.iter().enumerate() {
        let parked = parked(&t.key);
        match tasks.get_mut(i) {
            Some(view) => set_view(view, t, parked),
            None => {
                let mut view = TaskView {
                    domain: 0,
                    pid: 0,
                    start_time: 0,
                    tgid: 0,
                    comm: RString::new(),
                    uid: RNone,
                    cgroup: RNone,
                    state: 0,
                    runnable: false,
                    running: false,
                    parked: false,
                    kthread: false,
                    nice: 0,
                    weight: 0,
                    runtime_ns: 0,
                    runtime_delta_ns: 0,
                };
                set_view(&mut view, t, parked);
                tasks.push(view);
            }
        }
    }
}

/// [`update_snapshot`] for a `snapshot` that holds the table numbered `table.changes.base`
/// with the tasks `parked_before` parked (the caller knows): rewrites only the views of the
/// entries the rebuild that made `table` set ([`TableChanges`](crate::table::TableChanges)) and
/// of the tasks parked or unparked since, the others being what rewriting them would make.
/// Returns the indices rewritten, ascending; `None`, having changed nothing, when the table
/// does not tell which entries were set (call [`update_snapshot`] then).
pub fn update_snapshot_changes(snapshot: &mut Snapshot, table: &TaskTable, parked: &HashSet<TaskKey>, parked_before: &HashSet<TaskKey>, time_ns: u64, period_ns: u64, host_cpus: u32) -> Option<Vec<usize>> {
    let updated = table.changes.updated.as_deref()?;
    if snapshot.tasks.len() != table.tasks.len() {
        return None;
    }
    let mut rewritten = updated.to_vec();
    if parked != parked_before {
        let mut finder = Finder::new(table);
        rewritten.extend(parked.symmetric_difference(parked_before).filter_map(|key| finder.find(key)));
    }
    rewritten.sort_unstable();
    rewritten.dedup();
    set_header(snapshot, table, time_ns, period_ns, host_cpus);
    for &i in &rewritten {
        if let (Some(view), Some(t)) = (snapshot.tasks.get_mut(i), table.tasks.get(i)) {
            set_view(view, t, !parked.is_empty() && parked.contains(&t.key));
        }
    }
    Some(rewritten)
}

fn set_header(snapshot: &mut Snapshot, table: &TaskTable, time_ns: u64, period_ns: u64, host_cpus: u32) {
    snapshot.time_ns = time_ns;
    snapshot.period_ns = period_ns;
    snapshot.host_cpus = host_cpus;
    let domains = &mut snapshot.domains;
    domains.truncate(table.domains.len());
    for (i, d) in table.domains.iter().enumerate() {
        match domains.get_mut(i) {
            Some(info) => {
                info.id = d.id.0;
                info.vcpus = d.vcpus;
                set_text(&mut info.name, &d.name);
            }
            None => domains.push(DomainInfo { id: d.id.0, name: d.name.as_str().into(), vcpus: d.vcpus }),
        }
    }
}

/// Makes `view` the view of `t`, reusing its strings.
fn set_view(view: &mut TaskView, t: &TaskEntry, parked: bool) {
    set_text(&mut view.comm, &t.comm);
    match (&mut view.cgroup, &t.cgroup) {
        (RSome(mine), Some(path)) => set_text(mine, path),
        (mine, path) => *mine = path.as_deref().map(RString::from).into(),
    }
    *view = TaskView {
        domain: t.key.domain.0,
        pid: t.key.pid,
        start_time: t.key.start_time,
        tgid: t.tgid,
        comm: std::mem::take(&mut view.comm),
        uid: t.uid.into(),
        cgroup: std::mem::replace(&mut view.cgroup, RNone),
        state: u8::try_from(u32::from(t.state)).unwrap_or(b'?'),
        runnable: t.state == 'R' || parked,
        running: t.running,
        parked,
        kthread: t.kthread,
        nice: t.nice,
        weight: t.weight,
        runtime_ns: t.runtime_ns,
        runtime_delta_ns: t.runtime_delta_ns,
    };
}

/// Makes `text` hold `value`, reusing its allocation (none when it holds it already).
fn set_text(text: &mut RString, value: &str) {
    if text.as_str() != value {
        text.clear();
        text.push_str(value);
    }
}

/// The ranking of `decisions` over `table`: decisions about tasks that are not in the table
/// (exited, or their pid reused by a task with another start time) are dropped, and of several
/// decisions about one task the first counts.
///
/// Each decision's task is looked for first among the next few of `likely` (table indices,
/// ascending: the hint's runnable tasks, which policies decide about in that order), then after
/// the previous one's in the table, at most one pass over the table for all decisions; past
/// that (decisions out of table order), in an index.
pub fn ranking_of(decisions: &[Decision], table: &TaskTable, likely: &[u32]) -> Vec<Ranked> {
    let mut decided = vec![false; table.tasks.len()];
    let mut finder = Finder::new(table);
    let mut next_likely = 0;
    let mut ranked = Vec::with_capacity(decisions.len());
    for d in decisions {
        let key = TaskKey { domain: DomainId(d.domain), pid: d.pid, start_time: d.start_time };
        let ahead = likely.get(next_likely..).unwrap_or_default().iter().take(LIKELY_LOOKAHEAD);
        let at = match ahead.enumerate().find(|(_, &i)| table.tasks.get(i as usize).is_some_and(|t| t.key == key)) {
            Some((offset, &i)) => {
                next_likely += offset + 1;
                Some(i as usize)
            }
            None => finder.find(&key),
        };
        if let Some(seen) = at.and_then(|i| decided.get_mut(i)).filter(|seen| !**seen) {
            *seen = true;
            ranked.push(Ranked { key, class: d.class, order: d.order });
        }
    }
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
        TaskTable { interval_ms: None, domains: vec![domain(0), domain(1)], tasks: vec![entry(0, 10, 'R'), entry(1, 20, 'S'), entry(1, 21, 'P')], ..TaskTable::default() }
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
    fn a_snapshot_rewritten_for_the_changes_is_the_snapshot_of_the_table() {
        let none = HashSet::new();
        let before = table();
        let mut snap = snapshot_of(&before, |_| false, 5, 10_000_000, 3);
        let mut after = before.clone();
        after.tasks[1] = TaskEntry { comm: "renamed".into(), runtime_ns: 950, runtime_delta_ns: 50, state: 'R', ..after.tasks[1].clone() };
        after.changes.updated = Some(vec![1]);
        assert_eq!(update_snapshot_changes(&mut snap, &after, &none, &none, 6, 10_000_000, 3), Some(vec![1]));
        assert_eq!(snap, snapshot_of(&after, |_| false, 6, 10_000_000, 3));
        // Task 0 parked since, though its entry did not change: its view is rewritten too.
        let parked = HashSet::from([after.tasks[0].key]);
        after.changes.updated = Some(vec![]);
        assert_eq!(update_snapshot_changes(&mut snap, &after, &parked, &none, 6, 10_000_000, 3), Some(vec![0]));
        assert_eq!(snap, snapshot_of(&after, |k| parked.contains(k), 6, 10_000_000, 3));
        // And unparked again.
        assert_eq!(update_snapshot_changes(&mut snap, &after, &none, &parked, 6, 10_000_000, 3), Some(vec![0]));
        assert_eq!(snap, snapshot_of(&after, |_| false, 6, 10_000_000, 3));
        // A table that does not say what changed, or has another number of tasks, is refused.
        after.changes.updated = None;
        assert_eq!(update_snapshot_changes(&mut snap, &after, &none, &none, 7, 10_000_000, 3), None);
        after.changes.updated = Some(vec![0]);
        after.tasks.pop();
        assert_eq!(update_snapshot_changes(&mut snap, &after, &none, &none, 7, 10_000_000, 3), None);
        assert_eq!(snap.time_ns, 6, "a refused update changes nothing");
    }

    #[test]
    fn decisions_about_unknown_tasks_are_dropped() {
        let t = table();
        let d = |domain, pid, start_time, class| Decision { domain, pid, start_time, class, order: 4 };
        let decisions = [d(0, 10, 7, 1), d(1, 20, 8, 0), d(5, 10, 7, 0), d(0, 10, 7, 0), d(1, 21, 7, 2)];
        // With no likely indices, right ones, or wrong ones: the same ranking.
        for likely in [&[][..], &[0, 2], &[1, 2, 0, 0, 1]] {
            let ranked = ranking_of(&decisions, &t, likely);
            let keys: Vec<(u32, i32, u32)> = ranked.iter().map(|r| (r.key.domain.0, r.key.pid, r.class)).collect();
            // pid 20 with another start time is a reused pid; domain 5 does not exist; the
            // second decision about pid 10 is ignored.
            assert_eq!(keys, [(0, 10, 1), (1, 21, 2)], "likely {likely:?}");
        }
    }
}
