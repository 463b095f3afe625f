//! EEVDF as in Linux 6.12 (kernel/sched/fair.c of Debian's 6.12.117): the timeline ordered by
//! virtual deadline and augmented with each subtree's smallest `vruntime` and `slice`, the
//! weighted sums `avg_vruntime`/`avg_load` kept relative to `zero_vruntime`, lag-preserving
//! placement, and the hierarchical counts split into queued, runnable and delayed.
//!
//! What a wakeup from outside cannot do as the kernel would, and why that is safe:
//! - `update_curr` and the load averages (`update_load_avg`, `update_cfs_group`) are left to the
//!   kernel's next tick; placement therefore sees the running entity's `vruntime` as of its last
//!   update (at most a tick old).
//! - The fair deadline server (`dl_server_start(&rq->fair_server)` when the CPU's first fair task
//!   arrives) is not started: starting it arms an hrtimer, which cannot be done from outside. The
//!   kernel starts it at the CPU's next such arrival; until then fair tasks on that CPU have no
//!   reserved bandwidth against real-time tasks, as before Linux 6.12.
//! - A group entity whose dequeue the kernel delayed (`sched_delayed`: its runqueue emptied while
//!   it was not eligible) is requeued as `requeue_delayed_entity` does, not inserted twice. The
//!   task's own entity is never delayed while parked (a parked task blocks in a special state,
//!   which the kernel dequeues at once); should it be, the unpark waits ([`Eevdf::not_now`]) for
//!   the kernel to finish that dequeue.

use crate::linux::layout::Field;
use crate::linux::tasks::container_of;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::walk::add;
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::Profile;

use super::super::fields::{bump, get, set};
use super::super::rbtree::{MinVruntimeAugment, RbNodes};
use super::fixed::{self, LoadWeight};
use super::{FairLayout, Level};

/// What EEVDF's enqueue needs beyond [`FairLayout`].
#[derive(Clone, Debug)]
pub struct Eevdf {
    common: FairLayout,
    augment: MinVruntimeAugment,
    se_deadline: Field,
    se_vlag: Field,
    se_slice: Field,
    se_sched_delayed: Field,
    se_rel_deadline: Field,
    se_custom_slice: Field,
    c_h_nr_queued: Field,
    c_h_nr_runnable: Field,
    c_avg_vruntime: Field,
    c_avg_load: Field,
    c_zero_vruntime: Field,
    /// `SCHED_FIXEDPOINT_SHIFT`: what `scale_load_down` shifts away.
    fixedpoint_shift: u32,
    /// `sysctl_sched_base_slice`.
    base_slice: Gva,
    /// `sysctl_sched_features`.
    features: Gva,
    /// `__SCHED_FEAT_PLACE_LAG`.
    feat_place_lag: u64,
    /// `__SCHED_FEAT_PLACE_REL_DEADLINE`.
    feat_place_rel_deadline: u64,
    /// `__SCHED_FEAT_DELAY_ZERO`.
    feat_delay_zero: u64,
    /// `TICK_NSEC`: the lag bound's floor.
    tick_nsec: u64,
}

/// The scheduler features an enqueue consults (`sched_feat(...)`, from `sysctl_sched_features`).
#[derive(Clone, Copy, Debug)]
struct Features {
    place_lag: bool,
    place_rel_deadline: bool,
    delay_zero: bool,
}

/// The running entity of a runqueue, as `avg_vruntime` and `place_entity` count it.
#[derive(Clone, Copy, Debug)]
struct Curr {
    vruntime: u64,
    /// `scale_load_down(curr->load.weight)`.
    weight: i64,
}

impl Eevdf {
    pub(super) fn from_profile(p: &Profile, virt_shift: u64, common: FairLayout) -> Result<Self, LinuxError> {
        let se = |f: &str| Field::scalar(p, "sched_entity", f);
        let c = |f: &str| Field::scalar(p, "cfs_rq", f);
        let sym = |name: &str| -> Result<Gva, LinuxError> { Ok(Gva(p.symbol(name)?.wrapping_add(virt_shift))) };
        let shift = p.constant("SCHED_FIXEDPOINT_SHIFT")?;
        Ok(Self {
            common,
            augment: MinVruntimeAugment::from_profile(p)?,
            se_deadline: se("deadline")?,
            se_vlag: se("vlag")?,
            se_slice: se("slice")?,
            se_sched_delayed: se("sched_delayed")?,
            se_rel_deadline: se("rel_deadline")?,
            se_custom_slice: se("custom_slice")?,
            c_h_nr_queued: c("h_nr_queued")?,
            c_h_nr_runnable: c("h_nr_runnable")?,
            c_avg_vruntime: c("avg_vruntime")?,
            c_avg_load: c("avg_load")?,
            c_zero_vruntime: c("zero_vruntime")?,
            fixedpoint_shift: u32::try_from(shift).ok().filter(|&s| s < 64).ok_or_else(|| LinuxError::Inconsistent {
                release: p.release.clone(),
                what: format!("SCHED_FIXEDPOINT_SHIFT = {shift}"),
            })?,
            base_slice: sym("sysctl_sched_base_slice")?,
            features: sym("sysctl_sched_features")?,
            feat_place_lag: p.constant("SCHED_FEAT_PLACE_LAG")?,
            feat_place_rel_deadline: p.constant("SCHED_FEAT_PLACE_REL_DEADLINE")?,
            feat_delay_zero: p.constant("SCHED_FEAT_DELAY_ZERO")?,
            tick_nsec: p.constant("TICK_NSEC")?,
        })
    }

    /// The task's entity is still delayed, or a level is its runqueue's current entity although
    /// not queued: the kernel is between steps the unpark must not interleave with.
    pub(super) fn not_now<K: KernelMemory + ?Sized>(&self, mem: &K, levels: &[Level]) -> Result<Option<String>, LinuxError> {
        for level in levels {
            if !level.queued && get(mem, level.se, self.se_sched_delayed)? != 0 {
                return Ok(Some(format!("the dequeue of entity {} is delayed until the kernel picks it", level.se)));
            }
            if !level.queued && Gva(get(mem, level.cfs_rq, self.common.c_curr)?) == level.se {
                return Ok(Some(format!("entity {} is its runqueue's current entity but not queued", level.se)));
            }
        }
        Ok(None)
    }

    /// 6.12's `enqueue_task_fair(rq, p, ENQUEUE_WAKEUP)`: for every level not yet queued, a
    /// group entity takes the smallest slice below it (`custom_slice`), then `enqueue_entity`
    /// (runnable weight, `place_entity`, `account_entity_enqueue`, `__enqueue_entity`); for the
    /// levels already queued, the new smallest slice is propagated up their trees; every level
    /// counts the task as queued and runnable.
    pub(super) fn enqueue_task<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_tasks: Gva, levels: &[Level]) -> Result<Vec<Gva>, LinuxError> {
        let c = &self.common;
        let base_slice = u64::from(mem.read_u32(self.base_slice)?);
        let features = u64::from(mem.read_u32(self.features)?);
        let feature = |bit: u64| bit < 64 && features >> bit & 1 != 0;
        let features = Features {
            place_lag: feature(self.feat_place_lag),
            place_rel_deadline: feature(self.feat_place_rel_deadline),
            delay_zero: feature(self.feat_delay_zero),
        };
        let mut newly_busy = Vec::new();
        let mut slice = 0u64;
        let mut below: Option<Gva> = None;
        let mut first_queued = true;
        for (i, level) in levels.iter().enumerate() {
            let Level { se, cfs_rq, queued } = *level;
            if queued && std::mem::take(&mut first_queued) && get(mem, se, self.se_sched_delayed)? != 0 {
                self.requeue_delayed_entity(mem, level, base_slice, features)?;
            }
            c.update_runnable(mem, se, below, self.c_h_nr_runnable)?;
            if queued {
                set(mem, se, self.se_slice, slice)?;
                if Gva(get(mem, cfs_rq, c.c_curr)?) != se {
                    let node = c.se_run_node.at(se)?;
                    c.timeline(mem, cfs_rq, Some(self.augment))?.augment_propagate(node, Gva(0)).map_err(super::tree_error)?;
                }
            } else {
                if slice != 0 {
                    set(mem, se, self.se_slice, slice)?;
                    set(mem, se, self.se_custom_slice, 1)?;
                }
                self.place_entity(mem, level, base_slice, features)?;
                if c.account_entity_enqueue(mem, level, i == 0, cfs_tasks)? {
                    newly_busy.push(cfs_rq);
                }
                self.enqueue_entity(mem, level)?;
                set(mem, se, c.se_on_rq, 1)?;
            }
            slice = self.cfs_rq_min_slice(mem, cfs_rq)?;
            bump(mem, cfs_rq, self.c_h_nr_runnable, 1)?;
            bump(mem, cfs_rq, self.c_h_nr_queued, 1)?;
            below = Some(cfs_rq);
        }
        Ok(newly_busy)
    }

    /// `__enqueue_entity`: the entity joins the weighted sums, starts its subtree values from
    /// its own, and is inserted by deadline (`rb_add_augmented_cached`).
    fn enqueue_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let weight = self.scale_load_down(get(mem, se, self.common.se_weight)?);
        let vruntime = get(mem, se, self.common.se_vruntime)?;
        let key = self.entity_key(mem, cfs_rq, vruntime)?;
        let avg = get(mem, cfs_rq, self.c_avg_vruntime)?;
        set(mem, cfs_rq, self.c_avg_vruntime, avg.wrapping_add(key.wrapping_mul(weight) as u64))?;
        bump(mem, cfs_rq, self.c_avg_load, weight as u64)?;
        let a = self.augment;
        let slice = get(mem, se, self.se_slice)?;
        mem.write_u64(add(se, a.min_vruntime)?, vruntime)?;
        mem.write_u64(add(se, a.min_slice)?, slice)?;
        self.common.insert(mem, level, Some(a))
    }

    /// `place_entity(cfs_rq, se, 0)`: the entity keeps the lag it left with (`vlag`), inflated
    /// so that adding it to the average leaves it that lag, and gets a deadline one virtual slice
    /// later (or its relative deadline back).
    fn place_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, base_slice: u64, features: Features) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let vruntime = self.avg_vruntime(mem, cfs_rq)?;
        if get(mem, se, self.se_custom_slice)? == 0 {
            set(mem, se, self.se_slice, base_slice)?;
        }
        let vslice = self.calc_delta_fair(mem, get(mem, se, self.se_slice)?, se)?;
        let mut lag = 0i64;
        if features.place_lag && get(mem, cfs_rq, self.common.c_nr_running)? != 0 {
            let mut load = get(mem, cfs_rq, self.c_avg_load)? as i64;
            if let Some(curr) = self.curr(mem, cfs_rq)? {
                load = load.wrapping_add(curr.weight);
            }
            let se_weight = self.scale_load_down(get(mem, se, self.common.se_weight)?);
            lag = (get(mem, se, self.se_vlag)? as i64).wrapping_mul(load.wrapping_add(se_weight));
            // (The kernel warns on a zero load here and divides by 1.)
            lag /= self.divisor(load.max(1))?;
        }
        let placed = vruntime.wrapping_sub(lag as u64);
        set(mem, se, self.common.se_vruntime, placed)?;
        if features.place_rel_deadline && get(mem, se, self.se_rel_deadline)? != 0 {
            let deadline = get(mem, se, self.se_deadline)?;
            set(mem, se, self.se_deadline, deadline.wrapping_add(placed))?;
            return set(mem, se, self.se_rel_deadline, 0);
        }
        set(mem, se, self.se_deadline, placed.wrapping_add(vslice))
    }

    /// `requeue_delayed_entity(se)` for a group entity the kernel left queued but delayed: with
    /// `DELAY_ZERO`, its lag is taken now (`update_entity_lag`) and, when positive, given up —
    /// the entity leaves its tree, is placed again with no lag and goes back in; then it is no
    /// longer delayed (`clear_delayed`, which counts nothing for a group entity).
    fn requeue_delayed_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, base_slice: u64, features: Features) -> Result<(), LinuxError> {
        let c = &self.common;
        let Level { se, cfs_rq, .. } = *level;
        log::debug!("cfs_rq {cfs_rq}: requeueing the delayed entity {se}");
        if features.delay_zero {
            let average = self.avg_vruntime(mem, cfs_rq)?;
            let vlag = self.entity_lag(mem, average, se)?;
            set(mem, se, self.se_vlag, vlag as u64)?;
            if vlag > 0 {
                let in_tree = Gva(get(mem, cfs_rq, c.c_curr)?) != se;
                bump(mem, cfs_rq, c.c_nr_running, u64::MAX)?;
                if in_tree {
                    self.dequeue_entity(mem, level)?;
                }
                set(mem, se, self.se_vlag, 0)?;
                self.place_entity(mem, level, base_slice, features)?;
                if in_tree {
                    self.enqueue_entity(mem, level)?;
                }
                bump(mem, cfs_rq, c.c_nr_running, 1)?;
            }
        }
        set(mem, se, self.se_sched_delayed, 0)
    }

    /// `entity_lag(avruntime, se)`: how far the entity is behind the average, bounded by twice its
    /// slice (at least a tick) in its own virtual time.
    fn entity_lag<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, average: u64, se: Gva) -> Result<i64, LinuxError> {
        let vlag = average.wrapping_sub(get(mem, se, self.common.se_vruntime)?) as i64;
        let bound = get(mem, se, self.se_slice)?.saturating_mul(2).max(self.tick_nsec);
        let limit = i64::try_from(self.calc_delta_fair(mem, bound, se)?).unwrap_or(i64::MAX);
        Ok(vlag.clamp(-limit, limit))
    }

    /// `__dequeue_entity`: the entity leaves its tree (`rb_erase_augmented_cached`) and the
    /// weighted sums.
    fn dequeue_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        self.common.erase(mem, level, Some(self.augment))?;
        let weight = self.scale_load_down(get(mem, se, self.common.se_weight)?);
        let key = self.entity_key(mem, cfs_rq, get(mem, se, self.common.se_vruntime)?)?;
        let avg = get(mem, cfs_rq, self.c_avg_vruntime)?;
        set(mem, cfs_rq, self.c_avg_vruntime, avg.wrapping_sub(key.wrapping_mul(weight) as u64))?;
        let load = get(mem, cfs_rq, self.c_avg_load)?;
        set(mem, cfs_rq, self.c_avg_load, load.wrapping_sub(weight as u64))
    }

    /// `avg_vruntime(cfs_rq)`: the weighted average vruntime of the queued entities and the
    /// running one, floored; like the kernel it moves `zero_vruntime` there and rebases the sum
    /// (`update_zero_vruntime`), and returns it.
    fn avg_vruntime<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_rq: Gva) -> Result<u64, LinuxError> {
        let curr = self.curr(mem, cfs_rq)?;
        let zero = get(mem, cfs_rq, self.c_zero_vruntime)?;
        let avg_load = get(mem, cfs_rq, self.c_avg_load)? as i64;
        let avg = get(mem, cfs_rq, self.c_avg_vruntime)? as i64;
        let mut delta = 0i64;
        if avg_load != 0 {
            let (mut runtime, mut weight) = (avg, avg_load);
            if let Some(curr) = curr {
                runtime = runtime.wrapping_add((curr.vruntime.wrapping_sub(zero) as i64).wrapping_mul(curr.weight));
                weight = weight.wrapping_add(curr.weight);
            }
            // The sign flips the effective floor / ceiling.
            if runtime < 0 {
                runtime = runtime.wrapping_sub(weight.wrapping_sub(1));
            }
            delta = runtime / self.divisor(weight)?;
        } else if let Some(curr) = curr {
            delta = curr.vruntime.wrapping_sub(zero) as i64;
        }
        set(mem, cfs_rq, self.c_avg_vruntime, avg.wrapping_sub(avg_load.wrapping_mul(delta)) as u64)?;
        let zero = zero.wrapping_add(delta as u64);
        set(mem, cfs_rq, self.c_zero_vruntime, zero)?;
        Ok(zero)
    }

    /// `div_s64`'s divisor is an `s32`: a load that does not fit cannot come from a sound
    /// runqueue (each entity weighs at most 88761 after `scale_load_down`).
    fn divisor(&self, load: i64) -> Result<i64, LinuxError> {
        i32::try_from(load).ok().filter(|&d| d > 0).map(i64::from).ok_or_else(|| LinuxError::Walk(format!("implausible runqueue load {load}")))
    }

    /// The runqueue's running entity when it is queued (`curr && curr->on_rq`).
    fn curr<K: KernelMemory + ?Sized>(&self, mem: &K, cfs_rq: Gva) -> Result<Option<Curr>, LinuxError> {
        let curr = Gva(get(mem, cfs_rq, self.common.c_curr)?);
        if curr == Gva(0) || get(mem, curr, self.common.se_on_rq)? == 0 {
            return Ok(None);
        }
        Ok(Some(Curr {
            vruntime: get(mem, curr, self.common.se_vruntime)?,
            weight: self.scale_load_down(get(mem, curr, self.common.se_weight)?),
        }))
    }

    /// `entity_key`: `(s64)(vruntime - cfs_rq->zero_vruntime)`.
    fn entity_key<K: KernelMemory + ?Sized>(&self, mem: &K, cfs_rq: Gva, vruntime: u64) -> Result<i64, LinuxError> {
        Ok(vruntime.wrapping_sub(get(mem, cfs_rq, self.c_zero_vruntime)?) as i64)
    }

    /// `cfs_rq_min_slice`: the smallest slice of the running entity (if queued) and the tree
    /// (its root's `min_slice`).
    fn cfs_rq_min_slice<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_rq: Gva) -> Result<u64, LinuxError> {
        let c = &self.common;
        let mut min_slice = u64::MAX;
        let curr = Gva(get(mem, cfs_rq, c.c_curr)?);
        if curr != Gva(0) && get(mem, curr, c.se_on_rq)? != 0 {
            min_slice = get(mem, curr, self.se_slice)?;
        }
        let root = mem.read_ptr(add(cfs_rq, c.c_root)?)?;
        if root != Gva(0) {
            let se = container_of(root, c.se_run_node)?;
            min_slice = min_slice.min(mem.read_u64(add(se, self.augment.min_slice)?)?);
        }
        Ok(min_slice)
    }

    /// `scale_load_down`: the weight without its fixed-point bits, at least 2 when not zero.
    fn scale_load_down(&self, weight: u64) -> i64 {
        i64::try_from(fixed::scale_load_down(weight, self.fixedpoint_shift)).unwrap_or(i64::MAX)
    }

    /// `calc_delta_fair(delta, se)`: `delta` scaled by NICE_0_LOAD / the entity's weight.
    fn calc_delta_fair<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, delta: u64, se: Gva) -> Result<u64, LinuxError> {
        let c = &self.common;
        fixed::calc_delta_fair(mem, delta, se, LoadWeight { weight: c.se_weight, inv_weight: c.se_inv_weight }, c.nice_0_load, self.fixedpoint_shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::fair::test_image::{entity, memory, put, BASE};
    use crate::linux::flavour::Flavour;
    /// The runqueue sits at physical 0, entities from 0x1000 on, 0x200 apart.
    const CFS_RQ: Gva = BASE;

    fn eevdf() -> (Eevdf, Profile) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/6.12.117+deb12-cloud-amd64.json");
        let p = Profile::load(&path).expect("6.12 profile");
        let common = FairLayout::from_profile(&p, Flavour::Eevdf).expect("layout");
        (Eevdf::from_profile(&p, 0, common).expect("eevdf"), p)
    }

    /// `__calc_delta` computes and caches the inverse weight the kernel tabulates in
    /// `sched_prio_to_wmult` (kernel/sched/core.c: 48388 for nice -20, 286331153 for nice 19),
    /// and scales a slice by NICE_0_LOAD / weight; nice 0 is left alone.
    #[test]
    fn calc_delta_fair_matches_the_kernels_weight_tables() {
        let (e, _) = eevdf();
        let mut mem = memory();
        let se = entity(0);
        for (weight, wmult, slice) in [(88761u64, 48388u64, 700_000 * 1024 / 88761), (15, 286_331_153, 700_000 * 1024 / 15)] {
            put(&mut mem, se, e.common.se_weight, weight << 10);
            put(&mut mem, se, e.common.se_inv_weight, 0);
            let scaled = e.calc_delta_fair(&mut mem, 700_000, se).expect("calc");
            assert_eq!(get(&mem, se, e.common.se_inv_weight).expect("inv"), wmult, "weight {weight}");
            // The fixed point loses at most one unit against exact division.
            assert!(scaled.abs_diff(slice) <= 1, "weight {weight}: {scaled} vs {slice}");
        }
        put(&mut mem, se, e.common.se_weight, 1024 << 10);
        assert_eq!(e.calc_delta_fair(&mut mem, 700_000, se).expect("calc"), 700_000);
    }

    /// `avg_vruntime` with a running entity: the weighted mean, floored (also below zero), and
    /// `zero_vruntime` moved there with the sum rebased (`update_zero_vruntime`).
    #[test]
    fn avg_vruntime_floors_and_rebases_like_the_kernel() {
        let (e, _) = eevdf();
        for (avg, expected_delta) in [(-5_000i64, 23i64), (-202_400, -25)] {
            let mut mem = memory();
            let curr = entity(0);
            put(&mut mem, CFS_RQ, e.c_zero_vruntime, 1_000_000);
            put(&mut mem, CFS_RQ, e.c_avg_load, 3 * 1024);
            put(&mut mem, CFS_RQ, e.c_avg_vruntime, avg as u64);
            put(&mut mem, CFS_RQ, e.common.c_curr, curr.raw());
            put(&mut mem, curr, e.common.se_on_rq, 1);
            put(&mut mem, curr, e.common.se_weight, 1024 << 10);
            put(&mut mem, curr, e.common.se_vruntime, 1_000_100);
            // (avg + 100 * 1024) / 4096, rounded toward minus infinity.
            assert_eq!((avg + 100 * 1024).div_euclid(4096), expected_delta);
            let v = e.avg_vruntime(&mut mem, CFS_RQ).expect("avg");
            assert_eq!(v, (1_000_000 + expected_delta) as u64);
            assert_eq!(get(&mem, CFS_RQ, e.c_zero_vruntime).expect("zero"), v);
            assert_eq!(get(&mem, CFS_RQ, e.c_avg_vruntime).expect("sum") as i64, avg - 3 * 1024 * expected_delta);
        }
    }

    /// `place_entity` keeps the lag an entity left with: it is inflated by (W + w) / W so that
    /// adding the entity leaves it exactly that lag, and the deadline is one virtual slice on.
    #[test]
    fn place_entity_preserves_lag_and_sets_the_deadline() {
        let (e, _) = eevdf();
        let mut mem = memory();
        let (curr, se) = (entity(0), entity(1));
        put(&mut mem, CFS_RQ, e.c_zero_vruntime, 5_000_000);
        put(&mut mem, CFS_RQ, e.c_avg_load, 3 * 1024);
        put(&mut mem, CFS_RQ, e.c_avg_vruntime, 0);
        put(&mut mem, CFS_RQ, e.common.c_nr_running, 4);
        put(&mut mem, CFS_RQ, e.common.c_curr, curr.raw());
        put(&mut mem, curr, e.common.se_on_rq, 1);
        put(&mut mem, curr, e.common.se_weight, 1024 << 10);
        put(&mut mem, curr, e.common.se_vruntime, 5_000_000);
        put(&mut mem, se, e.common.se_weight, 1024 << 10);
        put(&mut mem, se, e.se_vlag, 2_000);
        let level = Level { se, cfs_rq: CFS_RQ, queued: false };
        e.place_entity(&mut mem, &level, 700_000, Features { place_lag: true, place_rel_deadline: true, delay_zero: true }).expect("place");
        // V = 5_000_000; lag = 2000 * (4096 + 1024) / 4096 = 2500.
        assert_eq!(get(&mem, se, e.common.se_vruntime).expect("vruntime"), 5_000_000 - 2_500);
        assert_eq!(get(&mem, se, e.se_slice).expect("slice"), 700_000);
        assert_eq!(get(&mem, se, e.se_deadline).expect("deadline"), 5_000_000 - 2_500 + 700_000);
        // Without PLACE_LAG the entity starts at the average; a relative deadline is kept.
        put(&mut mem, se, e.se_rel_deadline, 1);
        put(&mut mem, se, e.se_deadline, 300_000);
        e.place_entity(&mut mem, &level, 700_000, Features { place_lag: false, place_rel_deadline: true, delay_zero: true }).expect("place");
        assert_eq!(get(&mem, se, e.common.se_vruntime).expect("vruntime"), 5_000_000);
        assert_eq!(get(&mem, se, e.se_deadline).expect("deadline"), 5_300_000);
        assert_eq!(get(&mem, se, e.se_rel_deadline).expect("rel"), 0);
    }

    /// `requeue_delayed_entity` on a delayed entity with positive lag: it leaves the tree, is
    /// placed again at the average of the others with no lag, and goes back in; the sums equal a
    /// recomputation over the tree, the count and load are unchanged, the tree checks.
    #[test]
    fn a_delayed_entity_with_positive_lag_is_requeued_without_it() {
        let (e, _) = eevdf();
        let mut mem = memory();
        let entities = [entity(0), entity(1), entity(2)];
        put(&mut mem, CFS_RQ, e.c_zero_vruntime, 10_000_000);
        for (i, &se) in entities.iter().enumerate() {
            let vruntime = [10_000_000, 9_000_000, 10_500_000][i];
            put(&mut mem, se, e.common.se_weight, 1024 << 10);
            put(&mut mem, se, e.common.se_vruntime, vruntime);
            put(&mut mem, se, e.se_slice, 700_000);
            put(&mut mem, se, e.se_deadline, vruntime + 700_000);
            put(&mut mem, se, e.common.se_on_rq, 1);
            e.enqueue_entity(&mut mem, &Level { se, cfs_rq: CFS_RQ, queued: false }).expect("enqueue");
        }
        put(&mut mem, CFS_RQ, e.common.c_nr_running, 3);
        let delayed = entities[1];
        put(&mut mem, delayed, e.se_sched_delayed, 1);
        let features = Features { place_lag: true, place_rel_deadline: true, delay_zero: true };
        e.requeue_delayed_entity(&mut mem, &Level { se: delayed, cfs_rq: CFS_RQ, queued: true }, 700_000, features).expect("requeue");
        assert_eq!(get(&mem, delayed, e.se_sched_delayed).expect("delayed"), 0);
        assert_eq!(get(&mem, delayed, e.se_vlag).expect("vlag"), 0);
        assert_eq!(get(&mem, CFS_RQ, e.common.c_nr_running).expect("nr"), 3);
        assert_eq!(get(&mem, CFS_RQ, e.c_avg_load).expect("load"), 3 * 1024);
        // Placed at the average of the other two (10_000_000 and 10_500_000), measured after
        // avg_vruntime moved zero_vruntime there.
        let placed = get(&mem, delayed, e.common.se_vruntime).expect("vruntime");
        assert_eq!(placed, 10_250_000);
        assert_eq!(get(&mem, delayed, e.se_deadline).expect("deadline"), placed + 700_000);
        let zero = get(&mem, CFS_RQ, e.c_zero_vruntime).expect("zero");
        let sum: i64 = entities.iter().map(|&se| (get(&mem, se, e.common.se_vruntime).expect("v").wrapping_sub(zero) as i64) * 1024).sum();
        assert_eq!(get(&mem, CFS_RQ, e.c_avg_vruntime).expect("sum") as i64, sum);
        let tree = e.common.timeline(&mut mem, CFS_RQ, Some(e.augment)).expect("tree");
        assert_eq!(crate::actuate::rbtree::check_tree(&tree, 10).expect("valid tree").count, 3);
    }

    #[test]
    fn scale_load_down_keeps_at_least_two() {
        let (e, _) = eevdf();
        assert_eq!(e.scale_load_down(0), 0);
        assert_eq!(e.scale_load_down(15 << 10), 15);
        assert_eq!(e.scale_load_down(1), 2);
    }
}
