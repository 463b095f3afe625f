//! Admission: which tasks may run this period, given a global ranking.
//!
//! Managed tasks that want a CPU (runnable ones, and the ones xsched holds parked) are taken in
//! rank order (class, then order; lower first). A task is admitted while its domain still has a
//! free vCPU and the host's CPU budget is not used up; the rest are to be parked. Admitted tasks
//! that are parked are to be unparked. Unmanaged tasks are never parked and use no budget: the
//! policy chose not to rule them.
//!
//! There is no anti-thrash rule beyond the period itself: a ranking that flips every period
//! flips the parking too. Equal (class, order) pairs are broken by domain and pid, so the same
//! inputs always give the same plan.

use std::collections::{HashMap, HashSet};

use crate::domain::DomainId;
use crate::table::{Finder, TaskKey, TaskTable};

/// One task's place in the policy's global ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// The task.
    pub key: TaskKey,
    /// Its class: lower is more important.
    pub class: u32,
    /// Its order within the class: lower goes first.
    pub order: u64,
}

/// What to change this period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Runnable tasks to park.
    pub park: Vec<TaskKey>,
    /// Parked tasks to unpark.
    pub unpark: Vec<TaskKey>,
    /// Tasks admitted to run.
    pub admitted: Vec<TaskKey>,
    /// Ranked tasks that want no CPU this period (sleeping, not parked).
    pub idle: Vec<TaskKey>,
}

/// Plans the period: `ranking` from the policy, `parked` the tasks xsched holds parked,
/// `host_cpus` the host CPU budget.
///
/// Only the ranked tasks are looked at: each is found in the table after the one before (see
/// [`Finder`]), not through a set of every runnable task.
pub fn admit(table: &TaskTable, ranking: &[Ranked], parked: &HashSet<TaskKey>, host_cpus: u32) -> Plan {
    let mut finder = Finder::new(table);
    let mut runnable = |key: &TaskKey| finder.find(key).and_then(|i| table.tasks.get(i)).is_some_and(|t| t.state == 'R');
    let mut free: HashMap<DomainId, u32> = table.domains.iter().map(|d| (d.id, d.vcpus)).collect();
    let mut budget = host_cpus;
    let (mut order, idle): (Vec<&Ranked>, Vec<&Ranked>) =
        ranking.iter().partition(|r| runnable(&r.key) || (!parked.is_empty() && parked.contains(&r.key)));
    order.sort_by_key(|r| (r.class, r.order, r.key.domain, r.key.pid, r.key.start_time));
    order.dedup_by_key(|r| r.key);
    let mut plan = Plan { idle: idle.iter().map(|r| r.key).collect(), ..Plan::default() };
    plan.idle.sort_unstable();
    plan.idle.dedup();
    for r in order {
        let slots = free.get_mut(&r.key.domain);
        match slots {
            Some(slots) if *slots > 0 && budget > 0 => {
                *slots -= 1;
                budget -= 1;
                plan.admitted.push(r.key);
                if parked.contains(&r.key) {
                    plan.unpark.push(r.key);
                }
            }
            _ if !parked.contains(&r.key) => plan.park.push(r.key),
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{DomainSummary, TaskEntry};

    fn domain(id: u32, vcpus: u32) -> DomainSummary {
        DomainSummary { id: DomainId(id), name: format!("u{id}"), release: "test".into(), vcpus, tasks: 0, cpu_percent: 0.0, pause_us: 0, read_us: 0, paused_by_others: false, problems: vec![] }
    }

    fn task(domain: u32, pid: i32, state: char) -> TaskEntry {
        TaskEntry::plain(TaskKey { domain: DomainId(domain), pid, start_time: 1 }, &format!("t{pid}"), state)
    }

    fn rank(t: &TaskEntry, class: u32) -> Ranked {
        Ranked { key: t.key, class, order: 0 }
    }

    /// The paper's case: DB (u1) > web (u2) > bkup (u1), one host CPU.
    #[test]
    fn the_budget_goes_by_rank_across_domains() {
        let (db, web, bkup) = (task(1, 10, 'R'), task(2, 20, 'R'), task(1, 30, 'R'));
        let table = TaskTable { interval_ms: None, domains: vec![domain(1, 1), domain(2, 1)], tasks: vec![db.clone(), web.clone(), bkup.clone()], ..TaskTable::default() };
        let ranking = [rank(&db, 0), rank(&web, 1), rank(&bkup, 2)];
        let plan = admit(&table, &ranking, &HashSet::new(), 1);
        assert_eq!(plan.admitted, vec![db.key]);
        assert_eq!(plan.park, vec![web.key, bkup.key]);

        // DB sleeps: web runs, bkup stays parked (it is not unparked: web outranks it).
        let sleeping_db = TaskEntry { state: 'S', ..db.clone() };
        let table = TaskTable { tasks: vec![sleeping_db, web.clone(), bkup.clone()], ..table };
        let parked: HashSet<TaskKey> = [web.key, bkup.key].into();
        let plan = admit(&table, &ranking, &parked, 1);
        assert_eq!((plan.admitted.clone(), plan.unpark.clone(), plan.park.clone()), (vec![web.key], vec![web.key], vec![]));

        // Both sleep: bkup gets the CPU.
        let table = TaskTable { tasks: vec![TaskEntry { state: 'S', ..db.clone() }, TaskEntry { state: 'S', ..web.clone() }, bkup.clone()], ..table };
        let plan = admit(&table, &ranking, &[bkup.key].into(), 1);
        assert_eq!(plan.unpark, vec![bkup.key]);
        assert_eq!(plan.idle, vec![db.key, web.key], "sleeping ranked tasks are listed as idle");
    }

    #[test]
    fn a_domain_never_gets_more_than_its_vcpus_and_unmanaged_tasks_are_left_alone() {
        let tasks: Vec<TaskEntry> = (0..4).map(|i| task(1, i, 'R')).collect();
        let table = TaskTable { interval_ms: None, domains: vec![domain(1, 2)], tasks: tasks.clone(), ..TaskTable::default() };
        let ranking: Vec<Ranked> = tasks[..3].iter().map(|t| rank(t, 0)).collect();
        let plan = admit(&table, &ranking, &HashSet::new(), 8);
        assert_eq!(plan.admitted, vec![tasks[0].key, tasks[1].key]);
        assert_eq!(plan.park, vec![tasks[2].key], "task 3 is unmanaged");
    }
}
