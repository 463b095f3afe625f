//! CFS as in Linux 6.1 (kernel/sched/fair.c): the timeline ordered by `vruntime`, a waking
//! entity placed no more than half a scheduling latency behind `min_vruntime`, one hierarchical
//! count (`h_nr_running`).

use crate::linux::layout::Field;
use crate::linux::virt::KernelMemoryMut;
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::Profile;

use super::super::fields::{bump, get, set};
use super::super::rbtree::key_before;
use super::{FairLayout, Level};

/// What CFS's enqueue needs beyond [`FairLayout`].
#[derive(Clone, Debug)]
pub struct Cfs {
    common: FairLayout,
    se_exec_start: Field,
    c_h_nr_running: Field,
    c_min_vruntime: Field,
    rq_clock_task: Field,
    /// `sysctl_sched_latency`.
    latency: Gva,
}

impl Cfs {
    pub(super) fn from_profile(p: &Profile, virt_shift: u64, common: FairLayout) -> Result<Self, LinuxError> {
        Ok(Self {
            common,
            se_exec_start: Field::scalar(p, "sched_entity", "exec_start")?,
            c_h_nr_running: Field::scalar(p, "cfs_rq", "h_nr_running")?,
            c_min_vruntime: Field::scalar(p, "cfs_rq", "min_vruntime")?,
            rq_clock_task: Field::scalar(p, "rq", "clock_task")?,
            latency: Gva(p.symbol("sysctl_sched_latency")?.wrapping_add(virt_shift)),
        })
    }

    /// 6.1's `enqueue_task_fair` for a wakeup: for every level not yet queued, place the entity
    /// (`place_entity`), account it (`account_entity_enqueue`), insert it into the timeline
    /// (`__enqueue_entity`); at every level update the group entity's runnable weight and count
    /// the task (`h_nr_running`). (`update_curr` and the load averages are left to the kernel's
    /// next tick, as a remote wakeup leaves them to the next `update_curr` anyway.)
    pub(super) fn enqueue_task<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, rq: Gva, cfs_tasks: Gva, levels: &[Level]) -> Result<Vec<Gva>, LinuxError> {
        let c = &self.common;
        let latency = mem.read_u32(self.latency)?;
        let clock_task = get(mem, rq, self.rq_clock_task)?;
        let mut newly_busy = Vec::new();
        let mut below: Option<Gva> = None;
        for (i, level) in levels.iter().enumerate() {
            if !level.queued {
                self.place_entity(mem, level, latency, clock_task)?;
                if c.account_entity_enqueue(mem, level, i == 0, cfs_tasks)? {
                    newly_busy.push(level.cfs_rq);
                }
            }
            c.update_runnable(mem, level.se, below, self.c_h_nr_running)?;
            if !level.queued {
                c.insert(mem, level, None)?;
                set(mem, level.se, c.se_on_rq, 1)?;
            }
            bump(mem, level.cfs_rq, self.c_h_nr_running, 1)?;
            below = Some(level.cfs_rq);
        }
        Ok(newly_busy)
    }

    /// `place_entity(cfs_rq, se, 0)` for a wakeup: no more than half a latency of sleep credit.
    fn place_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, latency: u32, clock_task: u64) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let floor = get(mem, cfs_rq, self.c_min_vruntime)?.wrapping_sub(u64::from(latency >> 1));
        let vruntime = get(mem, se, self.common.se_vruntime)?;
        let exec_start = get(mem, se, self.se_exec_start)?;
        // entity_is_long_sleeper: after ~104 days the old vruntime may compare the wrong way.
        let long_sleeper = exec_start != 0
            && clock_task > exec_start
            && clock_task - exec_start > (1u64 << 63) / (self.common.nice_0_load >> 10).max(1);
        let placed = if long_sleeper || key_before(vruntime, floor) { floor } else { vruntime };
        set(mem, se, self.common.se_vruntime, placed)
    }
}
