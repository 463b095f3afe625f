//! What a [`SnapshotReader`](super::snapshot::SnapshotReader) remembers between reads, and when
//! it may trust it.
//!
//! A walk reads every process and thread list and resolves every task's cgroup and uid. Between
//! walks, the reader *probes* tasks of the last walk instead: it re-reads what changes while a
//! task lives ([`TaskRecord::refresh`](super::tasks::TaskRecord::refresh): state, runtime, CPU,
//! priorities, `comm`, the `cred` and `css_set` pointers) at the known address, after checking
//! that the address still holds the same task (pid, tgid and start time).
//!
//! A read probes ([`Known::probe`]) the tasks whose reading can change a decision: those on a
//! runqueue now (queued, or a CPU's current task), those that were runnable, queued, running or
//! parked at their last reading (they may have stopped since, or been killed out of their park),
//! and, in turns, one in [`SWEEP`] of the others, so that every known task is read at least every
//! [`SWEEP`] reads. A task that sleeps at two readings cannot have changed its runnable state in
//! between without being on a runqueue; what it may have done (run briefly, renamed itself,
//! changed credentials or cgroup, exited into a zombie) shows at its next turn, its CPU time
//! counted then. A task cannot leave the task list without the fork counters moving.
//!
//! A task that waited in a runqueue at the last read and still waits in the same CPU's at this
//! one is not re-read in full when its entity's weight, runtime and vruntime are what they were
//! (a few bytes beside the tree node the runqueue walk just read): to change otherwise it must
//! have run, been reweighted, or moved (which renormalises its vruntime). What another task may
//! do to it without any of these (rename it through `/proc`) shows at its turn in the sweep.
//!
//! A read walks ([`Known::reason_to_walk`]) when
//! - it is the first, or the last walk was partial (it had problems);
//! - the kernel's fork counters moved since the last walk ([`ForkCounters`]), or the profile
//!   lacks them (then every read walks);
//! - a runqueue holds a task no walk listed (a fork the counters did not show yet: a racy or a
//!   forged read);
//! - [`DEFAULT_REWALK`] (or the interval set) passed since the last walk: this refreshes what a
//!   probe does not read (`policy`, the task group, a cgroup renamed in place) and bounds how
//!   long forged counters can hide a change;
//! - a probe fails: a known task is gone (its memory freed, or reused by another task) or
//!   cannot be read.
//!
//! A read that probes says which tasks it re-read ([`Changes`](super::snapshot::Changes)): the
//! others are as the previous read left them, so what is made from the snapshot (the task table,
//! a plugin's snapshot) need set only those. A read that walks says nothing of the kind.
//!
//! The counters are read before the walk, so that a fork or exit during the walk shows as a
//! change at the next read. Everything here is checked as hostile input like the walks are: a
//! probe reads only addresses a bounded walk listed, and a lie in the counters costs at most the
//! interval's delay in seeing a new task that is not runnable (runnable ones are on a runqueue).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::memory::Gva;

use super::runqueue::RunqueueSnapshot;
use super::snapshot::GuestTask;
use super::virt::KernelMemory;
use super::{Kernel, LinuxError};

/// How long a reader trusts the task list of its last walk when nothing says it changed.
pub const DEFAULT_REWALK: Duration = Duration::from_secs(1);

/// Every known task is re-read at least once in this many reads (250 ms at a 10 ms period);
/// running ones, and runnable ones whose entity moved, at every read.
pub const SWEEP: u64 = 25;

/// Where kernel/fork.c keeps its counters: `total_forks` (`unsigned long`, grows with every
/// fork) and `nr_threads` (`int`, falls with every task unhashed). Both change under
/// `tasklist_lock` together with the task lists, so while neither moves no task joined or left
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkCounters {
    /// Address of `total_forks`.
    pub total_forks: Gva,
    /// Address of `nr_threads`.
    pub nr_threads: Gva,
}

impl ForkCounters {
    /// The counters of a located kernel, when its profile has both symbols (they are optional:
    /// profiles generated before xsched asked for them lack them).
    pub fn of_kernel(kernel: &Kernel) -> Option<Self> {
        Some(Self { total_forks: kernel.symbol("total_forks").ok()?, nr_threads: kernel.symbol("nr_threads").ok()? })
    }

    /// Reads both counters.
    fn read<K: KernelMemory + ?Sized>(&self, mem: &K) -> Result<Counts, LinuxError> {
        Ok(Counts { forks: mem.read_u64(self.total_forks)?, threads: mem.read_u32(self.nr_threads)? })
    }
}

/// The values of the fork counters at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counts {
    forks: u64,
    threads: u32,
}

/// The tasks of the last walk, as the last read left them, and what decides whether the next
/// read may probe them.
#[derive(Debug)]
pub(super) struct Known {
    /// The tasks, in walk order, as last read; shared with the snapshots handed out (updated in
    /// place when none holds them any more).
    pub(super) tasks: Arc<Vec<GuestTask>>,
    /// Each task's index in `tasks`, by `task_struct` address.
    by_addr: HashMap<Gva, usize>,
    /// Where the counters are, if the profile has them.
    counters: Option<ForkCounters>,
    /// The counters as read before the last walk (`None`: unread, or unreadable).
    counts: Option<Counts>,
    /// When the last walk started (`None`: no walk yet).
    walked: Option<Instant>,
    /// The last walk had no problem.
    complete: bool,
    /// How long a walk is trusted.
    rewalk: Duration,
    /// Walks made.
    walks: u64,
    /// Tasks re-read in full by probes, over all reads.
    refreshed: u64,
    /// Reads made: whose turn it is in the sweep of sleeping tasks.
    reads: u64,
    /// The known tasks (indices) that were runnable or parked at their last reading.
    active: Vec<usize>,
    /// The known tasks the last read found on a runqueue (queued or running).
    flagged: Vec<usize>,
    /// Per known task, the last read that probed it.
    probed: Vec<u64>,
    /// The known tasks (indices) whose reading changed at this read: the only ones that differ
    /// from the read before.
    changed: Vec<usize>,
    /// The known tasks on this read's runqueues, looked up once per read (see [`Self::locate`]).
    located: Vec<Located>,
    /// This read's runqueues hold a task no walk listed.
    unlisted: bool,
    /// The walk count when `located` was made: a walk renumbers the tasks.
    located_at: Option<u64>,
    /// Every runqueue address `located` was made from, in order, with what it was found as.
    looked_up: Vec<(Gva, Option<usize>)>,
    /// The same of the locate before (a buffer kept for its allocation).
    looked_up_before: Vec<(Gva, Option<usize>)>,
}

/// A known task found on one of this read's runqueues.
#[derive(Clone, Copy, Debug)]
struct Located {
    /// Its index among the known tasks.
    index: usize,
    /// It is its CPU's current task (else it waits in a queue).
    running: bool,
    /// The runqueue's CPU.
    cpu: u32,
}

/// What a read starts from: the time and the counters, read before anything else.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadStart {
    now: Instant,
    counts: Option<Counts>,
}

impl Known {
    /// Nothing known yet; `counters` tell forks and exits, when the profile has them.
    pub(super) fn new(counters: Option<ForkCounters>) -> Self {
        Self {
            tasks: Arc::default(),
            by_addr: HashMap::new(),
            counters,
            counts: None,
            walked: None,
            complete: false,
            rewalk: DEFAULT_REWALK,
            walks: 0,
            refreshed: 0,
            reads: 0,
            active: Vec::new(),
            flagged: Vec::new(),
            probed: Vec::new(),
            changed: Vec::new(),
            located: Vec::new(),
            unlisted: false,
            located_at: None,
            looked_up: Vec::new(),
            looked_up_before: Vec::new(),
        }
    }

    /// Uses `counters` from now on (the next read walks).
    pub(super) fn set_counters(&mut self, counters: ForkCounters) {
        self.counters = Some(counters);
        self.walked = None;
    }

    /// Trusts a walk for `every` (zero: every read walks).
    pub(super) fn set_rewalk(&mut self, every: Duration) {
        self.rewalk = every;
    }

    /// Walks made so far.
    pub(super) fn walks(&self) -> u64 {
        self.walks
    }

    /// Tasks re-read in full by probes so far.
    pub(super) fn refreshed(&self) -> u64 {
        self.refreshed
    }

    /// Reads started so far: the number of the current one.
    pub(super) fn reads(&self) -> u64 {
        self.reads
    }

    /// The tasks (indices) whose reading changed at this read (in the last probe, or in their
    /// `queued` and `running` flags), each once, emptied: after a probe that succeeded, every
    /// task that differs from the previous read's.
    pub(super) fn take_changed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.changed)
    }

    /// Reads the counters; the first thing a read does after the runqueues.
    pub(super) fn start<K: KernelMemory + ?Sized>(&mut self, mem: &K) -> ReadStart {
        self.reads += 1;
        let counts = self.counters.and_then(|c| c.read(mem).map_err(|e| log::debug!("fork counters: {e}")).ok());
        ReadStart { now: Instant::now(), counts }
    }

    /// Looks the tasks of this read's `runqueues` up among the known ones, once for
    /// [`Self::reason_to_walk`], [`Self::probe`] and [`Self::mark_runqueues`] (again after a walk).
    pub(super) fn locate(&mut self, runqueues: &[RunqueueSnapshot]) {
        let Self { by_addr, located, unlisted, looked_up, looked_up_before, .. } = self;
        // The last read's look-ups hold while no walk renumbered the tasks: a runqueue that
        // lists the same tasks in the same order costs no hashing.
        let reuse = self.located_at == Some(self.walks);
        std::mem::swap(looked_up, looked_up_before);
        looked_up.clear();
        located.clear();
        *unlisted = false;
        for r in runqueues {
            for (addr, running) in r.cfs_queued.iter().chain(&r.rt_queued).map(|a| (*a, false)).chain([(r.curr, true)]) {
                let found = match looked_up_before.get(looked_up.len()) {
                    Some(&(before, found)) if reuse && before == addr => found,
                    _ => by_addr.get(&addr).copied(),
                };
                looked_up.push((addr, found));
                match found {
                    Some(index) => located.push(Located { index, running, cpu: r.cpu }),
                    None if !running || r.curr != r.idle => *unlisted = true,
                    None => {}
                }
            }
        }
        self.located_at = Some(self.walks);
    }

    /// Re-reads with `refresh` the known tasks whose reading may change a decision (see the
    /// module's docs), those on this read's runqueues as [`Self::locate`] found them; `refresh`
    /// says whether the task changed (noted for [`Self::take_changed`]), or fails with its
    /// reason to walk. A task that waited in the same CPU's runqueue at the last read is passed
    /// to `still_waiting` first, which says whether its entity is as that reading left it: then
    /// it is not refreshed. Only those tasks are touched: a steady read costs what runs, not
    /// what exists.
    pub(super) fn probe(&mut self, mut still_waiting: impl FnMut(&GuestTask) -> bool, mut refresh: impl FnMut(&mut GuestTask) -> Result<bool, &'static str>) -> Result<(), &'static str> {
        let Self { tasks, located, reads, active, flagged, probed, changed, refreshed, .. } = self;
        let tasks = Arc::make_mut(tasks);
        let read = *reads;
        changed.clear();
        let known = probed.len();
        let mut now_active = Vec::with_capacity(active.len());
        let mut probe = |i: usize, waits_on: Option<u32>| -> Result<(), &'static str> {
            let (Some(task), Some(stamp)) = (tasks.get_mut(i), probed.get_mut(i)) else { return Ok(()) };
            if std::mem::replace(stamp, read) == read {
                return Ok(());
            }
            let waited = waits_on.is_some_and(|cpu| task.queued && !task.running && task.state == 'R' && task.record.cpu == cpu);
            if !(waited && still_waiting(task)) {
                *refreshed += 1;
                if refresh(task)? {
                    changed.push(i);
                }
            }
            if task.state == 'R' || task.parked {
                now_active.push(i);
            }
            Ok(())
        };
        // The sweep's turn first: a task it re-reads in full is not spared as still waiting.
        let turn = usize::try_from(read % SWEEP).unwrap_or(0);
        for i in (turn..known).step_by(usize::try_from(SWEEP).unwrap_or(1)) {
            probe(i, None)?;
        }
        for l in located.iter() {
            probe(l.index, (!l.running).then_some(l.cpu))?;
        }
        // `active` and `flagged` are still those of the last read: the tasks that may have
        // stopped since.
        for i in active.iter().chain(flagged.iter()).copied() {
            probe(i, None)?;
        }
        *active = now_active;
        Ok(())
    }

    /// Why this read must walk, or `None` when it may probe the known tasks; this read's
    /// runqueues located first ([`Self::locate`]).
    pub(super) fn reason_to_walk(&self, start: &ReadStart) -> Option<&'static str> {
        let Some(walked) = self.walked else { return Some("first read") };
        if !self.complete {
            return Some("the last walk was partial");
        }
        if self.counters.is_none() {
            return Some("no fork counters in the profile");
        }
        if start.counts.is_none() || start.counts != self.counts {
            return Some("the fork counters moved");
        }
        if start.now.saturating_duration_since(walked) >= self.rewalk {
            return Some("the walk interval passed");
        }
        if self.unlisted {
            return Some("a runqueue holds a task no walk listed");
        }
        None
    }

    /// Replaces the known tasks by those of a walk that started at `start`; `complete` when it
    /// had no problem.
    pub(super) fn remember(&mut self, start: &ReadStart, tasks: Vec<GuestTask>, complete: bool) {
        self.by_addr.clear();
        self.by_addr.extend(tasks.iter().enumerate().map(|(i, t)| (t.record.addr, i)));
        self.active = tasks.iter().enumerate().filter(|(_, t)| t.state == 'R' || t.parked).map(|(i, _)| i).collect();
        self.flagged.clear();
        self.probed = vec![self.reads; tasks.len()];
        self.tasks = Arc::new(tasks);
        self.counts = start.counts;
        self.walked = Some(start.now);
        self.complete = complete;
        self.walks += 1;
    }

    /// Sets each known task's `queued` and `running` from the runqueues (touching only the
    /// tasks flagged before and those flagged now).
    pub(super) fn mark_runqueues(&mut self, runqueues: &[RunqueueSnapshot]) {
        if self.located_at != Some(self.walks) {
            self.locate(runqueues);
        }
        let tasks = Arc::make_mut(&mut self.tasks);
        // The flags before, of the tasks flagged before (the others had none).
        let mut before: Vec<(usize, (bool, bool))> = Vec::with_capacity(self.flagged.len());
        for i in self.flagged.drain(..) {
            if let Some(t) = tasks.get_mut(i) {
                before.push((i, (t.queued, t.running)));
                t.queued = false;
                t.running = false;
            }
        }
        for l in &self.located {
            let Some(t) = tasks.get_mut(l.index) else { continue };
            if l.running {
                t.running = true;
            } else {
                t.queued = true;
            }
            self.flagged.push(l.index);
        }
        before.sort_unstable();
        let was = |i: usize| before.binary_search_by_key(&i, |&(j, _)| j).ok().and_then(|at| before.get(at)).map_or((false, false), |&(_, flags)| flags);
        let mut moved: Vec<usize> = before.iter().map(|&(i, _)| i).chain(self.flagged.iter().copied()).filter(|&i| tasks.get(i).is_some_and(|t| (t.queued, t.running) != was(i))).collect();
        moved.sort_unstable();
        moved.dedup();
        self.changed.retain(|i| moved.binary_search(i).is_err());
        self.changed.extend(moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::layout::Field;
    use crate::linux::snapshot::{GuestSnapshot, SnapshotReader};
    use crate::linux::synthetic::{self, GuestSpec, ProcessSpec, Rng, SyntheticGuest, TaskSched};
    use crate::profile::Profile;

    fn profile() -> Profile {
        synthetic::lab_profile().expect("committed profile")
    }

    fn field(p: &Profile, strukt: &str, name: &str) -> Field {
        Field::of(p, strukt, name).expect("profile field")
    }

    fn build(p: &Profile, spec: &GuestSpec) -> SyntheticGuest {
        synthetic::build(p, spec).expect("build")
    }

    /// A spec whose last process is a plain single-threaded one, sleeping or queued on CPU 0.
    fn spec_with(extra: Option<TaskSched>) -> GuestSpec {
        let mut spec = GuestSpec::typical(40, 2, 5);
        if let Some(sched) = extra {
            spec.processes.push(ProcessSpec { comm: "newcomer".into(), uid: 1000, cgroup: None, kthread: false, nice: 0, threads: vec![sched], leader_exited: false });
        }
        spec
    }

    /// What a fresh reader, which walks, reads from `g`.
    fn walked(p: &Profile, g: &SyntheticGuest) -> GuestSnapshot {
        g.reader(p).expect("reader").read(&g.memory)
    }

    fn assert_same(read: &GuestSnapshot, expected: &GuestSnapshot) {
        assert!(read.problems.is_empty(), "{:?}", read.problems);
        assert_eq!(read.tasks.len(), expected.tasks.len());
        for (r, e) in read.tasks.iter().zip(expected.tasks.iter()) {
            assert_eq!(r, e);
        }
    }

    #[test]
    fn steady_reads_probe_and_read_what_a_walk_reads() {
        let p = profile();
        let g = build(&p, &spec_with(None));
        let mut reader = g.reader(&p).expect("reader");
        for _ in 0..3 * SWEEP {
            assert_same(&reader.read(&g.memory), &walked(&p, &g));
            assert_eq!(*reader.read(&g.memory).tasks, g.truth.tasks);
        }
        assert_eq!(reader.walks(), 1, "nothing changed: one walk, then probes");
        assert_eq!(reader.read(&g.memory).changes.tasks, Some(vec![]), "and no task changed");
        // A steady read re-reads in full the running tasks and its turn of the sweep, not the
        // tasks that wait unchanged in the runqueues.
        let running = g.truth.tasks.iter().filter(|t| t.running).count() as u64;
        let waiting = g.truth.tasks.iter().filter(|t| t.queued).count() as u64;
        assert!(waiting > 0);
        let before = reader.probes();
        for _ in 0..SWEEP {
            reader.read(&g.memory);
        }
        let per_sweep = reader.probes() - before;
        assert!(per_sweep <= SWEEP * running + g.truth.tasks.len() as u64, "{per_sweep} full re-reads in {SWEEP} reads");
        // Without fork counters every read walks.
        let mut blind = SnapshotReader::new(&p, g.init_task, g.runqueues.clone()).expect("reader");
        for _ in 0..3 {
            assert_eq!(*blind.read(&g.memory).tasks, g.truth.tasks);
        }
        assert_eq!(blind.walks(), 3);
    }

    #[test]
    fn forks_and_exits_are_picked_up_at_the_next_read() {
        let p = profile();
        let before = build(&p, &spec_with(None));
        let after = build(&p, &spec_with(Some(TaskSched::Sleeping)));
        // The newcomer comes last: the tasks before it lie where they lay.
        let addrs = |g: &SyntheticGuest| g.truth.tasks.iter().map(|t| t.record.addr).collect::<Vec<_>>();
        assert!(addrs(&after).starts_with(&addrs(&before)));
        let mut reader = before.reader(&p).expect("reader");
        reader.read(&before.memory);
        // A fork (the counters moved): the sleeping newcomer is read at once.
        let snap = reader.read(&after.memory);
        assert_eq!(*snap.tasks, after.truth.tasks);
        assert!(snap.tasks.iter().any(|t| &*t.record.comm == "newcomer"));
        // It exits and is reaped: gone at once.
        let snap = reader.read(&before.memory);
        assert_eq!(*snap.tasks, before.truth.tasks);
        assert_eq!(reader.walks(), 3);
    }

    #[test]
    fn a_runnable_task_no_walk_listed_makes_a_walk_even_when_the_counters_lie() {
        let p = profile();
        let before = build(&p, &spec_with(None));
        let mut after = build(&p, &spec_with(Some(TaskSched::Queued { cpu: 0 })));
        for va in [after.counters.total_forks, after.counters.nr_threads] {
            let old = before.read_u64(va).expect("counter");
            after.write_u64(va, old).expect("forge");
        }
        let mut reader = before.reader(&p).expect("reader");
        reader.read(&before.memory);
        let snap = reader.read(&after.memory);
        assert_eq!(*snap.tasks, after.truth.tasks);
        assert!(snap.tasks.iter().any(|t| &*t.record.comm == "newcomer" && t.queued));
    }

    #[test]
    fn a_task_rewritten_into_another_is_not_reused() {
        let p = profile();
        let mut g = build(&p, &spec_with(None));
        let mut reader = g.reader(&p).expect("reader");
        reader.read(&g.memory);
        // Two known tasks' memory now holds other tasks (freed and reused, the counters not yet
        // moved: a racy or a forged read): one running, one asleep.
        let runnable = g.truth.tasks.iter().find(|t| t.running && t.record.pid != 0).expect("a running task").record.clone();
        let asleep = g.truth.tasks.iter().find(|t| t.state == 'S' && !t.running).expect("a sleeper").record.clone();
        let (pid, start_time) = (field(&p, "task_struct", "pid"), field(&p, "task_struct", "start_time"));
        for (r, new_pid) in [(&runnable, 9_001u64), (&asleep, 9_002)] {
            g.write_u64(start_time.at(r.addr).expect("va"), r.start_time + 1).expect("write");
            g.write_bytes(pid.at(r.addr).expect("va"), &u32::try_from(new_pid).expect("pid").to_le_bytes()).expect("write");
        }
        let gone = |snap: &GuestSnapshot, r: &crate::linux::tasks::TaskRecord| !snap.tasks.iter().any(|t| t.record.pid == r.pid && t.record.start_time == r.start_time);
        // The running one is probed at the next read, which then walks.
        let snap = reader.read(&g.memory);
        assert!(gone(&snap, &runnable));
        assert_same(&snap, &walked(&p, &g));
        assert!(gone(&snap, &asleep), "the walk found the sleeper changed too");
        // A sleeper alone, or a task waiting in a runqueue whose entity did not move, is caught
        // at its turn, within SWEEP reads.
        let waiting = g.truth.tasks.iter().find(|t| t.queued).expect("a queued task").record.clone();
        for task in [&asleep, &waiting] {
            let mut g = build(&p, &spec_with(None));
            let mut reader = g.reader(&p).expect("reader");
            reader.read(&g.memory);
            g.write_u64(start_time.at(task.addr).expect("va"), task.start_time + 1).expect("write");
            let reads = (1..=SWEEP).find(|_| gone(&reader.read(&g.memory), task));
            assert!(reads.is_some(), "still reported after {SWEEP} reads");
            assert_eq!(reader.walks(), 2);
        }
    }

    #[test]
    fn what_changes_while_a_task_lives_is_read_by_probes() {
        let p = profile();
        let mut g = build(&p, &spec_with(None));
        let mut reader = g.reader(&p).expect("reader");
        reader.read(&g.memory);
        let runner = g.truth.tasks.iter().find(|t| t.running).expect("a running task").record.clone();
        let sleeper = g.truth.tasks.iter().find(|t| t.state == 'S' && !t.running).expect("a sleeper").record.clone();
        let runtime = field(&p, "task_struct", "se").offset + field(&p, "sched_entity", "sum_exec_runtime").offset;
        let comm = field(&p, "task_struct", "comm");
        g.write_u64(Gva(runner.addr.raw() + runtime), runner.sum_exec_runtime + 5_000).expect("write");
        g.write_bytes(comm.at(sleeper.addr).expect("va"), b"renamed\0").expect("write");
        let of = |snap: &GuestSnapshot, addr: Gva| snap.tasks.iter().find(|t| t.record.addr == addr).expect("task").clone();
        // The running task at the next read, which says it changed; the sleeper at its turn.
        let snap = reader.read(&g.memory);
        assert_eq!(of(&snap, runner.addr).record.sum_exec_runtime, runner.sum_exec_runtime + 5_000);
        let at = snap.tasks.iter().position(|t| t.record.addr == runner.addr);
        assert_eq!(snap.changes.tasks.as_ref().map(|c| c.iter().copied().filter(|&i| Some(i) == at).count()), Some(1));
        let renamed = (0..SWEEP).any(|_| &*of(&reader.read(&g.memory), sleeper.addr).record.comm == "renamed");
        assert!(renamed, "the rename shows within {SWEEP} reads");
        assert_eq!(reader.walks(), 1);
        // A waiting task reniced by another (its entity reweighted, its priorities changed) is
        // re-read at the next read, though it did not run.
        let waiting = g.truth.tasks.iter().find(|t| t.queued).expect("a queued task").record.clone();
        let weight = field(&p, "task_struct", "se").offset + field(&p, "sched_entity", "load.weight").offset;
        let static_prio = field(&p, "task_struct", "static_prio");
        g.write_u64(Gva(waiting.addr.raw() + weight), 15).expect("write");
        g.write_bytes(static_prio.at(waiting.addr).expect("va"), &139i32.to_le_bytes()).expect("write");
        let snap = reader.read(&g.memory);
        assert_eq!((of(&snap, waiting.addr).record.weight, of(&snap, waiting.addr).record.static_prio), (15, 139));
        assert_eq!(reader.walks(), 1);
    }

    #[test]
    fn garbage_between_reads_never_crashes_and_reads_clean_once_restored() {
        let p = profile();
        let mut g = build(&p, &GuestSpec::typical(60, 2, 9));
        let clean = walked(&p, &g);
        let mut reader = g.reader(&p).expect("reader");
        let mut rng = Rng::new(0x1c0_2026);
        for _ in 0..400 {
            let mut undo = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let va = Gva(g.truth.fields[rng.index(g.truth.fields.len())].raw() & !7);
                let old = g.read_u64(va).expect("field");
                let new = match rng.below(4) {
                    0 => rng.next_u64(),
                    1 => old ^ (1 << rng.below(64)),
                    2 => g.truth.objects[rng.index(g.truth.objects.len())].addr.raw(),
                    _ => 0,
                };
                g.write_u64(va, new).expect("write");
                undo.push((va, old));
            }
            // Reads of the garbage, and of the image restored, with the reader's memory of both.
            let snap = reader.read(&g.memory);
            assert!(snap.tasks.len() <= 4 * clean.tasks.len());
            for (va, old) in undo.into_iter().rev() {
                g.write_u64(va, old).expect("restore");
            }
            reader.read(&g.memory);
        }
        reader.set_rewalk_interval(Duration::ZERO);
        assert_same(&reader.read(&g.memory), &clean);
    }
}
