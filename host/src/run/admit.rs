//! Admission: which tasks may run this period, given a global ranking.
//!
//! Managed tasks that want a CPU (runnable ones, and the ones xsched holds parked) are taken in
//! rank order (class, then order; lower first). A task is admitted while its domain still has a
//! free vCPU and the host's CPU budget is not used up; the rest are to be parked. Admitted tasks
//! that are parked are to be unparked. Unmanaged tasks are never parked and use no budget: the
//! policy chose not to rule them.
//!
//! Domain floors and caps ([`Shares`]) come after the ranking: a capped domain's tasks are
//! passed over while its cap is spent, and a domain owed its floor takes a slot from the
//! lowest-ranked admitted task of a domain owed nothing.
//!
//! There is no anti-thrash rule beyond the period itself: a ranking that flips every period
//! flips the parking too. Equal (class, order) pairs are broken by domain and pid, so the same
//! inputs always give the same plan.

use std::collections::{HashMap, HashSet};

use crate::domain::DomainId;
use crate::policy::Ranked;
use crate::table::{Finder, TaskKey, TaskTable};

use super::share::Shares;

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
/// `host_cpus` the host CPU budget; no domain has a floor or a cap.
pub fn admit(table: &TaskTable, ranking: &[Ranked], parked: &HashSet<TaskKey>, host_cpus: u32) -> Plan {
    admit_within(table, ranking, parked, host_cpus, &mut Shares::default())
}

/// [`admit`] within the domains' floors and caps, `shares` (their accounts move on a period).
///
/// Only the ranked tasks are looked at: each is found in the table after the one before (see
/// [`Finder`]), not through a set of every runnable task.
pub fn admit_within(table: &TaskTable, ranking: &[Ranked], parked: &HashSet<TaskKey>, host_cpus: u32, shares: &mut Shares) -> Plan {
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

    shares.accrue(|d| order.iter().any(|r| r.key.domain == d), host_cpus);
    let mut taken = vec![false; order.len()];
    for (i, r) in order.iter().enumerate() {
        let d = r.key.domain;
        if let Some(slots) = free.get_mut(&d).filter(|s| **s > 0 && budget > 0 && shares.may_take(d)) {
            *slots -= 1;
            budget -= 1;
            shares.take(d);
            taken[i] = true;
        }
    }
    for d in shares.owed_domains() {
        while shares.is_owed(d) && shares.may_take(d) && free.get(&d).is_some_and(|s| *s > 0) {
            let Some(next) = (0..order.len()).find(|&i| !taken[i] && order[i].key.domain == d) else { break };
            if budget == 0 {
                let victim = (0..order.len()).rev().find(|&v| taken[v] && order[v].key.domain != d && !shares.is_owed(order[v].key.domain));
                let Some(v) = victim else { break };
                let vd = order[v].key.domain;
                taken[v] = false;
                budget += 1;
                *free.entry(vd).or_default() += 1;
                shares.give_back(vd);
            }
            taken[next] = true;
            budget -= 1;
            *free.entry(d).or_default() -= 1;
            shares.take(d);
        }
    }
    shares.settle();

    for (r, admitted) in order.iter().zip(taken) {
        match (admitted, parked.contains(&r.key)) {
            (true, was_parked) => {
                plan.admitted.push(r.key);
                if was_parked {
                    plan.unpark.push(r.key);
                }
            }
            (false, false) => plan.park.push(r.key),
            (false, true) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Share;
    use crate::run::share::check_floors;
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

    /// Runs `periods` periods of one host CPU over a liar (domain 1: its task claims the top
    /// class) and an honest domain 2, each with one task that always wants the CPU; returns the
    /// periods each got.
    fn periods_won(shares: &[(u32, Share)], periods: u32) -> (u32, u32) {
        let (liar, honest) = (task(1, 10, 'R'), task(2, 20, 'R'));
        let table = TaskTable { interval_ms: None, domains: vec![domain(1, 1), domain(2, 1)], tasks: vec![liar.clone(), honest.clone()], ..TaskTable::default() };
        let ranking = [rank(&liar, 0), rank(&honest, 1)];
        let mut shares = Shares::of(shares.iter().map(|(id, s)| (DomainId(*id), *s)));
        let mut parked: HashSet<TaskKey> = HashSet::new();
        let (mut won_liar, mut won_honest) = (0, 0);
        for _ in 0..periods {
            let plan = admit_within(&table, &ranking, &parked, 1, &mut shares);
            assert_eq!(plan.admitted.len(), 1, "one host CPU: {plan:?}");
            won_liar += u32::from(plan.admitted.contains(&liar.key));
            won_honest += u32::from(plan.admitted.contains(&honest.key));
            for key in &plan.park {
                parked.insert(*key);
            }
            for key in &plan.unpark {
                parked.remove(key);
            }
        }
        (won_liar, won_honest)
    }

    #[test]
    fn a_floor_holds_against_a_domain_that_ranks_itself_first() {
        // The ranking alone: the liar gets everything.
        assert_eq!(periods_won(&[], 100), (100, 0));
        // A 25% floor: the honest domain gets one period in four.
        let floor = Share { floor_percent: 25, cap_percent: 100 };
        assert_eq!(periods_won(&[(2, floor)], 100), (75, 25));
        // Both floored at 50%: they alternate, whatever the ranking says.
        let half = Share { floor_percent: 50, cap_percent: 100 };
        assert_eq!(periods_won(&[(1, half), (2, half)], 100), (50, 50));
    }

    #[test]
    fn a_cap_limits_a_domain_and_leaves_the_rest_to_the_others() {
        let cap = Share { floor_percent: 0, cap_percent: 60 };
        let (liar, honest) = periods_won(&[(1, cap)], 100);
        assert_eq!((liar, honest), (60, 40));
    }

    #[test]
    fn a_floor_is_not_owed_while_its_domain_wants_nothing() {
        // Domain 2's task sleeps for 50 periods, then wants the CPU: it gets its 25% from then
        // on, not a burst of what it would have been owed.
        let (liar, honest) = (task(1, 10, 'R'), task(2, 20, 'S'));
        let mut table = TaskTable { interval_ms: None, domains: vec![domain(1, 1), domain(2, 1)], tasks: vec![liar.clone(), honest.clone()], ..TaskTable::default() };
        let ranking = [rank(&liar, 0), rank(&honest, 1)];
        let mut shares = Shares::of([(DomainId(2), Share { floor_percent: 25, cap_percent: 100 })]);
        for _ in 0..50 {
            let plan = admit_within(&table, &ranking, &HashSet::new(), 1, &mut shares);
            assert_eq!(plan.admitted, vec![liar.key]);
        }
        table.tasks[1].state = 'R';
        let won: Vec<bool> = (0..8).map(|_| admit_within(&table, &ranking, &HashSet::new(), 1, &mut shares).admitted.contains(&honest.key)).collect();
        assert_eq!(won, [false, false, false, true, false, false, false, true]);
    }

    #[test]
    fn floors_above_the_whole_budget_are_refused() {
        let share = |floor| Share { floor_percent: floor, cap_percent: 100 };
        assert_eq!(check_floors([("a", share(60)), ("b", share(40))]), Ok(()));
        let error = check_floors([("a", share(60)), ("b", share(50))]).expect_err("110%");
        assert!(error.contains("110%") && error.contains("a 60%") && error.contains("b 50%"), "{error}");
    }

    #[test]
    fn a_flood_of_runnable_tasks_takes_no_more_than_the_floors_leave() {
        // Domain 1 forks 500 runnable tasks and ranks them all above everything; domain 2 has
        // one task and a 50% floor of a 2-CPU budget: it keeps one CPU every period.
        let flood: Vec<TaskEntry> = (0..500).map(|pid| task(1, pid, 'R')).collect();
        let honest = task(2, 9000, 'R');
        let mut tasks = flood.clone();
        tasks.push(honest.clone());
        let table = TaskTable { interval_ms: None, domains: vec![domain(1, 4), domain(2, 1)], tasks, ..TaskTable::default() };
        let mut ranking: Vec<Ranked> = flood.iter().map(|t| rank(t, 0)).collect();
        ranking.push(rank(&honest, 9));
        let mut shares = Shares::of([(DomainId(2), Share { floor_percent: 50, cap_percent: 100 })]);
        let mut parked: HashSet<TaskKey> = HashSet::new();
        for period in 0..20 {
            let plan = admit_within(&table, &ranking, &parked, 2, &mut shares);
            assert_eq!(plan.admitted.len(), 2, "period {period}: the budget");
            assert!(plan.admitted.contains(&honest.key), "period {period}: the floored task was left out");
            assert!(!plan.park.contains(&honest.key));
            for key in &plan.park {
                parked.insert(*key);
            }
            for key in &plan.unpark {
                parked.remove(key);
            }
        }
        // Without the floor the flood takes both CPUs.
        let plan = admit(&table, &ranking, &HashSet::new(), 2);
        assert!(!plan.admitted.contains(&honest.key) && plan.park.contains(&honest.key));
    }
}

