//! Each CPU's runqueue (`struct rq`): its current task, the CFS tree with its group hierarchy,
//! and the real-time queues.

use std::collections::HashSet;

use crate::memory::Gva;
use crate::profile::Profile;

use super::flavour::Flavour;
use super::layout::{Extents, Field, StructBuf};
use super::tasks::container_of;
use super::virt::KernelMemory;
use super::walk::{list_for_each, rb_for_each, ListHeadLayout, RbNodeLayout};
use super::LinuxError;

/// Deepest task-group nesting followed (cgroup v2 allows deep trees; real ones are shallow).
const MAX_GROUP_DEPTH: usize = 32;

/// Offsets of the `cfs_rq` fields xsched reads, relative to the `cfs_rq`.
#[derive(Clone, Debug)]
pub struct CfsRqLayout {
    /// `nr_running`.
    pub nr_running: Field,
    /// Tasks queued in it and below (see [`Flavour::h_nr_queued`]).
    pub h_nr_queued: Field,
    /// `load.weight`.
    pub load_weight: Field,
    /// What vruntimes are measured against (see [`Flavour::vruntime_base`]).
    pub vruntime_base: Field,
    /// `tasks_timeline.rb_root.rb_node`.
    pub root: Field,
    /// `tasks_timeline.rb_leftmost`.
    pub leftmost: Field,
    /// `curr`.
    pub curr: Field,
    /// `tg`.
    pub tg: Field,
}

/// Offsets of the `struct rq` fields (and what hangs off it) xsched reads.
#[derive(Clone, Debug)]
pub struct RqLayout {
    /// The parts of a `struct rq` read: those holding the fields decoded (a few hundred bytes
    /// of its first few kilobytes).
    extents: Extents,
    /// `__lock`.
    pub lock: Field,
    /// `nr_running`.
    pub nr_running: Field,
    /// `curr`.
    pub curr: Field,
    /// `idle`.
    pub idle: Field,
    /// `cpu`.
    pub cpu: Field,
    /// `clock_task`.
    pub clock_task: Field,
    /// Offset of the embedded root `cfs_rq`.
    pub cfs: u64,
    /// `cfs_rq` fields.
    pub cfs_rq: CfsRqLayout,
    /// `rt.rt_nr_running`, relative to the rq.
    pub rt_nr_running: Field,
    /// `rt.active.bitmap`, relative to the rq.
    pub rt_bitmap: Field,
    /// `rt.active.queue`, relative to the rq.
    pub rt_queue: Field,
    /// `sched_entity.run_node`.
    pub se_run_node: Field,
    /// `sched_entity.my_q`.
    pub se_my_q: Field,
    /// `task_struct.se`.
    pub task_se: Field,
    /// `task_struct.rt` + `sched_rt_entity.run_list`: a queued RT task's link.
    pub task_rt_run_list: Field,
    /// Size of a `list_head`.
    pub list_head_size: u64,
    /// `struct rb_node`.
    pub rb: RbNodeLayout,
    /// `struct list_head`.
    pub list: ListHeadLayout,
}

impl RqLayout {
    /// Resolves the layout from a profile.
    pub fn from_profile(p: &Profile) -> Result<Self, LinuxError> {
        let rq = |f: &str| Field::scalar(p, "rq", f);
        let cfs = Field::of(p, "rq", "cfs")?.offset;
        let rt = Field::of(p, "rq", "rt")?.offset;
        let active = rt + Field::of(p, "rt_rq", "active")?.offset;
        let shifted = |f: Field, by: u64| Field { offset: f.offset + by, ..f };
        let c = |f: &str| Field::scalar(p, "cfs_rq", f);
        let flavour = Flavour::of(p)?;
        let cfs_rq = CfsRqLayout {
            nr_running: c(flavour.nr_queued())?,
            h_nr_queued: c(flavour.h_nr_queued())?,
            load_weight: c("load.weight")?,
            vruntime_base: c(flavour.vruntime_base())?,
            root: c("tasks_timeline.rb_root.rb_node")?,
            leftmost: c("tasks_timeline.rb_leftmost")?,
            curr: c("curr")?,
            tg: c("tg")?,
        };
        let mut layout = Self {
            extents: Extents::of(&[]),
            lock: Field::of(p, "rq", "__lock")?,
            nr_running: rq("nr_running")?,
            curr: rq("curr")?,
            idle: rq("idle")?,
            cpu: rq("cpu")?,
            clock_task: rq("clock_task")?,
            cfs,
            rt_nr_running: shifted(Field::scalar(p, "rt_rq", "rt_nr_running")?, rt),
            rt_bitmap: shifted(Field::of(p, "rt_prio_array", "bitmap")?, active),
            rt_queue: shifted(Field::of(p, "rt_prio_array", "queue")?, active),
            se_run_node: Field::of(p, "sched_entity", "run_node")?,
            se_my_q: Field::scalar(p, "sched_entity", "my_q")?,
            task_se: Field::of(p, "task_struct", "se")?,
            task_rt_run_list: shifted(Field::of(p, "sched_rt_entity", "run_list")?, Field::of(p, "task_struct", "rt")?.offset),
            list_head_size: p.struct_layout("list_head")?.size,
            rb: RbNodeLayout::from_profile(p)?,
            list: ListHeadLayout::from_profile(p)?,
            cfs_rq: cfs_rq.clone(),
        };
        let cfs_fields = [cfs_rq.nr_running, cfs_rq.h_nr_queued, cfs_rq.load_weight, cfs_rq.vruntime_base, cfs_rq.root, cfs_rq.leftmost, cfs_rq.curr];
        let rq_fields = [layout.lock, layout.nr_running, layout.curr, layout.idle, layout.cpu, layout.clock_task, layout.rt_nr_running, layout.rt_bitmap];
        layout.extents = Extents::of(&rq_fields.into_iter().chain(cfs_fields.iter().map(|&f| Field { offset: cfs + f.offset, ..f })).collect::<Vec<_>>());
        Ok(layout)
    }
}

/// A CFS runqueue's counters, as the kernel keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfsRqState {
    /// Address of the `cfs_rq`.
    pub addr: Gva,
    /// Its task group (`tg`); the root group for a CPU's root `cfs_rq`.
    pub tg: Gva,
    /// Entities queued directly on it, the running one included.
    pub nr_running: u32,
    /// Tasks queued in it and below it (delayed ones included, in EEVDF).
    pub h_nr_queued: u32,
    /// Sum of the queued entities' weights.
    pub load_weight: u64,
    /// What vruntimes are measured against: `min_vruntime` (CFS) or `zero_vruntime` (EEVDF).
    pub vruntime_base: u64,
    /// The entity running from it (`curr`), if any; it is not in the tree.
    pub curr: Gva,
    /// Nesting depth: 0 for the root `cfs_rq`.
    pub depth: usize,
}

/// One CPU's runqueue: who runs, who waits.
#[derive(Clone, Debug, Default)]
pub struct RunqueueSnapshot {
    /// The CPU.
    pub cpu: u32,
    /// Address of its `struct rq`.
    pub addr: Gva,
    /// `rq.__lock` is held.
    pub locked: bool,
    /// `rq.nr_running`.
    pub nr_running: u32,
    /// `rq.curr`: the running task (the idle task when nothing runs).
    pub curr: Gva,
    /// `rq.idle`: this CPU's idle task.
    pub idle: Gva,
    /// `rq.clock_task`, nanoseconds.
    pub clock_task: u64,
    /// Tasks waiting in the CFS trees (all group levels), leftmost first within each tree.
    pub cfs_queued: Vec<Gva>,
    /// Every CFS runqueue met: the root first, then group runqueues depth-first.
    pub cfs_rqs: Vec<CfsRqState>,
    /// Tasks waiting on the real-time queues, highest priority first.
    pub rt_queued: Vec<Gva>,
    /// `rt.rt_nr_running`.
    pub rt_nr_running: u32,
}

/// What one runqueue read may still follow. The guest can forge its trees: group entities whose
/// `my_q`s share a runqueue (a DAG that a naive recursion walks exponentially often), or many
/// runqueues sharing one big tree. So each `cfs_rq` is read once, and all trees and RT lists of
/// the runqueue together yield at most `left` entities.
struct Budget {
    /// Entities that may still be followed.
    left: usize,
    /// The `cfs_rq`s read so far.
    seen: HashSet<Gva>,
}

impl Budget {
    /// Counts one entity met in a walk.
    fn take(&mut self) {
        self.left = self.left.saturating_sub(1);
    }
}

/// Reads the runqueue at `rq` (CPU `cpu`), following at most `limit` queued entities in all.
pub fn read_runqueue<K: KernelMemory + ?Sized>(mem: &K, l: &RqLayout, cpu: u32, rq: Gva, limit: usize) -> Result<RunqueueSnapshot, LinuxError> {
    let mut buf = StructBuf::zeroed(l.extents.span());
    buf.refill_extents(mem, rq, &l.extents)?;
    let mut snap = RunqueueSnapshot {
        cpu,
        addr: rq,
        locked: buf.bytes(l.lock)?.iter().any(|&b| b != 0),
        nr_running: buf.u32(l.nr_running)?,
        curr: buf.ptr(l.curr)?,
        idle: buf.ptr(l.idle)?,
        clock_task: buf.uint(l.clock_task)?,
        rt_nr_running: buf.u32(l.rt_nr_running)?,
        ..RunqueueSnapshot::default()
    };
    let mut budget = Budget { left: limit, seen: HashSet::new() };
    read_cfs_rq(mem, l, super::walk::add(rq, l.cfs)?, 0, &mut budget, &mut snap)?;
    read_rt_queues(mem, l, &buf, &mut budget, &mut snap)?;
    Ok(snap)
}

/// Reads the `cfs_rq` at `cfs_rq` and, recursively, the group runqueues queued in its tree.
fn read_cfs_rq<K: KernelMemory + ?Sized>(mem: &K, l: &RqLayout, cfs_rq: Gva, depth: usize, budget: &mut Budget, snap: &mut RunqueueSnapshot) -> Result<(), LinuxError> {
    if depth > MAX_GROUP_DEPTH {
        return Err(LinuxError::GroupsTooDeep { cfs_rq, limit: MAX_GROUP_DEPTH });
    }
    if !budget.seen.insert(cfs_rq) {
        return Err(LinuxError::CfsRqTwice { cfs_rq });
    }
    let c = &l.cfs_rq;
    let span = [c.nr_running, c.h_nr_queued, c.load_weight, c.vruntime_base, c.root, c.leftmost, c.curr, c.tg].iter().map(|f| f.end()).max().unwrap_or(0);
    let buf = StructBuf::read(mem, cfs_rq, span)?;
    snap.cfs_rqs.push(CfsRqState {
        addr: cfs_rq,
        tg: buf.ptr(c.tg)?,
        nr_running: buf.u32(c.nr_running)?,
        h_nr_queued: buf.u32(c.h_nr_queued)?,
        load_weight: buf.uint(c.load_weight)?,
        vruntime_base: buf.uint(c.vruntime_base)?,
        curr: buf.ptr(c.curr)?,
        depth,
    });
    let mut groups = Vec::new();
    let mut curr_group = None;
    let curr = buf.ptr(c.curr)?;
    if curr != Gva(0) {
        let my_q = mem.read_ptr(l.se_my_q.at(curr)?)?;
        if my_q != Gva(0) {
            curr_group = Some(my_q);
        }
    }
    for node in rb_for_each(mem, l.rb, buf.ptr(c.root)?, budget.left) {
        budget.take();
        let se = container_of(node?, l.se_run_node)?;
        let my_q = mem.read_ptr(l.se_my_q.at(se)?)?;
        if my_q == Gva(0) {
            snap.cfs_queued.push(container_of(se, l.task_se)?);
        } else {
            groups.push(my_q);
        }
    }
    // The running group entity is not in the tree, but its own runqueue may hold waiting tasks.
    for group in curr_group.into_iter().chain(groups) {
        read_cfs_rq(mem, l, group, depth + 1, budget, snap)?;
    }
    Ok(())
}

/// Reads the real-time queues: one list per priority, non-empty ones flagged in the bitmap.
fn read_rt_queues<K: KernelMemory + ?Sized>(mem: &K, l: &RqLayout, rq: &StructBuf, budget: &mut Budget, snap: &mut RunqueueSnapshot) -> Result<(), LinuxError> {
    let bitmap = rq.bytes(l.rt_bitmap)?;
    let queues = l.rt_queue.size / l.list_head_size.max(1);
    let queue_base = l.rt_queue.at(rq.base())?;
    for prio in 0..queues {
        let byte = usize::try_from(prio / 8).ok().and_then(|i| bitmap.get(i)).copied().unwrap_or(0);
        if byte >> (prio % 8) & 1 == 0 {
            continue;
        }
        let head = super::walk::add(queue_base, prio * l.list_head_size)?;
        for node in list_for_each(mem, l.list, head, budget.left) {
            budget.take();
            snap.rt_queued.push(container_of(node?, l.task_rt_run_list)?);
        }
    }
    Ok(())
}
