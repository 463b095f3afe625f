//! The cross-domain task table: every task of every attached guest, in one place.
//!
//! This is what policy plugins will see. Each [`TaskTable::build`] takes the snapshots of one
//! pass over the domains and, given the previous table, computes each task's CPU use from the
//! growth of its `sum_exec_runtime`. A task is identified by domain, pid and start time, so a
//! pid reused by a new task never inherits its predecessor's history.
//! [`TaskTable::build_from`] does the same from plain parts ([`DomainFacts`]), with no live guest.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{Domain, DomainId, DomainSnapshot};
use crate::linux::snapshot::GuestTask;
use crate::profile::Profile;

/// Identifies a task across snapshots: its domain, its pid and when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TaskKey {
    /// The domain it lives in.
    pub domain: DomainId,
    /// Its pid (thread id) inside the guest.
    pub pid: i32,
    /// Its start time, guest-monotonic nanoseconds.
    pub start_time: u64,
}

/// The scheduling policy of a task, as `ps -o cls` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Policy {
    /// `SCHED_NORMAL` ("TS").
    Normal,
    /// `SCHED_FIFO` ("FF").
    Fifo,
    /// `SCHED_RR` ("RR").
    RoundRobin,
    /// `SCHED_BATCH` ("B").
    Batch,
    /// `SCHED_IDLE` ("IDL").
    Idle,
    /// `SCHED_DEADLINE` ("DLN").
    Deadline,
    /// A value this xsched does not know.
    Other(u32),
}

impl Policy {
    /// The `ps -o cls` abbreviation.
    pub fn abbrev(self) -> &'static str {
        match self {
            Self::Normal => "TS",
            Self::Fifo => "FF",
            Self::RoundRobin => "RR",
            Self::Batch => "B",
            Self::Idle => "IDL",
            Self::Deadline => "DLN",
            Self::Other(_) => "?",
        }
    }

    /// Whether the policy is real-time (or deadline), which has no nice value.
    pub fn is_realtime(self) -> bool {
        matches!(self, Self::Fifo | Self::RoundRobin | Self::Deadline)
    }
}

/// One task in the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskEntry {
    /// Its identity.
    pub key: TaskKey,
    /// Its process id.
    pub tgid: i32,
    /// Its command name, lossily decoded (U+FFFD for each invalid UTF-8 sequence); chosen by
    /// the guest, so shown to people through [`printable`](crate::text::printable).
    pub comm: String,
    /// The exact bytes of `comm` when they are not valid UTF-8; absent from JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_bytes: Option<Vec<u8>>,
    /// The state letter `/proc` shows (R, S, D, T, t, X, Z, P, I).
    pub state: char,
    /// The CPU it runs or last ran on.
    pub cpu: u32,
    /// Waiting on a runqueue.
    pub queued: bool,
    /// Asleep but still in its runqueue's tree until the kernel picks it (EEVDF's delayed
    /// dequeue): queued, not runnable.
    pub delayed: bool,
    /// Running right now (its CPU's current task).
    pub running: bool,
    /// Held parked by xsched.
    pub parked: bool,
    /// Its scheduling policy.
    pub policy: Policy,
    /// Its nice value (normal policies).
    pub nice: i32,
    /// Its kernel priority (`prio`).
    pub prio: i32,
    /// Its CFS load weight (`se.load.weight`, unscaled: nice 0 is 1024).
    pub weight: u64,
    /// CPU time consumed, nanoseconds (`se.sum_exec_runtime`).
    pub runtime_ns: u64,
    /// CPU time consumed since the previous table, nanoseconds.
    pub runtime_delta_ns: u64,
    /// CPU use since the previous table, percent of one CPU.
    pub cpu_percent: f64,
    /// `se.vruntime`.
    pub vruntime: u64,
    /// Its cgroup v2 path, lossily decoded; chosen by the guest, like `comm`.
    pub cgroup: Option<String>,
    /// Its task group's address in the guest (the group identity for CFS).
    pub task_group: u64,
    /// Its real uid.
    pub uid: Option<u32>,
    /// A kernel thread.
    pub kthread: bool,
    /// Address of its `task_struct` in the guest.
    pub task_addr: u64,
}

impl TaskEntry {
    /// A plain user task: `SCHED_NORMAL`, nice 0, weight 1024, no CPU time yet, on CPU 0, queued
    /// when its state is `R`. For synthetic tables (tests, benchmarks); set other fields with
    /// struct-update syntax.
    pub fn plain(key: TaskKey, comm: &str, state: char) -> Self {
        Self {
            key,
            tgid: key.pid,
            comm: comm.to_string(),
            comm_bytes: None,
            state,
            cpu: 0,
            queued: state == 'R',
            delayed: false,
            running: false,
            parked: false,
            policy: Policy::Normal,
            nice: 0,
            prio: 120,
            weight: 1024,
            runtime_ns: 0,
            runtime_delta_ns: 0,
            cpu_percent: 0.0,
            vruntime: 0,
            cgroup: None,
            task_group: 0,
            uid: None,
            kthread: false,
            task_addr: 0,
        }
    }
}

/// One domain's line in the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainSummary {
    /// Its id.
    pub id: DomainId,
    /// Its name.
    pub name: String,
    /// The guest kernel release.
    pub release: String,
    /// Online vCPUs.
    pub vcpus: u32,
    /// Tasks read.
    pub tasks: usize,
    /// CPU use of all its tasks since the previous table, percent of one CPU.
    pub cpu_percent: f64,
    /// How long the guest was paused for the snapshot, microseconds.
    pub pause_us: u64,
    /// How long reading the guest took (xsched's part of the pause), microseconds.
    pub read_us: u64,
    /// Someone else held the guest paused: it was read as it is, left paused, and nothing is
    /// written into it until it runs.
    pub paused_by_others: bool,
    /// What could not be read: when not empty, the domain's part of the table is partial.
    pub problems: Vec<String>,
}

/// The cross-domain task table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TaskTable {
    /// Wall time since the previous table, if there was one.
    pub interval_ms: Option<f64>,
    /// The domains, in id order.
    pub domains: Vec<DomainSummary>,
    /// Every task, by domain then in the guest's task-list order.
    pub tasks: Vec<TaskEntry>,
}

/// What the table needs to know of a domain besides its snapshot: plain parts, so that a table
/// can be built without a live guest (benchmarks, tests). [`DomainFacts::of`] takes them from a
/// [`Domain`].
#[derive(Clone, Copy, Debug)]
pub struct DomainFacts<'a> {
    /// Its id.
    pub id: DomainId,
    /// Its name.
    pub name: &'a str,
    /// The guest kernel release.
    pub release: &'a str,
    /// Online vCPUs.
    pub vcpus: u32,
    /// The guest kernel's profile (its `NICE_0_LOAD`, `SCHED_*` and `PF_KTHREAD` constants).
    pub profile: &'a Profile,
}

impl<'a> DomainFacts<'a> {
    /// The facts of an attached domain.
    pub fn of(domain: &'a Domain) -> Self {
        let location = domain.kernel().location();
        Self {
            id: domain.id,
            name: &domain.name,
            release: &location.release,
            vcpus: u32::try_from(location.online_cpus.len()).unwrap_or(u32::MAX),
            profile: domain.kernel().profile(),
        }
    }
}

/// Converts a kernel load weight (scaled by 1024 on 64-bit kernels) to the user-visible scale.
fn unscaled_weight(weight: u64, nice_0_load: u64) -> u64 {
    if nice_0_load > 1024 {
        weight >> 10
    } else {
        weight
    }
}

impl TaskTable {
    /// Builds the table from one pass of snapshots; `previous` (taken `elapsed` earlier) gives
    /// the CPU use.
    pub fn build(pass: &[(&Domain, DomainSnapshot)], previous: Option<(&TaskTable, Duration)>) -> Self {
        let pass: Vec<(DomainFacts<'_>, &DomainSnapshot)> = pass.iter().map(|(d, snap)| (DomainFacts::of(d), snap)).collect();
        Self::build_from(&pass, previous)
    }

    /// [`build`](Self::build) from plain parts: each domain's facts and snapshot.
    pub fn build_from(pass: &[(DomainFacts<'_>, &DomainSnapshot)], previous: Option<(&TaskTable, Duration)>) -> Self {
        let before: HashMap<TaskKey, u64> =
            previous.map(|(t, _)| t.tasks.iter().map(|e| (e.key, e.runtime_ns)).collect()).unwrap_or_default();
        let elapsed_ns = previous.map(|(_, d)| d.as_nanos() as f64).filter(|&ns| ns > 0.0);
        let mut table = TaskTable { interval_ms: elapsed_ns.map(|ns| ns / 1e6), ..Self::default() };
        for (domain, snap) in pass {
            let profile = domain.profile;
            let nice_0_load = profile.constant("NICE_0_LOAD").unwrap_or(1024);
            let policy_of = |raw: u32| -> Policy {
                let is = |name: &str| profile.constant(name).is_ok_and(|v| v == u64::from(raw));
                match () {
                    _ if is("SCHED_NORMAL") => Policy::Normal,
                    _ if is("SCHED_FIFO") => Policy::Fifo,
                    _ if is("SCHED_RR") => Policy::RoundRobin,
                    _ if is("SCHED_BATCH") => Policy::Batch,
                    _ if is("SCHED_IDLE") => Policy::Idle,
                    _ if is("SCHED_DEADLINE") => Policy::Deadline,
                    _ => Policy::Other(raw),
                }
            };
            let pf_kthread = profile.constant("PF_KTHREAD").unwrap_or(0);
            let mut domain_delta = 0u64;
            let first = table.tasks.len();
            for task in &snap.guest.tasks {
                let entry = Self::entry(domain.id, task, &before, elapsed_ns, policy_of(task.record.policy), nice_0_load, pf_kthread);
                domain_delta += entry.runtime_delta_ns;
                table.tasks.push(entry);
            }
            table.domains.push(DomainSummary {
                id: domain.id,
                name: domain.name.to_string(),
                release: domain.release.to_string(),
                vcpus: domain.vcpus,
                tasks: table.tasks.len() - first,
                cpu_percent: elapsed_ns.map_or(0.0, |ns| domain_delta as f64 * 100.0 / ns),
                pause_us: u64::try_from(snap.pause.as_micros()).unwrap_or(u64::MAX),
                read_us: u64::try_from(snap.read.as_micros()).unwrap_or(u64::MAX),
                paused_by_others: snap.held_by_others,
                problems: snap.guest.problems.clone(),
            });
        }
        table
    }

    fn entry(
        domain: DomainId,
        task: &GuestTask,
        before: &HashMap<TaskKey, u64>,
        elapsed_ns: Option<f64>,
        policy: Policy,
        nice_0_load: u64,
        pf_kthread: u64,
    ) -> TaskEntry {
        let r = &task.record;
        let key = TaskKey { domain, pid: r.pid, start_time: r.start_time };
        // A task seen for the first time has no delta; a runtime that went backwards (impossible
        // for one task) counts as none.
        let delta = before.get(&key).map_or(0, |&old| r.sum_exec_runtime.saturating_sub(old));
        TaskEntry {
            key,
            tgid: r.tgid,
            comm: r.comm.clone(),
            comm_bytes: r.comm_bytes.clone(),
            state: task.state,
            cpu: r.cpu,
            queued: task.queued,
            delayed: r.sched_delayed,
            running: task.running,
            parked: task.parked,
            policy,
            nice: if policy.is_realtime() { 0 } else { r.static_prio - 120 },
            prio: r.prio,
            weight: unscaled_weight(r.weight, nice_0_load),
            runtime_ns: r.sum_exec_runtime,
            runtime_delta_ns: delta,
            cpu_percent: elapsed_ns.map_or(0.0, |ns| delta as f64 * 100.0 / ns),
            vruntime: r.vruntime,
            cgroup: task.cgroup.clone(),
            task_group: r.task_group.raw(),
            uid: task.uid,
            kthread: u64::from(r.flags) & pf_kthread != 0,
            task_addr: r.addr.raw(),
        }
    }
}
