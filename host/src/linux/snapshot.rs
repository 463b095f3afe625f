//! One consistent reading of a guest's scheduler state: every task and every CPU's runqueue.

use std::collections::HashSet;

use crate::memory::Gva;
use crate::profile::Profile;

use super::cgroup::{CgroupLayout, CgroupResolver};
use super::layout::Field;
use super::runqueue::{read_runqueue, RqLayout, RunqueueSnapshot};
use super::state::TaskStates;
use super::tasks::{read_tasks, TaskLayout, TaskRecord, MAX_PROBLEMS, TASK_LIMIT};
use super::virt::KernelMemory;
use super::{Kernel, LinuxError};

/// A task with what the runqueues say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestTask {
    /// The task as its `task_struct` records it.
    pub record: TaskRecord,
    /// The state letter `/proc` would show.
    pub state: char,
    /// Waiting in a runqueue (CFS tree at any group level, or an RT queue).
    pub queued: bool,
    /// Its CPU's `rq.curr`.
    pub running: bool,
    /// xsched holds it parked (its state is the one xsched parks tasks in).
    pub parked: bool,
    /// Its cgroup v2 path, when it could be read.
    pub cgroup: Option<String>,
    /// Its real uid (`cred->uid`), when it could be read.
    pub uid: Option<u32>,
}

/// Everything read from one guest in one pass.
#[derive(Clone, Debug, Default)]
pub struct GuestSnapshot {
    /// Every task.
    pub tasks: Vec<GuestTask>,
    /// Every online CPU's runqueue.
    pub runqueues: Vec<RunqueueSnapshot>,
    /// What could not be read (the snapshot is partial when this is not empty).
    pub problems: Vec<String>,
}

/// Reads snapshots of one kernel: its layouts, resolved from its profile once.
#[derive(Debug)]
pub struct SnapshotReader {
    tasks: TaskLayout,
    rq: RqLayout,
    cgroup: CgroupLayout,
    states: TaskStates,
    cred_uid: Field,
    init_task: Gva,
    /// `(cpu, &runqueues of that cpu)` for every online CPU.
    runqueues: Vec<(u32, Gva)>,
}

impl SnapshotReader {
    /// A reader for a located kernel: its profile, `init_task` and online CPUs' runqueues.
    pub fn for_kernel(kernel: &Kernel) -> Result<Self, LinuxError> {
        let runqueues = kernel
            .location()
            .online_cpus
            .iter()
            .map(|&cpu| kernel.per_cpu("runqueues", cpu).map(|rq| (cpu, rq)))
            .collect::<Result<_, _>>()?;
        Self::new(kernel.profile(), kernel.symbol("init_task")?, runqueues)
    }

    /// A reader for the kernel described by `profile`, whose `init_task` is at `init_task` and
    /// whose online CPUs' runqueues are at `runqueues` (`(cpu, address)` pairs).
    pub fn new(p: &Profile, init_task: Gva, runqueues: Vec<(u32, Gva)>) -> Result<Self, LinuxError> {
        Ok(Self {
            tasks: TaskLayout::from_profile(p)?,
            rq: RqLayout::from_profile(p)?,
            cgroup: CgroupLayout::from_profile(p)?,
            states: TaskStates::from_profile(p)?,
            cred_uid: Field::scalar(p, "cred", "uid")?,
            init_task,
            runqueues,
        })
    }

    /// The CPUs that sit in their idle task although their runqueue holds tasks: an idle vCPU
    /// halted before it noticed a wakeup (see `Domain::unpark`).
    pub fn stalled_cpus<K: KernelMemory + ?Sized>(&self, mem: &K) -> Result<Vec<u32>, LinuxError> {
        let mut stalled = Vec::new();
        for &(cpu, rq) in &self.runqueues {
            let curr = mem.read_ptr(self.rq.curr.at(rq)?)?;
            let idle = mem.read_ptr(self.rq.idle.at(rq)?)?;
            let nr_running = mem.read_u32(self.rq.nr_running.at(rq)?)?;
            if curr == idle && nr_running > 0 {
                stalled.push(cpu);
            }
        }
        Ok(stalled)
    }

    /// Reads every task and runqueue. The guest should be paused: a running guest may change
    /// lists under the walk (which then ends early with a problem noted, never loops).
    pub fn read<K: KernelMemory + ?Sized>(&self, mem: &K) -> GuestSnapshot {
        let mut snap = GuestSnapshot::default();
        for &(cpu, rq) in &self.runqueues {
            match read_runqueue(mem, &self.rq, cpu, rq, TASK_LIMIT) {
                Ok(r) => {
                    log::debug!(
                        "CPU {cpu}: nr_running {} curr {} idle {} cfs {:?} queued {:?}",
                        r.nr_running, r.curr, r.idle, r.cfs_rqs, r.cfs_queued
                    );
                    snap.runqueues.push(r);
                }
                Err(e) => snap.problems.push(format!("CPU {cpu} runqueue: {e}")),
            }
        }
        let queued: HashSet<Gva> = snap.runqueues.iter().flat_map(|r| r.cfs_queued.iter().chain(&r.rt_queued)).copied().collect();
        let running: HashSet<Gva> = snap.runqueues.iter().map(|r| r.curr).collect();
        let scan = read_tasks(mem, &self.tasks, self.init_task, TASK_LIMIT);
        snap.problems.extend(scan.problems);
        let mut cgroups = CgroupResolver::default();
        snap.tasks.reserve_exact(scan.tasks.len());
        // Per-task problems beyond the first few are only counted: a forged cgroup or cred
        // shared by every task would otherwise make one line per task.
        let mut unlisted = 0usize;
        let mut note = |problem: String| {
            if snap.problems.len() < MAX_PROBLEMS {
                snap.problems.push(problem);
            } else {
                unlisted += 1;
            }
        };
        for record in scan.tasks {
            let cgroup = cgroups.path_of_css_set(mem, &self.cgroup, record.css_set).map_err(|e| note(format!("pid {}: cgroup: {e}", record.pid))).ok();
            let uid = self.cred_uid.at(record.cred).and_then(|uid| mem.read_u32(uid)).map_err(|e| note(format!("pid {}: cred: {e}", record.pid))).ok();
            snap.tasks.push(GuestTask {
                state: self.states.letter(record.state, record.exit_state),
                parked: record.state == self.states.xsched_parked,
                queued: queued.contains(&record.addr),
                running: running.contains(&record.addr),
                cgroup,
                uid,
                record,
            });
        }
        if unlisted > 0 {
            snap.problems.push(format!("... and {unlisted} more task problems"));
        }
        snap
    }
}
