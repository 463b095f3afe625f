//! One reading of a guest's scheduler state: every task and every CPU's runqueue.
//!
//! A reader walks the task list only when it may have changed and otherwise re-reads the tasks
//! it knows (see [`super::incremental`]); either way a read returns every task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::memory::Gva;
use crate::profile::Profile;

use super::cgroup::{CgroupLayout, CgroupResolver};
use super::incremental::{ForkCounters, Known, ReadStart};
use super::layout::{Field, StructBuf};
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
    /// Its cgroup v2 path, when it could be read (shared by the tasks of one `css_set`).
    pub cgroup: Option<Arc<str>>,
    /// Its real uid (`cred->uid`), when it could be read.
    pub uid: Option<u32>,
}

/// Everything read from one guest in one pass.
#[derive(Clone, Debug, Default)]
pub struct GuestSnapshot {
    /// Every task. Shared with the reader, which updates it in place at its next read when no
    /// snapshot holds it any more (and copies it when one does): drop a snapshot before the
    /// next read to spare the copy.
    pub tasks: Arc<Vec<GuestTask>>,
    /// Every online CPU's runqueue.
    pub runqueues: Vec<RunqueueSnapshot>,
    /// What could not be read (the snapshot is partial when this is not empty).
    pub problems: Vec<String>,
    /// Which tasks may differ from those of the same reader's previous snapshot.
    pub changes: Changes,
}

/// Which tasks of a snapshot may differ from those of the same reader's previous snapshot: what
/// lets the task table set only those entries (see `TaskTable::rebuild`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The reader that made the snapshot (unique in the process; 0: none, nothing is known).
    pub reader: u64,
    /// That reader's number of the read (from 1).
    pub read: u64,
    /// The indices in `tasks` of those that differ from read `read - 1`'s, each once, in no
    /// particular order; `None`: any may (the read walked the task list).
    pub tasks: Option<Vec<usize>>,
}

/// The next reader's id (0 is no reader's).
static NEXT_READER: AtomicU64 = AtomicU64::new(1);

/// Reads snapshots of one kernel: its layouts, resolved from its profile once, and what the
/// last reads found (so that the next one walks the task list only when it may have changed).
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
    /// The tasks of the last walk, as last read.
    known: Known,
    /// Paths by `css_set`, kept from one walk to the next.
    cgroups: CgroupResolver,
    /// The copy a probe reads a task into.
    probe_buf: StructBuf,
    /// The copy a waiting task's entity is read into, to tell whether it must be probed.
    entity_buf: StructBuf,
    /// This reader's id in its snapshots' [`Changes`].
    id: u64,
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
        let reader = Self::new(kernel.profile(), kernel.symbol("init_task")?, runqueues)?;
        Ok(match ForkCounters::of_kernel(kernel) {
            Some(counters) => reader.with_fork_counters(counters),
            None => {
                log::info!("the profile of {} has no fork counters (total_forks, nr_threads): every read walks the task list", kernel.location().release);
                reader
            }
        })
    }

    /// A reader for the kernel described by `profile`, whose `init_task` is at `init_task` and
    /// whose online CPUs' runqueues are at `runqueues` (`(cpu, address)` pairs). Without
    /// [`Self::with_fork_counters`], every read walks the task list.
    pub fn new(p: &Profile, init_task: Gva, runqueues: Vec<(u32, Gva)>) -> Result<Self, LinuxError> {
        let tasks = TaskLayout::from_profile(p)?;
        let probe_buf = StructBuf::zeroed(tasks.probe_extents().span());
        let entity_buf = StructBuf::zeroed(tasks.entity_extents().span());
        Ok(Self {
            tasks,
            rq: RqLayout::from_profile(p)?,
            cgroup: CgroupLayout::from_profile(p)?,
            states: TaskStates::from_profile(p)?,
            cred_uid: Field::scalar(p, "cred", "uid")?,
            init_task,
            runqueues,
            known: Known::new(None),
            cgroups: CgroupResolver::default(),
            probe_buf,
            entity_buf,
            id: NEXT_READER.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Tells the reader where the kernel's fork counters are: then a read walks the task list
    /// only when they moved (or for the other reasons of [`super::incremental`]).
    pub fn with_fork_counters(mut self, counters: ForkCounters) -> Self {
        self.known.set_counters(counters);
        self
    }

    /// Walks the task list at least every `every` (default
    /// [`DEFAULT_REWALK`](super::incremental::DEFAULT_REWALK)); zero walks at every read.
    pub fn set_rewalk_interval(&mut self, every: Duration) {
        self.known.set_rewalk(every);
    }

    /// How many reads walked the task list so far (the others probed the known tasks).
    pub fn walks(&self) -> u64 {
        self.known.walks()
    }

    /// How many tasks probes re-read in full so far (see [`super::incremental`]).
    pub fn probes(&self) -> u64 {
        self.known.refreshed()
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

    /// Reads every task and runqueue. A guest that runs during the read may change lists under
    /// the walk (which then ends early with a problem noted, never loops) or tasks under a probe
    /// (which then walks): a racy read is hostile input like any other.
    pub fn read<K: KernelMemory + ?Sized>(&mut self, mem: &K) -> GuestSnapshot {
        let mut snap = GuestSnapshot::default();
        for &(cpu, rq) in &self.runqueues {
            match read_runqueue(mem, &self.rq, cpu, rq, TASK_LIMIT) {
                Ok(r) => {
                    log::trace!(
                        "CPU {cpu}: nr_running {} curr {} idle {} cfs {:?} queued {:?}",
                        r.nr_running, r.curr, r.idle, r.cfs_rqs, r.cfs_queued
                    );
                    snap.runqueues.push(r);
                }
                Err(e) => snap.problems.push(format!("CPU {cpu} runqueue: {e}")),
            }
        }
        let start = self.known.start(mem);
        self.known.locate(&snap.runqueues);
        let reason = self.known.reason_to_walk(&start).or_else(|| self.probe(mem).err());
        if let Some(reason) = reason {
            log::debug!("walking the task list: {reason}");
            self.walk(mem, &start, &mut snap.problems);
        }
        self.known.mark_runqueues(&snap.runqueues);
        let changed = self.known.take_changed();
        snap.changes = Changes { reader: self.id, read: self.known.reads(), tasks: reason.is_none().then_some(changed) };
        snap.tasks = Arc::clone(&self.known.tasks);
        snap
    }

    /// Re-reads in place the known tasks that may have changed (see [`Known::probe`]), noting
    /// those that did; fails with the reason to walk instead.
    fn probe<K: KernelMemory + ?Sized>(&mut self, mem: &K) -> Result<(), &'static str> {
        let Self { tasks: l, states, cred_uid, cgroup, cgroups, probe_buf: buf, entity_buf, known, .. } = self;
        let still_waiting = |task: &GuestTask| entity_buf.refill_extents(mem, task.record.addr, l.entity_extents()).is_ok() && task.record.entity_unchanged(entity_buf, l);
        known.probe(still_waiting, |task| {
            let r = &mut task.record;
            let (cred, css_set) = (r.cred, r.css_set);
            buf.refill_extents(mem, r.addr, l.probe_extents()).map_err(|_| "a known task cannot be read")?;
            let Some(changed) = r.refresh(buf, l).map_err(|_| "a known task cannot be decoded")? else {
                return Err("a known task is gone");
            };
            if r.cred != cred {
                task.uid = Some(cred_uid.at(r.cred).and_then(|uid| mem.read_u32(uid)).map_err(|_| "a task's new cred cannot be read")?);
            }
            if r.css_set != css_set {
                task.cgroup = Some(cgroups.path_of_css_set(mem, cgroup, r.css_set).map_err(|_| "a task's new cgroup cannot be read")?);
            }
            task.state = states.letter(r.state, r.exit_state);
            task.parked = r.state == states.xsched_parked;
            Ok(changed)
        })
    }

    /// Walks the task list, resolves every task's cgroup and uid, and remembers the tasks.
    fn walk<K: KernelMemory + ?Sized>(&mut self, mem: &K, start: &ReadStart, problems: &mut Vec<String>) {
        let scan = read_tasks(mem, &self.tasks, self.init_task, TASK_LIMIT);
        let before = problems.len();
        problems.extend(scan.problems);
        // A walk resolves every path anew: css_sets are freed and reused, cgroups renamed.
        self.cgroups.clear();
        let mut tasks = Vec::with_capacity(scan.tasks.len());
        // Per-task problems beyond the first few are only counted: a forged cgroup or cred
        // shared by every task would otherwise make one line per task.
        let mut unlisted = 0usize;
        let mut note = |problem: String| {
            if problems.len() < MAX_PROBLEMS {
                problems.push(problem);
            } else {
                unlisted += 1;
            }
        };
        for record in scan.tasks {
            let cgroup = self.cgroups.path_of_css_set(mem, &self.cgroup, record.css_set).map_err(|e| note(format!("pid {}: cgroup: {e}", record.pid))).ok();
            let uid = self.cred_uid.at(record.cred).and_then(|uid| mem.read_u32(uid)).map_err(|e| note(format!("pid {}: cred: {e}", record.pid))).ok();
            tasks.push(self.task(record, cgroup, uid));
        }
        if unlisted > 0 {
            problems.push(format!("... and {unlisted} more task problems"));
        }
        self.known.remember(start, tasks, problems.len() == before);
    }

    /// A task as a walk found it (not yet marked from the runqueues).
    fn task(&self, record: TaskRecord, cgroup: Option<Arc<str>>, uid: Option<u32>) -> GuestTask {
        GuestTask {
            state: self.states.letter(record.state, record.exit_state),
            parked: record.state == self.states.xsched_parked,
            queued: false,
            running: false,
            cgroup,
            uid,
            record,
        }
    }
}
