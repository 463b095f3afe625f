//! Synthetic snapshots for policy unit tests (no host needed).

use crate::{Decision, DomainInfo, Snapshot, TaskView};

/// A runnable, queued user task of domain `domain` (uid and cgroup unknown, nice 0, no CPU
/// used yet); change fields with struct-update syntax.
pub fn task(domain: u32, pid: i32, comm: &str) -> TaskView {
    TaskView {
        domain,
        pid,
        start_time: 1_000,
        tgid: pid,
        comm: comm.into(),
        uid: None.into(),
        cgroup: None.into(),
        state: b'R',
        runnable: true,
        running: false,
        parked: false,
        kthread: false,
        nice: 0,
        weight: 1024,
        runtime_ns: 0,
        runtime_delta_ns: 0,
    }
}

/// A snapshot of `tasks` in domains named `domains` (name, vCPUs; ids are their positions),
/// with a 10 ms period, a budget of one host CPU, at time 0.
pub fn snapshot(domains: &[(&str, u32)], tasks: Vec<TaskView>) -> Snapshot {
    let domains = (0u32..).zip(domains).map(|(id, (name, vcpus))| DomainInfo { id, name: (*name).into(), vcpus: *vcpus });
    Snapshot { time_ns: 0, period_ns: 10_000_000, host_cpus: 1, domains: domains.collect(), tasks: tasks.into() }
}

/// The pids of `decisions` in rank order, as the host takes them: class, order, then domain
/// and pid.
pub fn ranked_pids(decisions: &[Decision]) -> Vec<i32> {
    let mut sorted = decisions.to_vec();
    sorted.sort_by_key(|d| (d.class, d.order, d.domain, d.pid));
    sorted.iter().map(|d| d.pid).collect()
}

/// The class given to `pid`, if it was ranked.
pub fn class_of(decisions: &[Decision], pid: i32) -> Option<u32> {
    decisions.iter().find(|d| d.pid == pid).map(|d| d.class)
}
