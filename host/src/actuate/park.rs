//! Parking and unparking fair-class tasks inside a paused guest kernel: the flavour-neutral part.
//!
//! **Park.** A task gets the state [`ParkLayout::parked_state`]: `TASK_PARKED | TASK_WAKEKILL`.
//! A sleeping task simply stays off its runqueue: ordinary wakeups (`wake_up_process`, wait
//! queues, timers) match only `TASK_NORMAL` and pass it by, so it stays parked when its wakeup
//! comes. A running task is also asked to reschedule, as `resched_curr` does (`TIF_NEED_RESCHED`
//! and the CPU's preempt count): at its next return to user mode the kernel calls `schedule()`,
//! sees a non-running state and dequeues it itself, with all its own bookkeeping; a task waiting
//! on its runqueue does the same the next time it runs and leaves for user mode. `TASK_WAKEKILL` lets SIGKILL wake it, so the guest can still kill it; without
//! `TASK_UNINTERRUPTIBLE` it adds nothing to the load average and the hung-task detector ignores
//! it; `/proc` shows `P`, which no user task shows otherwise.
//!
//! **Unpark** is a wakeup done from outside: what `try_to_wake_up` → `activate_task` →
//! `enqueue_task_fair` do (kernel/sched/core.c, fair.c), written into guest memory. The fair
//! runqueues' arithmetic — placing, weighing, counting and inserting each level of the task's
//! group hierarchy — belongs to the kernel's scheduler flavour (`super::fair`: CFS as in 6.1,
//! EEVDF as in 6.12); around it this module puts runqueues that became busy on the leaf list,
//! counts the task in `rq.nr_running` and in its pressure-stall groups, marks it queued and
//! running, and asks the CPU's current task to reschedule (flag and preempt count).
//!
//! **Delayed dequeue (EEVDF).** A task that goes to sleep while not eligible stays in its tree
//! (`sched_delayed`) until picked. Parking such a task waits until the kernel has finished that
//! dequeue (it is neither running nor sleeping off its runqueue). A task xsched parks while it
//! runs blocks in a special state (`TASK_PARKED`), which the kernel dequeues at once, never
//! delayed (`DEQUEUE_SPECIAL`); so a parked task is never left delayed. A spurious wakeup is harmless to a sleeping task: kernel wait loops re-check their
//! condition, and a wakeup that came while it was parked is not lost.
//!
//! Every operation re-reads everything it relies on with the guest paused and refuses (to retry
//! later) when a lock is held or the task is not where it should be. Unpark is planned against a
//! write overlay and applied only when the whole plan holds, trees checked before and after.

use crate::linux::flavour::Flavour;
use crate::linux::layout::Field;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::walk::{add, ListHeadLayout};
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::{spec, Profile};

use super::fair::{FairClass, Level};
use super::fields::{bump, get, get_i32, get_u32, list_add_tail, locked, set};
use super::staged::{apply, Staged};

/// Deepest task-group hierarchy handled.
const MAX_LEVELS: usize = 32;
/// `NUMA_NO_NODE`.
const NUMA_NO_NODE: i64 = -1;

/// Why an operation did not happen now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Deferred {
    /// A transient condition (a lock held, the task still switching): try again next round.
    #[error("{0}")]
    Retry(Retry),
    /// The task cannot be handled this way (kernel thread, real-time policy, …).
    #[error("{0}")]
    Refused(Refused),
    /// The task is not the one expected: it exited, or its pid was reused.
    #[error("the task is gone")]
    Gone,
}

/// A transient condition that defers an operation to a later round.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Retry {
    /// The task's `pi_lock` is held.
    #[error("its pi_lock is held")]
    PiLockHeld,
    /// The lock of the task's CPU's runqueue is held.
    #[error("CPU {cpu}'s runqueue lock is held")]
    RunqueueLocked {
        /// The CPU.
        cpu: u32,
    },
    /// The task's `__state` is none a park starts from (an uninterruptible sleep, a stop, a
    /// wakeup in flight).
    #[error("in state {state:#x}")]
    State {
        /// Its `__state`.
        state: u32,
    },
    /// A parked task that has not yet left its CPU and runqueue (`on_rq`, `on_cpu`, `se.on_rq`).
    #[error("not yet off its CPU and runqueue")]
    StillQueued,
    /// An entity of the task's hierarchy sits on another CPU's runqueue (a migration in flight).
    #[error("entity {se} is on another CPU's runqueue")]
    OtherCpu {
        /// The `sched_entity`.
        se: Gva,
    },
    /// A `cfs_rq` of the task's hierarchy is throttled (`throttled`, `throttle_count`).
    #[error("cfs_rq {cfs_rq} is throttled")]
    Throttled {
        /// The `cfs_rq`.
        cfs_rq: Gva,
    },
    /// A `cfs_rq` of the task's hierarchy belongs to an idle task group (`task_group.idle`).
    #[error("cfs_rq {cfs_rq} belongs to an idle task group")]
    IdleGroup {
        /// The `cfs_rq`.
        cfs_rq: Gva,
    },
    /// The scheduler flavour's own reason to wait (see `FairClass::not_now`).
    #[error("{0}")]
    Flavour(String),
    /// `rq.tmp_alone_branch` is not the leaf list's head: a leaf-list update is half done.
    #[error("the runqueue's leaf list is mid-update")]
    LeafListMidUpdate,
    /// The task's `psi_flags` are not those of a sleeping task.
    #[error("its pressure-stall flags are not those of a sleeping task")]
    PressureFlags,
    /// Someone else holds the domain paused: nothing is written into it.
    #[error("the domain is paused by someone else (a snapshot, a migration, an operator): nothing is written until it runs again")]
    HeldByOthers,
}

/// Why a task cannot be parked or unparked at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A kernel thread (`PF_KTHREAD`).
    #[error("a kernel thread")]
    KernelThread,
    /// Not a `SCHED_NORMAL`/`SCHED_BATCH` task of the fair class.
    #[error("not a SCHED_NORMAL/SCHED_BATCH fair task (policy {policy})")]
    NotFair {
        /// Its `policy`.
        policy: u32,
    },
    /// Run by a sched_ext BPF scheduler: its `sched_class` is `ext_sched_class`.
    #[error("run by a sched_ext BPF scheduler (its sched_class is ext_sched_class, policy {policy})")]
    SchedExt {
        /// Its `policy`.
        policy: u32,
    },
    /// Its `thread_info.cpu` names no CPU of the kernel's.
    #[error("on CPU {cpu}, beyond the kernel's CPUs")]
    NoSuchCpu {
        /// The CPU it names.
        cpu: u32,
    },
    /// It is parked already.
    #[error("already parked")]
    AlreadyParked,
    /// It has a NUMA node preference (`numa_preferred_nid`), which a wakeup would weigh.
    #[error("it has a NUMA node preference")]
    NumaPreference,
}

/// What [`park`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParkOutcome {
    /// The task is parked; `state` is what it had before (to report; unpark always wakes it).
    Parked {
        /// Its `__state` before the park.
        state: u32,
        /// It was running or queued (it dequeues itself at its next return to user mode).
        runnable: bool,
    },
    /// Nothing was written.
    Deferred(Deferred),
}

/// What [`unpark`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnparkOutcome {
    /// The task is queued on CPU `cpu` again.
    Unparked {
        /// Its CPU.
        cpu: u32,
        /// The CPU is idle: it runs the task only after an interrupt (see `GuestMemory::kick`).
        cpu_idle: bool,
    },
    /// The task is no longer parked by us (SIGKILL woke it, or someone else changed its state).
    NotParked {
        /// Its current `__state`.
        state: u32,
    },
    /// Nothing was written.
    Deferred(Deferred),
}

/// The identity an operation must find at the task's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    /// Its `task_struct`.
    pub addr: Gva,
    /// Its pid.
    pub pid: i32,
    /// Its `start_time`.
    pub start_time: u64,
}

/// Pressure-stall (PSI) accounting, when the kernel has it.
#[derive(Clone, Debug)]
struct PsiLayout {
    task_psi_flags: Field,
    task_cgroups: Field,
    css_set_dfl_cgrp: Field,
    cgroup_kn: Field,
    cgroup_psi: Field,
    kn_id: Field,
    group_parent: Field,
    group_pcpu: Field,
    groupc_tasks: Field,
    psi_system: Gva,
    disabled_key: Gva,
    cgroups_key: Gva,
    key_enabled: Field,
    nr_running: u64,
}

/// Everything park and unpark need to know about one kernel build, resolved once.
#[derive(Clone, Debug)]
pub struct ParkLayout {
    t_state: Field,
    t_exit_state: Field,
    t_flags: Field,
    t_ti_flags: Field,
    t_cpu: Field,
    t_on_cpu: Field,
    t_on_rq: Field,
    t_policy: Field,
    t_pid: Field,
    t_start_time: Field,
    t_pi_lock: Field,
    t_sched_class: Field,
    t_numa_nid: Option<Field>,
    /// `task_struct.is_blocked` (7.x): set when the task blocks (`try_to_block_task`), cleared
    /// by its wakeup (`ttwu_do_wakeup`); a task left marked trips `WARN_ON_ONCE(p->is_blocked)`
    /// when it next blocks or wakes.
    t_is_blocked: Option<Field>,
    t_se: u64,
    se_on_rq: Field,
    se_parent: Field,
    se_cfs_rq: Field,
    c_rq: Field,
    c_tg: Field,
    c_on_list: Field,
    c_leaf_list: Field,
    c_throttled: Option<Field>,
    c_throttle_count: Option<Field>,
    rq_lock: Field,
    rq_nr_running: Field,
    rq_curr: Field,
    rq_idle: Field,
    rq_cfs: u64,
    rq_cfs_tasks: Field,
    rq_leaf_list: Field,
    rq_tmp_alone_branch: Field,
    tg_parent: Field,
    tg_idle: Field,
    tg_cfs_rq: Field,
    tg_cfs_rq_stride: u64,
    /// `tg->cfs_rq` is a per-CPU pointer to the runqueues themselves (7.x's `cfs_tg_state`:
    /// `tg_cfs_rq(tg, cpu)` is `per_cpu_ptr(tg->cfs_rq, cpu)`), not an array of pointers.
    tg_cfs_rq_per_cpu: bool,
    list: ListHeadLayout,
    psi: Option<PsiLayout>,
    /// The state a parked task has.
    pub parked_state: u32,
    running: u32,
    interruptible: u32,
    tif_need_resched: u32,
    /// x86's `PREEMPT_NEED_RESCHED`: the bit of the per-CPU preempt count that is *cleared*
    /// while the CPU's current task must reschedule.
    preempt_need_resched: u32,
    /// The preempt count of each possible CPU (`__preempt_count`, or `pcpu_hot.preempt_count`).
    preempt_counts: Vec<Gva>,
    /// Its width.
    preempt_count: Field,
    pf_kthread: u32,
    fair_policies: [u32; 2],
    on_rq_queued: u32,
    fair_sched_class: Gva,
    /// `ext_sched_class` where sched_ext is built in (Linux 6.12 and later, on in Debian's 7.x):
    /// a task in it belongs to a BPF scheduler and to no fair runqueue.
    ext_sched_class: Option<Gva>,
    fair: FairClass,
    /// `runqueues` of each possible CPU.
    runqueues: Vec<Gva>,
    /// `__per_cpu_offset` of each possible CPU.
    per_cpu_offsets: Vec<u64>,
}

impl ParkLayout {
    /// Resolves the layout from `profile`, with `virt_shift` locating image symbols and the
    /// per-CPU offsets and runqueue addresses of each possible CPU.
    pub fn new(p: &Profile, virt_shift: u64, per_cpu_offsets: Vec<u64>) -> Result<Self, LinuxError> {
        let t = |f: &str| Field::scalar(p, "task_struct", f);
        let se = |f: &str| Field::scalar(p, "sched_entity", f);
        let c = |f: &str| Field::scalar(p, "cfs_rq", f);
        let rq = |f: &str| Field::scalar(p, "rq", f);
        let tg = |f: &str| Field::scalar(p, "task_group", f);
        let optional = |s: &str, f: &str| Field::scalar(p, s, f).ok();
        let sym = |name: &str| -> Result<Gva, LinuxError> { Ok(Gva(p.symbol(name)?.wrapping_add(virt_shift))) };
        let k = |name: &str| -> Result<u32, LinuxError> {
            let v = p.constant(name)?;
            u32::try_from(v).map_err(|_| LinuxError::Inconsistent { release: p.release.clone(), what: format!("{name} = {v:#x} does not fit 32 bits") })
        };
        let runqueues_sym = p.per_cpu_symbol("runqueues", virt_shift)?;
        let preempt_count = preempt_count_location(p, virt_shift)?;
        let psi = (|| -> Result<PsiLayout, LinuxError> {
            Ok(PsiLayout {
                task_psi_flags: t("psi_flags")?,
                task_cgroups: t("cgroups")?,
                css_set_dfl_cgrp: Field::scalar(p, "css_set", "dfl_cgrp")?,
                cgroup_kn: Field::scalar(p, "cgroup", "kn")?,
                cgroup_psi: Field::scalar(p, "cgroup", "psi")?,
                kn_id: Field::scalar(p, "kernfs_node", "id")?,
                group_parent: Field::scalar(p, "psi_group", "parent")?,
                group_pcpu: Field::scalar(p, "psi_group", "pcpu")?,
                groupc_tasks: Field::of(p, "psi_group_cpu", "tasks")?,
                psi_system: sym("psi_system")?,
                disabled_key: sym("psi_disabled")?,
                cgroups_key: sym("psi_cgroups_enabled")?,
                key_enabled: Field::scalar(p, "static_key", "enabled")?,
                nr_running: p.constant("PSI_NR_RUNNING")?,
            })
        })()
        .ok();
        Ok(Self {
            t_state: t("__state")?,
            t_exit_state: t("exit_state")?,
            t_flags: t("flags")?,
            t_ti_flags: t("thread_info.flags")?,
            t_cpu: t("thread_info.cpu")?,
            t_on_cpu: t("on_cpu")?,
            t_on_rq: t("on_rq")?,
            t_policy: t("policy")?,
            t_pid: t("pid")?,
            t_start_time: t("start_time")?,
            t_pi_lock: Field::of(p, "task_struct", "pi_lock")?,
            t_sched_class: t("sched_class")?,
            t_numa_nid: optional("task_struct", "numa_preferred_nid"),
            t_is_blocked: optional("task_struct", "is_blocked"),
            t_se: p.offset("task_struct", "se")?,
            se_on_rq: se("on_rq")?,
            se_parent: se("parent")?,
            se_cfs_rq: se("cfs_rq")?,
            c_rq: c("rq")?,
            c_tg: c("tg")?,
            c_on_list: c("on_list")?,
            c_leaf_list: Field::of(p, "cfs_rq", "leaf_cfs_rq_list")?,
            c_throttled: optional("cfs_rq", "throttled"),
            c_throttle_count: optional("cfs_rq", "throttle_count"),
            rq_lock: Field::of(p, "rq", "__lock")?,
            rq_nr_running: rq("nr_running")?,
            rq_curr: rq("curr")?,
            rq_idle: rq("idle")?,
            rq_cfs: p.offset("rq", "cfs")?,
            rq_cfs_tasks: Field::of(p, "rq", "cfs_tasks")?,
            rq_leaf_list: Field::of(p, "rq", "leaf_cfs_rq_list")?,
            rq_tmp_alone_branch: rq("tmp_alone_branch")?,
            tg_parent: tg("parent")?,
            tg_idle: tg("idle")?,
            tg_cfs_rq: tg("cfs_rq")?,
            // `tg->cfs_rq` points to an array of `cfs_rq` pointers, one per CPU.
            tg_cfs_rq_stride: tg("cfs_rq")?.size,
            tg_cfs_rq_per_cpu: Flavour::of(p)? == Flavour::EevdfFlat,
            list: ListHeadLayout::from_profile(p)?,
            psi,
            parked_state: crate::linux::state::TaskStates::from_profile(p)?.xsched_parked,
            running: k("TASK_RUNNING")?,
            interruptible: k("TASK_INTERRUPTIBLE")?,
            tif_need_resched: k("TIF_NEED_RESCHED")?,
            preempt_need_resched: k("PREEMPT_NEED_RESCHED")?,
            preempt_counts: per_cpu_offsets.iter().map(|o| Gva(o.wrapping_add(preempt_count.0))).collect(),
            preempt_count: preempt_count.1,
            pf_kthread: k("PF_KTHREAD")?,
            fair_policies: [k("SCHED_NORMAL")?, k("SCHED_BATCH")?],
            on_rq_queued: k("TASK_ON_RQ_QUEUED")?,
            fair_sched_class: sym("fair_sched_class")?,
            ext_sched_class: p.symbols.contains_key("ext_sched_class").then(|| sym("ext_sched_class")).transpose()?,
            fair: FairClass::from_profile(p, virt_shift)?,
            runqueues: per_cpu_offsets.iter().map(|o| Gva(o.wrapping_add(runqueues_sym))).collect(),
            per_cpu_offsets,
        })
    }

    /// Whether `state` is the parked state.
    pub fn is_parked(&self, state: u32) -> bool {
        state == self.parked_state
    }

    /// The fair class this kernel's runqueues follow.
    pub fn fair(&self) -> &FairClass {
        &self.fair
    }
}

/// Where each CPU's preempt count is, as a per-CPU offset, and its field: the per-CPU
/// `__preempt_count` or the `preempt_count` of the per-CPU `pcpu_hot` (see
/// `spec::PREEMPT_COUNT`).
fn preempt_count_location(p: &Profile, virt_shift: u64) -> Result<(u64, Field), LinuxError> {
    let location = spec::first_complete(p, spec::PREEMPT_COUNT).map_err(|lacks| LinuxError::Inconsistent { release: p.release.clone(), what: lacks })?;
    let (base, field) = match location {
        "pcpu_hot" => (p.per_cpu_symbol("pcpu_hot", virt_shift)?, Field::scalar(p, "pcpu_hot", "preempt_count")?),
        // `int __preempt_count`.
        _ => (p.per_cpu_symbol("__preempt_count", virt_shift)?, Field { offset: 0, size: 4 }),
    };
    Ok((base.wrapping_add(field.offset), Field { offset: 0, ..field }))
}

/// The checks both operations share: the task is the expected one, a user CFS task, its CPU
/// known, its `pi_lock` and its runqueue's lock free. Returns its CPU and runqueue.
fn check_task<K: KernelMemory + ?Sized>(mem: &K, l: &ParkLayout, task: &TaskIdentity) -> Result<Result<(u32, Gva), Deferred>, LinuxError> {
    let t = task.addr;
    // An address that no longer reads (a stale journal record from another boot of the guest,
    // say) cannot hold the task either.
    let identity = get_i32(mem, t, l.t_pid).and_then(|pid| Ok((pid, get(mem, t, l.t_start_time)?)));
    match identity {
        Ok(found) if found == (task.pid, task.start_time) => {}
        Ok(_) => return Ok(Err(Deferred::Gone)),
        Err(e) => {
            log::debug!("pid {} at {t}: {e}; taken as gone", task.pid);
            return Ok(Err(Deferred::Gone));
        }
    }
    if get(mem, t, l.t_exit_state)? != 0 {
        return Ok(Err(Deferred::Gone));
    }
    if get_u32(mem, t, l.t_flags)? & l.pf_kthread != 0 {
        return Ok(Err(Deferred::Refused(Refused::KernelThread)));
    }
    let policy = get_u32(mem, t, l.t_policy)?;
    let class = Gva(get(mem, t, l.t_sched_class)?);
    if l.ext_sched_class == Some(class) {
        return Ok(Err(Deferred::Refused(Refused::SchedExt { policy })));
    }
    if !l.fair_policies.contains(&policy) || class != l.fair_sched_class {
        return Ok(Err(Deferred::Refused(Refused::NotFair { policy })));
    }
    let cpu = get_u32(mem, t, l.t_cpu)?;
    let Some(&rq) = usize::try_from(cpu).ok().and_then(|c| l.runqueues.get(c)) else {
        return Ok(Err(Deferred::Refused(Refused::NoSuchCpu { cpu })));
    };
    if locked(mem, t, l.t_pi_lock)? {
        return Ok(Err(Deferred::Retry(Retry::PiLockHeld)));
    }
    if locked(mem, rq, l.rq_lock)? {
        return Ok(Err(Deferred::Retry(Retry::RunqueueLocked { cpu })));
    }
    Ok(Ok((cpu, rq)))
}

/// Parks the task `task`. The guest must be paused.
pub fn park<K: KernelMemoryMut + ?Sized>(mem: &mut K, l: &ParkLayout, task: &TaskIdentity) -> Result<ParkOutcome, LinuxError> {
    let (cpu, rq) = match check_task(mem, l, task)? {
        Ok(found) => found,
        Err(d) => return Ok(ParkOutcome::Deferred(d)),
    };
    let t = task.addr;
    let state = get_u32(mem, t, l.t_state)?;
    let on_rq = get(mem, t, l.t_on_rq)?;
    let runnable = if state == l.running {
        true
    } else if state == l.interruptible && on_rq == 0 {
        false
    } else if l.is_parked(state) {
        return Ok(ParkOutcome::Deferred(Deferred::Refused(Refused::AlreadyParked)));
    } else {
        // Uninterruptible sleeps, stops, a wakeup in flight (TASK_WAKING): not now.
        return Ok(ParkOutcome::Deferred(Deferred::Retry(Retry::State { state })));
    };
    let writes = {
        let mut staged = Staged::new(&*mem);
        set(&mut staged, t, l.t_state, u64::from(l.parked_state))?;
        // A running task is asked to reschedule; a queued one dequeues itself the next time it
        // leaves its CPU for user mode (a need-resched flag on a task that is not running would
        // not be folded into its CPU's preempt count when it runs: see `resched_curr`).
        if runnable && Gva(get(&staged, rq, l.rq_curr)?) == t {
            resched_curr(&mut staged, l, cpu, rq)?;
        }
        staged.into_writes()
    };
    apply(mem, &writes)?;
    Ok(ParkOutcome::Parked { state, runnable })
}

/// What the kernel's `resched_curr` does for the current task of `cpu`: sets its
/// `TIF_NEED_RESCHED` and folds the request into the CPU's preempt count (x86 keeps an inverted
/// copy there). Kernel code tests only the flag in `need_resched()` but only the preempt count
/// in `cond_resched()`: with the flag alone, a loop such as `zap_pte_range` that breaks out on
/// `need_resched()` and retries after `cond_resched()` spins forever, and the kernel never
/// folds it later because `resched_curr` sees the flag already set.
fn resched_curr<K: KernelMemoryMut + ?Sized>(mem: &mut K, l: &ParkLayout, cpu: u32, rq: Gva) -> Result<(), LinuxError> {
    let curr = Gva(get(mem, rq, l.rq_curr)?);
    let flags = get(mem, curr, l.t_ti_flags)?;
    set(mem, curr, l.t_ti_flags, flags | 1 << l.tif_need_resched)?;
    let count = *usize::try_from(cpu).ok().and_then(|c| l.preempt_counts.get(c)).ok_or_else(|| LinuxError::Walk(format!("CPU {cpu} has no per-CPU area")))?;
    let value = get(mem, count, l.preempt_count)?;
    set(mem, count, l.preempt_count, value & !u64::from(l.preempt_need_resched))
}

/// Unparks the task `task` (makes it runnable and queues it). The guest must be paused.
pub fn unpark<K: KernelMemoryMut + ?Sized>(mem: &mut K, l: &ParkLayout, task: &TaskIdentity) -> Result<UnparkOutcome, LinuxError> {
    let (cpu, rq) = match check_task(mem, l, task)? {
        Ok(found) => found,
        Err(d) => return Ok(UnparkOutcome::Deferred(d)),
    };
    let t = task.addr;
    let state = get_u32(mem, t, l.t_state)?;
    if !l.is_parked(state) {
        return Ok(UnparkOutcome::NotParked { state });
    }
    let retry = |why: Retry| Ok(UnparkOutcome::Deferred(Deferred::Retry(why)));
    let task_se = add(t, l.t_se)?;
    if get(mem, t, l.t_on_rq)? != 0 || get(mem, t, l.t_on_cpu)? != 0 || get(mem, task_se, l.se_on_rq)? != 0 {
        return retry(Retry::StillQueued);
    }
    if let Some(f) = l.t_numa_nid {
        if i64::from(get_i32(mem, t, f)?) != NUMA_NO_NODE {
            return Ok(UnparkOutcome::Deferred(Deferred::Refused(Refused::NumaPreference)));
        }
    }
    let levels = match hierarchy(mem, l, task_se, rq)? {
        Ok(levels) => levels,
        Err(why) => return retry(why),
    };
    if let Some(why) = l.fair.not_now(mem, &levels)? {
        return retry(Retry::Flavour(why));
    }
    if Gva(get(mem, rq, l.rq_tmp_alone_branch)?) != l.rq_leaf_list.at(rq)? {
        return retry(Retry::LeafListMidUpdate);
    }
    let psi_groups = match &l.psi {
        Some(psi) if !static_key_on(mem, psi, psi.disabled_key)? => Some(psi_groups(mem, l, psi, t, cpu)?),
        _ => None,
    };
    if let (Some(psi), Some(_)) = (&l.psi, &psi_groups) {
        if get(mem, t, psi.task_psi_flags)? != 0 {
            return retry(Retry::PressureFlags);
        }
    }
    let curr = Gva(get(mem, rq, l.rq_curr)?);
    let cpu_idle = curr == Gva(get(mem, rq, l.rq_idle)?);

    let writes = {
        let mut staged = Staged::new(&*mem);
        let newly_busy = l.fair.enqueue_task(&mut staged, rq, l.rq_cfs_tasks.at(rq)?, &levels)?;
        // list_add_leaf_cfs_rq, top-down so that every parent is listed before its child.
        for &cfs_rq in newly_busy.iter().rev() {
            add_leaf_cfs_rq(&mut staged, l, cfs_rq, rq, cpu)?;
        }
        bump(&mut staged, rq, l.rq_nr_running, 1)?;
        if let (Some(psi), Some(groups)) = (&l.psi, &psi_groups) {
            let flags = get(&staged, t, psi.task_psi_flags)?;
            set(&mut staged, t, psi.task_psi_flags, flags | 1 << psi.nr_running)?;
            let offset = psi.groupc_tasks.offset + 4 * psi.nr_running;
            for &groupc in groups {
                bump(&mut staged, groupc, Field { offset, size: 4 }, 1)?;
            }
        }
        set(&mut staged, t, l.t_on_rq, u64::from(l.on_rq_queued))?;
        if let Some(f) = l.t_is_blocked {
            set(&mut staged, t, f, 0)?;
        }
        set(&mut staged, t, l.t_state, u64::from(l.running))?;
        resched_curr(&mut staged, l, cpu, rq)?;
        staged.into_writes()
    };
    apply(mem, &writes)?;
    Ok(UnparkOutcome::Unparked { cpu, cpu_idle })
}

/// The task's entity and its group entities up to the root `cfs_rq`, each with its runqueue,
/// checked to belong to `rq`, not throttled, and not in an idle task group.
fn hierarchy<K: KernelMemory + ?Sized>(mem: &K, l: &ParkLayout, task_se: Gva, rq: Gva) -> Result<Result<Vec<Level>, Retry>, LinuxError> {
    let mut levels = Vec::new();
    let mut se = task_se;
    loop {
        if levels.len() >= MAX_LEVELS {
            return Err(LinuxError::Walk(format!("task groups nested deeper than {MAX_LEVELS}")));
        }
        let cfs_rq = Gva(get(mem, se, l.se_cfs_rq)?);
        if Gva(get(mem, cfs_rq, l.c_rq)?) != rq {
            return Ok(Err(Retry::OtherCpu { se }));
        }
        for f in [l.c_throttled, l.c_throttle_count].into_iter().flatten() {
            if get(mem, cfs_rq, f)? != 0 {
                return Ok(Err(Retry::Throttled { cfs_rq }));
            }
        }
        let tg = Gva(get(mem, cfs_rq, l.c_tg)?);
        if tg != Gva(0) && get(mem, tg, l.tg_idle)? != 0 {
            return Ok(Err(Retry::IdleGroup { cfs_rq }));
        }
        let queued = !levels.is_empty() && get(mem, se, l.se_on_rq)? != 0;
        levels.push(Level { se, cfs_rq, queued });
        let parent = Gva(get(mem, se, l.se_parent)?);
        if parent == Gva(0) {
            if cfs_rq != add(rq, l.rq_cfs)? {
                return Err(LinuxError::Walk(format!("top entity {se} is not on its CPU's root cfs_rq")));
            }
            return Ok(Ok(levels));
        }
        se = parent;
    }
}

/// `list_add_leaf_cfs_rq` for a runqueue whose parent is listed (or which is the root).
fn add_leaf_cfs_rq<K: KernelMemoryMut + ?Sized>(mem: &mut K, l: &ParkLayout, cfs_rq: Gva, rq: Gva, cpu: u32) -> Result<(), LinuxError> {
    let tg = Gva(get(mem, cfs_rq, l.c_tg)?);
    let parent_tg = if tg == Gva(0) { Gva(0) } else { Gva(get(mem, tg, l.tg_parent)?) };
    let node = add(cfs_rq, l.c_leaf_list.offset)?;
    if parent_tg == Gva(0) {
        list_add_tail(mem, l.list, node, add(rq, l.rq_leaf_list.offset)?)?;
    } else {
        let parent = tg_cfs_rq(mem, l, parent_tg, cpu)?;
        if get(mem, parent, l.c_on_list)? == 0 {
            return Err(LinuxError::Walk(format!("cfs_rq {cfs_rq}: parent {parent} is not on the leaf list")));
        }
        list_add_tail(mem, l.list, node, add(parent, l.c_leaf_list.offset)?)?;
    }
    set(mem, cfs_rq, l.c_on_list, 1)
}

/// `tg_cfs_rq(tg, cpu)`: the task group's runqueue on `cpu`.
fn tg_cfs_rq<K: KernelMemory + ?Sized>(mem: &K, l: &ParkLayout, tg: Gva, cpu: u32) -> Result<Gva, LinuxError> {
    let base = Gva(get(mem, tg, l.tg_cfs_rq)?);
    if l.tg_cfs_rq_per_cpu {
        let offset = *usize::try_from(cpu).ok().and_then(|c| l.per_cpu_offsets.get(c)).ok_or_else(|| LinuxError::Walk(format!("CPU {cpu} has no per-CPU area")))?;
        return Ok(Gva(base.raw().wrapping_add(offset)));
    }
    mem.read_ptr(add(base, l.tg_cfs_rq_stride * u64::from(cpu))?)
}

/// Whether a static key is enabled (`static_key.enabled.counter > 0`).
fn static_key_on<K: KernelMemory + ?Sized>(mem: &K, psi: &PsiLayout, key: Gva) -> Result<bool, LinuxError> {
    Ok(get_i32(mem, key, psi.key_enabled)? > 0)
}

/// CPU `cpu`'s pressure-stall counters (`psi_group_cpu`) of the task's group (`task_psi_group`:
/// its cgroup's, or the system's) and of every ancestor group.
fn psi_groups<K: KernelMemory + ?Sized>(mem: &K, l: &ParkLayout, psi: &PsiLayout, task: Gva, cpu: u32) -> Result<Vec<Gva>, LinuxError> {
    let mut group = psi.psi_system;
    if static_key_on(mem, psi, psi.cgroups_key)? {
        let cgroup = Gva(get(mem, Gva(get(mem, task, psi.task_cgroups)?), psi.css_set_dfl_cgrp)?);
        // cgroup_psi(): the root cgroup (inode 1) accounts into psi_system.
        if get(mem, Gva(get(mem, cgroup, psi.cgroup_kn)?), psi.kn_id)? != 1 {
            group = Gva(get(mem, cgroup, psi.cgroup_psi)?);
        }
    }
    let offset = *usize::try_from(cpu).ok().and_then(|c| l.per_cpu_offsets.get(c)).ok_or_else(|| LinuxError::Walk(format!("CPU {cpu} has no per-CPU area")))?;
    let mut counters = Vec::new();
    while group != Gva(0) {
        if counters.len() >= MAX_LEVELS {
            return Err(LinuxError::Walk(format!("pressure groups nested deeper than {MAX_LEVELS}")));
        }
        counters.push(Gva(get(mem, group, psi.group_pcpu)?.wrapping_add(offset)));
        group = Gva(get(mem, group, psi.group_parent)?);
    }
    Ok(counters)
}

