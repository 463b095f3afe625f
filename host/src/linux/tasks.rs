//! The guest's tasks: every thread of every process, from `init_task.tasks` and each process's
//! `signal->thread_head` list.

use std::collections::HashSet;
use std::sync::Arc;

use crate::memory::Gva;
use crate::profile::Profile;

use super::layout::{Extents, Field, StructBuf};
use super::virt::KernelMemory;
use super::walk::{list_for_each, ListHeadLayout};
use super::LinuxError;

/// No kernel has more tasks than pids (`PID_MAX_LIMIT`).
pub const TASK_LIMIT: usize = 4 * 1024 * 1024;

/// Problems kept per scan: a guest can forge any number of broken entries, and past this many
/// the list is garbage anyway.
pub const MAX_PROBLEMS: usize = 100;

/// Fields closer than this are re-read in one piece by a probe ([`TaskRecord::refresh`]): the
/// probe's few fields are scattered over a `task_struct`, and copying the holes between them
/// costs more than it saves in reads beyond a few cache lines.
const PROBE_MERGE_GAP: u64 = 128;

/// Offsets of the `task_struct` fields xsched reads (sched_entity fields relative to the task).
#[derive(Clone, Debug)]
pub struct TaskLayout {
    /// The parts of a `task_struct` read per task: those holding the fields decoded.
    extents: Extents,
    /// The parts a probe re-reads: those holding the fields [`TaskRecord::refresh`] decodes.
    probe: Extents,
    /// The parts that tell a waiting task ran, was reweighted or moved: its entity's weight,
    /// runtime and vruntime ([`TaskRecord::entity_unchanged`]).
    entity: Extents,
    /// `tasks`: link in the list of processes.
    pub tasks: Field,
    /// `thread_node`: link in `signal->thread_head`.
    pub thread_node: Field,
    /// `__state`.
    pub state: Field,
    /// `exit_state`.
    pub exit_state: Field,
    /// `flags` (`PF_*`).
    pub flags: Field,
    /// `thread_info.flags` (`TIF_*`).
    pub ti_flags: Field,
    /// `thread_info.cpu`.
    pub cpu: Field,
    /// `on_cpu`.
    pub on_cpu: Field,
    /// `on_rq`.
    pub on_rq: Field,
    /// `prio`.
    pub prio: Field,
    /// `static_prio`.
    pub static_prio: Field,
    /// `rt_priority`.
    pub rt_priority: Field,
    /// `policy`.
    pub policy: Field,
    /// `pid`.
    pub pid: Field,
    /// `tgid`.
    pub tgid: Field,
    /// `comm`.
    pub comm: Field,
    /// `start_time`: monotonic nanoseconds at fork.
    pub start_time: Field,
    /// `signal`.
    pub signal: Field,
    /// `sched_task_group`.
    pub sched_task_group: Field,
    /// `pi_lock`.
    pub pi_lock: Field,
    /// `cred`.
    pub cred: Field,
    /// `cgroups` (a `css_set *`).
    pub cgroups: Field,
    /// `se.load.weight`.
    pub se_weight: Field,
    /// `se.on_rq`.
    pub se_on_rq: Field,
    /// `se.sum_exec_runtime`.
    pub se_sum_exec_runtime: Field,
    /// `se.vruntime`.
    pub se_vruntime: Field,
    /// `se.cfs_rq`.
    pub se_cfs_rq: Field,
    /// `se.sched_delayed`, in kernels with EEVDF's delayed dequeue.
    pub se_sched_delayed: Option<Field>,
    /// `signal_struct.thread_head`.
    pub signal_thread_head: Field,
    /// `struct list_head`.
    pub list: ListHeadLayout,
}

impl TaskLayout {
    /// Resolves the layout from a profile.
    pub fn from_profile(p: &Profile) -> Result<Self, LinuxError> {
        let t = |f: &str| Field::scalar(p, "task_struct", f);
        let se = Field::of(p, "task_struct", "se")?.offset;
        let se_field = |f: &str| -> Result<Field, LinuxError> {
            let field = Field::scalar(p, "sched_entity", f)?;
            Ok(Field { offset: se + field.offset, ..field })
        };
        let mut layout = Self {
            extents: Extents::of(&[]),
            probe: Extents::of(&[]),
            entity: Extents::of(&[]),
            tasks: Field::of(p, "task_struct", "tasks")?,
            thread_node: Field::of(p, "task_struct", "thread_node")?,
            state: t("__state")?,
            exit_state: t("exit_state")?,
            flags: t("flags")?,
            ti_flags: t("thread_info.flags")?,
            cpu: t("thread_info.cpu")?,
            on_cpu: t("on_cpu")?,
            on_rq: t("on_rq")?,
            prio: t("prio")?,
            static_prio: t("static_prio")?,
            rt_priority: t("rt_priority")?,
            policy: t("policy")?,
            pid: t("pid")?,
            tgid: t("tgid")?,
            comm: Field::of(p, "task_struct", "comm")?,
            start_time: t("start_time")?,
            signal: t("signal")?,
            sched_task_group: t("sched_task_group")?,
            pi_lock: Field::of(p, "task_struct", "pi_lock")?,
            cred: t("cred")?,
            cgroups: t("cgroups")?,
            se_weight: se_field("load.weight")?,
            se_on_rq: se_field("on_rq")?,
            se_sum_exec_runtime: se_field("sum_exec_runtime")?,
            se_vruntime: se_field("vruntime")?,
            se_cfs_rq: se_field("cfs_rq")?,
            se_sched_delayed: se_field("sched_delayed").ok(),
            signal_thread_head: Field::of(p, "signal_struct", "thread_head")?,
            list: ListHeadLayout::from_profile(p)?,
        };
        // Every field `TaskRecord::decode` and the walks below read from a task's copy.
        layout.extents = Extents::of(&[
            layout.state, layout.exit_state, layout.flags, layout.ti_flags, layout.cpu, layout.on_cpu, layout.on_rq,
            layout.prio, layout.static_prio, layout.rt_priority, layout.policy, layout.pid, layout.tgid, layout.comm,
            layout.start_time, layout.signal, layout.sched_task_group, layout.pi_lock, layout.cred, layout.cgroups,
            layout.se_weight, layout.se_on_rq, layout.se_sum_exec_runtime, layout.se_vruntime, layout.se_cfs_rq,
        ]
        .into_iter()
        .chain(layout.se_sched_delayed)
        .collect::<Vec<_>>());
        // What a probe re-reads: what changes while a task lives and can change a decision, and
        // the identity it is checked by. Not re-read (refreshed by the next walk): `policy`,
        // `sched_task_group`, `pi_lock`, `signal`.
        layout.probe = Extents::merged(
            &[
                layout.state, layout.exit_state, layout.flags, layout.ti_flags, layout.cpu, layout.on_cpu, layout.on_rq,
                layout.prio, layout.static_prio, layout.rt_priority, layout.pid, layout.tgid, layout.comm, layout.start_time,
                layout.cred, layout.cgroups, layout.se_weight, layout.se_on_rq, layout.se_sum_exec_runtime, layout.se_vruntime,
                layout.se_cfs_rq,
            ]
            .into_iter()
            .chain(layout.se_sched_delayed)
            .collect::<Vec<_>>(),
            PROBE_MERGE_GAP,
        );
        layout.entity = Extents::merged(&[layout.se_weight, layout.se_sum_exec_runtime, layout.se_vruntime], PROBE_MERGE_GAP);
        Ok(layout)
    }

    /// The parts of a `task_struct` a probe ([`TaskRecord::refresh`]) copies: fewer and smaller
    /// than a walk's.
    pub fn probe_extents(&self) -> &Extents {
        &self.probe
    }

    /// The parts of a `task_struct` [`TaskRecord::entity_unchanged`] reads: a few bytes of its
    /// `sched_entity`.
    pub fn entity_extents(&self) -> &Extents {
        &self.entity
    }
}

/// One task as the guest kernel records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// Address of its `task_struct`.
    pub addr: Gva,
    /// Thread id.
    pub pid: i32,
    /// Process id (thread-group leader's pid).
    pub tgid: i32,
    /// The command name (`comm`, at most 15 bytes), decoded lossily: each invalid UTF-8
    /// sequence becomes U+FFFD. The guest chooses it: show it through
    /// [`printable`](crate::text::printable). Shared, so that snapshots of a task that keeps its
    /// name copy no string.
    pub comm: Arc<str>,
    /// The exact bytes of `comm` when they are not valid UTF-8 (so `comm` is not exact);
    /// `None` when `comm` is exact.
    pub comm_bytes: Option<Vec<u8>>,
    /// `__state`.
    pub state: u32,
    /// `exit_state`.
    pub exit_state: u32,
    /// `flags` (`PF_*`).
    pub flags: u32,
    /// `thread_info.flags` (`TIF_*`).
    pub ti_flags: u64,
    /// The CPU it runs or last ran on.
    pub cpu: u32,
    /// `on_cpu`: it is running right now (or being switched).
    pub on_cpu: bool,
    /// `on_rq`: 0, `TASK_ON_RQ_QUEUED` (1) or `TASK_ON_RQ_MIGRATING` (2).
    pub on_rq: u32,
    /// `prio` (0..99 real-time, 100..139 normal).
    pub prio: i32,
    /// `static_prio` (120 + nice for normal tasks).
    pub static_prio: i32,
    /// `rt_priority`.
    pub rt_priority: u32,
    /// `policy` (`SCHED_*`).
    pub policy: u32,
    /// `start_time`: monotonic nanoseconds since boot at fork; with `pid`, identifies the task.
    pub start_time: u64,
    /// `se.load.weight` (scaled by 1024 on 64-bit kernels).
    pub weight: u64,
    /// `se.on_rq`: the entity is queued on a CFS runqueue (or is its current).
    pub se_on_rq: bool,
    /// `se.sum_exec_runtime`, nanoseconds.
    pub sum_exec_runtime: u64,
    /// `se.vruntime`.
    pub vruntime: u64,
    /// `se.cfs_rq`: the CFS runqueue the entity belongs to (a group's when in a cgroup).
    pub cfs_rq: Gva,
    /// `se.sched_delayed`: it went to sleep but stays in its runqueue's tree until it is picked
    /// (EEVDF's delayed dequeue): queued, yet not runnable. Always false under CFS.
    pub sched_delayed: bool,
    /// `sched_task_group`: its task group.
    pub task_group: Gva,
    /// `pi_lock` is held.
    pub pi_locked: bool,
    /// `cred`: its credentials.
    pub cred: Gva,
    /// `cgroups`: its `css_set`.
    pub css_set: Gva,
}

impl TaskRecord {
    /// Decodes a task from a copy of its `task_struct`.
    pub fn decode(buf: &StructBuf, l: &TaskLayout) -> Result<Self, LinuxError> {
        // Every field below lies inside the extents: one check instead of one per field.
        if !buf.covers(l.extents.span()) {
            return Err(LinuxError::ShortTaskCopy { task: buf.base(), copy: "the copy" });
        }
        let u = |f: Field| buf.uint_or_zero(f);
        let (comm, comm_bytes) = decode_comm(comm_of(buf, l)?);
        Ok(Self {
            addr: buf.base(),
            pid: buf.i32_or_zero(l.pid),
            tgid: buf.i32_or_zero(l.tgid),
            comm,
            comm_bytes,
            state: buf.u32_or_zero(l.state),
            exit_state: buf.u32_or_zero(l.exit_state),
            flags: buf.u32_or_zero(l.flags),
            ti_flags: u(l.ti_flags),
            cpu: buf.u32_or_zero(l.cpu),
            on_cpu: u(l.on_cpu) != 0,
            on_rq: buf.u32_or_zero(l.on_rq),
            prio: buf.i32_or_zero(l.prio),
            static_prio: buf.i32_or_zero(l.static_prio),
            rt_priority: buf.u32_or_zero(l.rt_priority),
            policy: buf.u32_or_zero(l.policy),
            start_time: u(l.start_time),
            weight: u(l.se_weight),
            se_on_rq: u(l.se_on_rq) != 0,
            sum_exec_runtime: u(l.se_sum_exec_runtime),
            vruntime: u(l.se_vruntime),
            cfs_rq: Gva(u(l.se_cfs_rq)),
            sched_delayed: l.se_sched_delayed.is_some_and(|f| u(f) != 0),
            task_group: Gva(u(l.sched_task_group)),
            pi_locked: buf.bytes(l.pi_lock)?.iter().any(|&b| b != 0),
            cred: Gva(u(l.cred)),
            css_set: Gva(u(l.cgroups)),
        })
    }

    /// Re-decodes from a probe's copy (see [`TaskLayout::probe_extents`]) what a probe reads,
    /// if the copy still holds this task: the same pid and start time at the same address.
    /// Returns `None` when it does not (the task exited and its memory holds another, or
    /// garbage; `self` is unchanged), else whether any field changed. `comm` is decoded again
    /// only when its bytes changed.
    pub fn refresh(&mut self, buf: &StructBuf, l: &TaskLayout) -> Result<Option<bool>, LinuxError> {
        if !buf.covers(l.probe.span()) || buf.base() != self.addr {
            return Err(LinuxError::ShortTaskCopy { task: self.addr, copy: "the probe's copy" });
        }
        if buf.i32_or_zero(l.pid) != self.pid || buf.uint_or_zero(l.start_time) != self.start_time || buf.i32_or_zero(l.tgid) != self.tgid {
            return Ok(None);
        }
        let u = |f: Field| buf.uint_or_zero(f);
        let comm = comm_of(buf, l)?;
        let mut changed = false;
        if comm != self.comm_bytes.as_deref().unwrap_or(self.comm.as_bytes()) {
            (self.comm, self.comm_bytes) = decode_comm(comm);
            changed = true;
        }
        let mut set = |field: &mut u64, value: u64| {
            changed |= *field != value;
            *field = value;
        };
        let (mut on_cpu, mut se_on_rq, mut delayed) = (u64::from(self.on_cpu), u64::from(self.se_on_rq), u64::from(self.sched_delayed));
        let (mut cfs_rq, mut cred, mut css_set) = (self.cfs_rq.raw(), self.cred.raw(), self.css_set.raw());
        set(&mut on_cpu, u64::from(u(l.on_cpu) != 0));
        set(&mut se_on_rq, u64::from(u(l.se_on_rq) != 0));
        set(&mut delayed, u64::from(l.se_sched_delayed.is_some_and(|f| u(f) != 0)));
        set(&mut cfs_rq, u(l.se_cfs_rq));
        set(&mut cred, u(l.cred));
        set(&mut css_set, u(l.cgroups));
        set(&mut self.ti_flags, u(l.ti_flags));
        set(&mut self.weight, u(l.se_weight));
        set(&mut self.sum_exec_runtime, u(l.se_sum_exec_runtime));
        set(&mut self.vruntime, u(l.se_vruntime));
        (self.on_cpu, self.se_on_rq, self.sched_delayed) = (on_cpu != 0, se_on_rq != 0, delayed != 0);
        (self.cfs_rq, self.cred, self.css_set) = (Gva(cfs_rq), Gva(cred), Gva(css_set));
        let narrow = (
            buf.u32_or_zero(l.state),
            buf.u32_or_zero(l.exit_state),
            buf.u32_or_zero(l.flags),
            buf.u32_or_zero(l.cpu),
            buf.u32_or_zero(l.on_rq),
            buf.i32_or_zero(l.prio),
            buf.i32_or_zero(l.static_prio),
            buf.u32_or_zero(l.rt_priority),
        );
        let before = (self.state, self.exit_state, self.flags, self.cpu, self.on_rq, self.prio, self.static_prio, self.rt_priority);
        changed |= narrow != before;
        (self.state, self.exit_state, self.flags, self.cpu, self.on_rq, self.prio, self.static_prio, self.rt_priority) = narrow;
        Ok(Some(changed))
    }
}

impl TaskRecord {
    /// Whether a copy of this task's [`TaskLayout::entity_extents`] shows its entity's weight,
    /// runtime and vruntime as this record has them: a task waiting in a runqueue that shows
    /// them unchanged has not run, been reweighted or moved since.
    pub fn entity_unchanged(&self, buf: &StructBuf, l: &TaskLayout) -> bool {
        buf.base() == self.addr
            && buf.covers(l.entity.span())
            && (buf.uint_or_zero(l.se_weight), buf.uint_or_zero(l.se_sum_exec_runtime), buf.uint_or_zero(l.se_vruntime)) == (self.weight, self.sum_exec_runtime, self.vruntime)
    }
}

/// The bytes of `comm` in a task's copy, up to its NUL (all 16 when there is none).
fn comm_of<'a>(buf: &'a StructBuf, l: &TaskLayout) -> Result<&'a [u8], LinuxError> {
    let comm = buf.bytes(l.comm)?;
    Ok(&comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())])
}

/// `comm` as text, lossily, and its exact bytes when the text is not exact.
fn decode_comm(comm: &[u8]) -> (Arc<str>, Option<Vec<u8>>) {
    match std::str::from_utf8(comm) {
        Ok(text) => (Arc::from(text), None),
        Err(_) => (Arc::from(String::from_utf8_lossy(comm)), Some(comm.to_vec())),
    }
}

/// The result of reading the task list: the tasks read and, if the walk stopped early, why.
#[derive(Debug, Default)]
pub struct TaskScan {
    /// Every task read, processes in list order, each followed by its other threads.
    pub tasks: Vec<TaskRecord>,
    /// Why the scan is partial, if it is (a broken list, an unreadable task).
    pub problems: Vec<String>,
}

/// Reads every task reachable from `init_task` (at `init_task`), at most `limit` of them.
///
/// A process whose thread list is broken is kept (its leader was read) and the problem noted;
/// a broken process list ends the scan with what was read so far.
pub fn read_tasks<K: KernelMemory + ?Sized>(mem: &K, l: &TaskLayout, init_task: Gva, limit: usize) -> TaskScan {
    let mut scan = TaskScan::default();
    let head = match l.tasks.at(init_task) {
        Ok(head) => head,
        Err(e) => {
            scan.problems.push(e.to_string());
            return scan;
        }
    };
    let mut buf = StructBuf::zeroed(l.extents.span());
    if let Err(e) = buf.refill_extents(mem, init_task, &l.extents) {
        scan.problems.push(format!("init_task: {e}"));
        return scan;
    }
    // Every task read: a real one is listed once, so one listed again ends its thread group.
    // Without this, forged processes sharing one long thread list cost N x N task reads.
    let mut seen = HashSet::new();
    for node in list_for_each(mem, l.list, head, limit) {
        let leader = match node.and_then(|n| container_of(n, l.tasks)) {
            Ok(leader) => leader,
            Err(e) => {
                scan.problems.push(format!("process list: {e}"));
                break;
            }
        };
        if let Err(e) = read_thread_group(mem, l, leader, &mut buf, limit, &mut seen, &mut scan) {
            scan.problems.push(format!("process at {leader}: {e}"));
            if scan.problems.len() >= MAX_PROBLEMS {
                scan.problems.push(format!("{MAX_PROBLEMS} broken processes: the rest of the list is not read"));
                break;
            }
        }
        if scan.tasks.len() >= limit {
            scan.problems.push(format!("more than {limit} tasks"));
            break;
        }
    }
    scan
}

/// Reads the threads of the process whose leader is at `leader` (the leader among them).
fn read_thread_group<K: KernelMemory + ?Sized>(
    mem: &K,
    l: &TaskLayout,
    leader: Gva,
    buf: &mut StructBuf,
    limit: usize,
    seen: &mut HashSet<Gva>,
    scan: &mut TaskScan,
) -> Result<(), LinuxError> {
    if !seen.insert(leader) {
        return Err(listed_twice(leader));
    }
    buf.refill_extents(mem, leader, &l.extents)?;
    let signal = buf.ptr(l.signal)?;
    // Read once; listed where the thread list has it.
    let mut leader_record = Some(TaskRecord::decode(buf, l)?);
    let head = l.signal_thread_head.at(signal)?;
    for node in list_for_each(mem, l.list, head, limit) {
        let task = container_of(node?, l.thread_node)?;
        if task == leader {
            scan.tasks.extend(leader_record.take());
            continue;
        }
        if !seen.insert(task) {
            return Err(listed_twice(task));
        }
        buf.refill_extents(mem, task, &l.extents)?;
        scan.tasks.push(TaskRecord::decode(buf, l)?);
        if scan.tasks.len() >= limit {
            break;
        }
    }
    // An exiting leader has left its thread list; /proc still shows it (as a zombie).
    scan.tasks.extend(leader_record);
    Ok(())
}

fn listed_twice(task: Gva) -> LinuxError {
    LinuxError::TaskTwice { task }
}

/// `container_of`: the struct whose `field` is at `node`.
pub fn container_of(node: Gva, field: Field) -> Result<Gva, LinuxError> {
    node.raw()
        .checked_sub(field.offset)
        .map(Gva)
        .ok_or(LinuxError::NoContainer { node, offset: field.offset })
}
