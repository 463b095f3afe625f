//! EEVDF over a flat runqueue as in Linux 7.3 (kernel/sched/fair.c of Debian's 7.3.4): every
//! task's entity sits in its CPU's root timeline (`__enqueue_entity` warns on any other runqueue
//! and on group entities), weighed by its hierarchical weight `h_load` — the group shares above
//! it folded in by `__calc_prop_weight` — while group entities carry only their weights and
//! counts. The root's weighted sums `sum_w_vruntime`/`sum_weight` use `h_load.weight` shifted
//! right by `sum_shift` (`avg_vruntime_weight`), and the augmented timeline keeps `max_slice`.
//!
//! `enqueue_task_fair(rq, p, ENQUEUE_WAKEUP)` for a task that is neither running nor delayed:
//! `enqueue_hierarchy` (for each level: `enqueue_entity` when not queued — runnable weight,
//! `account_entity_enqueue`, `on_rq` — the counts, and the proportional weight), then on the
//! root `reweight_eevdf(.., weight, false)`, `place_entity(.., ENQUEUE_QUEUED)` and
//! `__enqueue_entity`. What cannot be done from outside is left to the kernel as in 6.12 (see
//! `super::eevdf`): `update_curr`, the load averages and `update_cfs_group`, the fair deadline
//! server. SCHED_IDLE tasks and idle groups are never unparked (`super::super::park`), so
//! `h_nr_idle` does not change. With the `PARANOID_AVG` feature on, a sum that would overflow is
//! refused instead of rescaled (the kernel would raise `sum_shift` and recompute the sums).

use crate::linux::layout::Field;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::walk::add;
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::Profile;

use super::super::fields::{bump, get, set};
use super::super::rbtree::MinVruntimeAugment;
use super::fixed::{self, LoadWeight};
use super::{FairLayout, Level};

/// What the flat EEVDF enqueue needs beyond [`FairLayout`].
#[derive(Clone, Debug)]
pub struct Flat {
    common: FairLayout,
    augment: MinVruntimeAugment,
    se_h_load: LoadWeight,
    se_deadline: Field,
    se_vlag: Field,
    se_slice: Field,
    se_sched_delayed: Field,
    se_rel_deadline: Field,
    se_custom_slice: Field,
    c_h_nr_queued: Field,
    c_h_nr_runnable: Field,
    c_sum_w_vruntime: Field,
    c_sum_weight: Field,
    c_sum_shift: Field,
    c_zero_vruntime: Field,
    c_h_curr: Field,
    /// `SCHED_FIXEDPOINT_SHIFT`.
    fixedpoint_shift: u32,
    /// `MIN_SHARES`.
    min_shares: u64,
    /// `sysctl_sched_base_slice`.
    base_slice: Gva,
    /// `sysctl_sched_features`.
    features: Gva,
    /// `__SCHED_FEAT_PLACE_LAG`.
    feat_place_lag: u64,
    /// `__SCHED_FEAT_PLACE_REL_DEADLINE`.
    feat_place_rel_deadline: u64,
    /// `__SCHED_FEAT_PARANOID_AVG`.
    feat_paranoid_avg: u64,
}

/// The scheduler features an enqueue consults.
#[derive(Clone, Copy, Debug)]
struct Features {
    place_lag: bool,
    place_rel_deadline: bool,
    paranoid_avg: bool,
}

impl Flat {
    pub(super) fn from_profile(p: &Profile, virt_shift: u64, common: FairLayout) -> Result<Self, LinuxError> {
        let se = |f: &str| Field::scalar(p, "sched_entity", f);
        let c = |f: &str| Field::scalar(p, "cfs_rq", f);
        let sym = |name: &str| -> Result<Gva, LinuxError> { Ok(Gva(p.symbol(name)?.wrapping_add(virt_shift))) };
        let shift = p.constant("SCHED_FIXEDPOINT_SHIFT")?;
        Ok(Self {
            common,
            augment: MinVruntimeAugment::from_profile(p)?,
            se_h_load: LoadWeight { weight: se("h_load.weight")?, inv_weight: se("h_load.inv_weight")? },
            se_deadline: se("deadline")?,
            se_vlag: se("vlag")?,
            se_slice: se("slice")?,
            se_sched_delayed: se("sched_delayed")?,
            se_rel_deadline: se("rel_deadline")?,
            se_custom_slice: se("custom_slice")?,
            c_h_nr_queued: c("h_nr_queued")?,
            c_h_nr_runnable: c("h_nr_runnable")?,
            c_sum_w_vruntime: c("sum_w_vruntime")?,
            c_sum_weight: c("sum_weight")?,
            c_sum_shift: c("sum_shift")?,
            c_zero_vruntime: c("zero_vruntime")?,
            c_h_curr: c("h_curr")?,
            fixedpoint_shift: u32::try_from(shift).ok().filter(|&s| s < 64).ok_or_else(|| LinuxError::Inconsistent {
                release: p.release.clone(),
                what: format!("SCHED_FIXEDPOINT_SHIFT = {shift}"),
            })?,
            min_shares: p.constant("MIN_SHARES")?,
            base_slice: sym("sysctl_sched_base_slice")?,
            features: sym("sysctl_sched_features")?,
            feat_place_lag: p.constant("SCHED_FEAT_PLACE_LAG")?,
            feat_place_rel_deadline: p.constant("SCHED_FEAT_PLACE_REL_DEADLINE")?,
            feat_paranoid_avg: p.constant("SCHED_FEAT_PARANOID_AVG")?,
        })
    }

    /// The task's entity is still delayed, or a level is its runqueue's current entity
    /// (`curr`, or `h_curr` on the path of the running task) although not queued: the kernel is
    /// between steps the unpark must not interleave with.
    pub(super) fn not_now<K: KernelMemory + ?Sized>(&self, mem: &K, levels: &[Level]) -> Result<Option<String>, LinuxError> {
        for level in levels.iter().filter(|l| !l.queued) {
            if get(mem, level.se, self.se_sched_delayed)? != 0 {
                return Ok(Some(format!("the dequeue of entity {} is delayed until the kernel picks it", level.se)));
            }
            for f in [self.common.c_curr, self.c_h_curr] {
                if Gva(get(mem, level.cfs_rq, f)?) == level.se {
                    return Ok(Some(format!("entity {} is its runqueue's current entity but not queued", level.se)));
                }
            }
        }
        Ok(None)
    }

    /// 7.3's `enqueue_task_fair(rq, p, ENQUEUE_WAKEUP)` for a task neither running nor delayed
    /// (see the module's documentation). Returns the runqueues that became busy, lowest first.
    pub(super) fn enqueue_task<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_tasks: Gva, levels: &[Level]) -> Result<Vec<Gva>, LinuxError> {
        let c = &self.common;
        let (Some(task), Some(top)) = (levels.first(), levels.last()) else {
            return Err(LinuxError::Walk("an empty entity hierarchy".into()));
        };
        let root = top.cfs_rq;
        let features = u64::from(mem.read_u32(self.features)?);
        let feature = |bit: u64| bit < 64 && features >> bit & 1 != 0;
        let features = Features {
            place_lag: feature(self.feat_place_lag),
            place_rel_deadline: feature(self.feat_place_rel_deadline),
            paranoid_avg: feature(self.feat_paranoid_avg),
        };
        // enqueue_hierarchy
        let mut newly_busy = Vec::new();
        let mut weight = c.nice_0_load;
        let mut below: Option<Gva> = None;
        for (i, level) in levels.iter().enumerate() {
            let Level { se, cfs_rq, queued } = *level;
            c.update_runnable(mem, se, below, self.c_h_nr_runnable)?;
            if !queued {
                if c.account_entity_enqueue(mem, level, i == 0, cfs_tasks)? {
                    newly_busy.push(cfs_rq);
                }
                set(mem, se, c.se_on_rq, 1)?;
            }
            bump(mem, cfs_rq, self.c_h_nr_runnable, 1)?;
            bump(mem, cfs_rq, self.c_h_nr_queued, 1)?;
            weight = self.calc_prop_weight(mem, level, i + 1 < levels.len(), weight)?;
            below = Some(cfs_rq);
        }
        let level = Level { se: task.se, cfs_rq: root, queued: false };
        self.reweight(mem, task.se, weight)?;
        self.place_entity(mem, &level, features)?;
        self.enqueue_entity(mem, &level, features)?;
        Ok(newly_busy)
    }

    /// `__calc_prop_weight(cfs_rq, se, weight)`: the share `weight` of the level above keeps
    /// of this entity's part of its runqueue (of NICE_0_LOAD at the root), at least MIN_SHARES.
    fn calc_prop_weight<K: KernelMemory + ?Sized>(&self, mem: &K, level: &Level, has_parent: bool, weight: u64) -> Result<u64, LinuxError> {
        let c = &self.common;
        let product = u128::from(weight) * u128::from(get(mem, level.se, c.se_weight)?);
        let divisor = if has_parent { get(mem, level.cfs_rq, c.c_weight)? } else { c.nice_0_load };
        let share = product.checked_div(u128::from(divisor)).ok_or_else(|| LinuxError::Walk(format!("cfs_rq {} weighs nothing with entity {} queued", level.cfs_rq, level.se)))?;
        // (The kernel computes in unsigned long: a product beyond 64 bits cannot come from a
        // sound hierarchy, whose weights are at most 2^18 shares of 2^20.)
        let share = u64::try_from(share).map_err(|_| LinuxError::Walk(format!("entity {}: implausible hierarchical weight", level.se)))?;
        Ok(share.max(self.min_shares))
    }

    /// `reweight_eevdf(cfs_rq, se, weight, false)` for an entity not on the runqueue: its lag
    /// (and a relative deadline) is rescaled to the new weight, which becomes its `h_load`.
    fn reweight<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, se: Gva, weight: u64) -> Result<(), LinuxError> {
        let old = get(mem, se, self.se_h_load.weight)?;
        if old == weight {
            return Ok(());
        }
        let (old, new) = (self.signed(old)?, self.signed(weight)?);
        // rescale_entity: div64_long truncates toward zero, as Rust's `/` does.
        let vlag = (get(mem, se, self.se_vlag)? as i64).wrapping_mul(old) / new;
        set(mem, se, self.se_vlag, vlag as u64)?;
        if get(mem, se, self.se_rel_deadline)? != 0 {
            let deadline = (get(mem, se, self.se_deadline)? as i64).wrapping_mul(old) / new;
            set(mem, se, self.se_deadline, deadline as u64)?;
        }
        // update_load_set
        set(mem, se, self.se_h_load.weight, weight)?;
        set(mem, se, self.se_h_load.inv_weight, 0)
    }

    /// A weight as the kernel's `long`, refusing zero (a divisor) and values beyond it.
    fn signed(&self, weight: u64) -> Result<i64, LinuxError> {
        i64::try_from(weight).ok().filter(|&w| w > 0).ok_or_else(|| LinuxError::Walk(format!("implausible weight {weight}")))
    }

    /// `place_entity(cfs_rq, se, ENQUEUE_WAKEUP | ENQUEUE_QUEUED)` (the entity already counted
    /// in `h_nr_queued`): it keeps the lag it left with, inflated so that adding it to the average
    /// leaves it that lag; a heavy entity moves `zero_vruntime` to its position; its deadline is
    /// one virtual slice on (or its relative deadline back).
    fn place_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, features: Features) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let vruntime = self.avg_vruntime(mem, cfs_rq)?;
        let nr_queued = get(mem, cfs_rq, self.c_h_nr_queued)?.wrapping_sub(1) & 0xffff_ffff;
        if get(mem, se, self.se_custom_slice)? == 0 {
            let base_slice = u64::from(mem.read_u32(self.base_slice)?);
            set(mem, se, self.se_slice, base_slice)?;
        }
        let slice = get(mem, se, self.se_slice)?;
        let vslice = fixed::calc_delta_fair(mem, slice, se, self.se_h_load, self.common.nice_0_load, self.fixedpoint_shift)?;
        let vlag = get(mem, se, self.se_vlag)? as i64;
        let mut lag = 0i64;
        let mut update_zero = false;
        if features.place_lag && nr_queued != 0 && vlag != 0 {
            let mut load = get(mem, cfs_rq, self.c_sum_weight)? as i64;
            if let Some((_, w)) = self.curr(mem, cfs_rq)? {
                load = load.wrapping_add(w);
            }
            // (The kernel warns on a zero load here and divides by 1.)
            let load = if load == 0 { 1 } else { load };
            let weight = self.avg_vruntime_weight(mem, cfs_rq, get(mem, se, self.se_h_load.weight)?)?;
            lag = vlag.wrapping_add(vlag.wrapping_mul(weight) / load);
            update_zero = weight > load;
        }
        let placed = vruntime.wrapping_sub(lag as u64);
        set(mem, se, self.common.se_vruntime, placed)?;
        if update_zero {
            self.update_zero_vruntime(mem, cfs_rq, lag.wrapping_neg())?;
        }
        if features.place_rel_deadline && get(mem, se, self.se_rel_deadline)? != 0 {
            let deadline = get(mem, se, self.se_deadline)?;
            set(mem, se, self.se_deadline, deadline.wrapping_add(placed))?;
            return set(mem, se, self.se_rel_deadline, 0);
        }
        set(mem, se, self.se_deadline, placed.wrapping_add(vslice))
    }

    /// `__enqueue_entity`: the entity joins the weighted sums (`sum_w_vruntime_add`), starts its
    /// subtree values from its own and is inserted by deadline (`rb_add_augmented_cached`).
    fn enqueue_entity<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, features: Features) -> Result<(), LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let weight = self.avg_vruntime_weight(mem, cfs_rq, get(mem, se, self.se_h_load.weight)?)?;
        let vruntime = get(mem, se, self.common.se_vruntime)?;
        let key = vruntime.wrapping_sub(get(mem, cfs_rq, self.c_zero_vruntime)?) as i64;
        let sum = get(mem, cfs_rq, self.c_sum_w_vruntime)? as i64;
        let new_sum = if features.paranoid_avg {
            key.checked_mul(weight).and_then(|w| sum.checked_add(w)).ok_or_else(|| {
                LinuxError::Walk(format!("cfs_rq {cfs_rq}: the weighted sum would overflow (the kernel would raise sum_shift)"))
            })?
        } else {
            sum.wrapping_add(key.wrapping_mul(weight))
        };
        set(mem, cfs_rq, self.c_sum_w_vruntime, new_sum as u64)?;
        bump(mem, cfs_rq, self.c_sum_weight, weight as u64)?;
        let a = self.augment;
        let slice = get(mem, se, self.se_slice)?;
        mem.write_u64(add(se, a.min_vruntime)?, vruntime)?;
        mem.write_u64(add(se, a.min_slice)?, slice)?;
        if let Some(max_slice) = a.max_slice {
            mem.write_u64(add(se, max_slice)?, slice)?;
        }
        self.common.insert(mem, level, Some(a))
    }

    /// `avg_vruntime(cfs_rq)`: the weighted average vruntime of the queued entities and the
    /// running one, floored; like the kernel it moves `zero_vruntime` there
    /// (`update_zero_vruntime`) and returns it.
    fn avg_vruntime<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_rq: Gva) -> Result<u64, LinuxError> {
        let curr = self.curr(mem, cfs_rq)?;
        let zero = get(mem, cfs_rq, self.c_zero_vruntime)?;
        let sum_weight = get(mem, cfs_rq, self.c_sum_weight)? as i64;
        let mut delta = 0i64;
        if sum_weight != 0 {
            let (mut runtime, mut weight) = (get(mem, cfs_rq, self.c_sum_w_vruntime)? as i64, sum_weight);
            if let Some((vruntime, w)) = curr {
                runtime = runtime.wrapping_add((vruntime.wrapping_sub(zero) as i64).wrapping_mul(w));
                weight = weight.wrapping_add(w);
            }
            // The sign flips the effective floor / ceiling.
            if runtime < 0 {
                runtime = runtime.wrapping_sub(weight.wrapping_sub(1));
            }
            if weight <= 0 {
                return Err(LinuxError::Walk(format!("cfs_rq {cfs_rq}: implausible sum of weights {weight}")));
            }
            delta = runtime / weight;
        } else if let Some((vruntime, _)) = curr {
            delta = vruntime.wrapping_sub(zero) as i64;
        }
        self.update_zero_vruntime(mem, cfs_rq, delta)?;
        get(mem, cfs_rq, self.c_zero_vruntime)
    }

    /// `update_zero_vruntime(cfs_rq, delta)`: `zero_vruntime` moves by `delta` and the sum is
    /// rebased (`sum_w_vruntime -= sum_weight * delta`).
    fn update_zero_vruntime<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, cfs_rq: Gva, delta: i64) -> Result<(), LinuxError> {
        let sum = get(mem, cfs_rq, self.c_sum_w_vruntime)? as i64;
        let sum_weight = get(mem, cfs_rq, self.c_sum_weight)? as i64;
        set(mem, cfs_rq, self.c_sum_w_vruntime, sum.wrapping_sub(sum_weight.wrapping_mul(delta)) as u64)?;
        let zero = get(mem, cfs_rq, self.c_zero_vruntime)?;
        set(mem, cfs_rq, self.c_zero_vruntime, zero.wrapping_add(delta as u64))
    }

    /// `avg_vruntime_weight(cfs_rq, w)`: `w >> sum_shift`, at least 2, when the runqueue's sums
    /// are shifted; `w` otherwise.
    fn avg_vruntime_weight<K: KernelMemory + ?Sized>(&self, mem: &K, cfs_rq: Gva, w: u64) -> Result<i64, LinuxError> {
        let shift = get(mem, cfs_rq, self.c_sum_shift)?;
        // (The kernel BUGs before the shift reaches 11.)
        let w = match shift {
            0 => w,
            1..=10 => (w >> shift).max(2),
            _ => return Err(LinuxError::Walk(format!("cfs_rq {cfs_rq}: implausible sum_shift {shift}"))),
        };
        i64::try_from(w).map_err(|_| LinuxError::Walk(format!("cfs_rq {cfs_rq}: implausible weight {w}")))
    }

    /// The runqueue's running entity when it is queued (`curr && curr->on_rq`): its `vruntime`
    /// and its weight in the sums.
    fn curr<K: KernelMemory + ?Sized>(&self, mem: &K, cfs_rq: Gva) -> Result<Option<(u64, i64)>, LinuxError> {
        let curr = Gva(get(mem, cfs_rq, self.common.c_curr)?);
        if curr == Gva(0) || get(mem, curr, self.common.se_on_rq)? == 0 {
            return Ok(None);
        }
        let w = self.avg_vruntime_weight(mem, cfs_rq, get(mem, curr, self.se_h_load.weight)?)?;
        Ok(Some((get(mem, curr, self.common.se_vruntime)?, w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::fair::test_image::{entity, memory, put, BASE};
    use crate::linux::flavour::Flavour;
    /// The root runqueue sits at physical 0, a group runqueue at 0x800, entities from 0x1000
    /// on, 0x200 apart.
    const ROOT: Gva = BASE;
    const GROUP: Gva = Gva(BASE.raw() + 0x800);

    fn flat() -> Flat {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/7.3.4+deb13-cloud-amd64.json");
        let p = Profile::load(&path).expect("7.3 profile");
        let common = FairLayout::from_profile(&p, Flavour::EevdfFlat).expect("layout");
        Flat::from_profile(&p, 0, common).expect("flat")
    }

    const NONE: Features = Features { place_lag: true, place_rel_deadline: true, paranoid_avg: false };

    /// `__calc_prop_weight` down a hierarchy: a task of weight 1024 alone in a group whose
    /// entity weighs 512 (of a root weighing 2048 with it) gets 1024 * 1024 / 1024 at its level,
    /// then that * 512 / NICE_0_LOAD at the root.
    #[test]
    fn the_hierarchical_weight_folds_every_share_in() {
        let f = flat();
        let c = &f.common;
        let mut mem = memory();
        let (task, group_se) = (entity(0), entity(1));
        put(&mut mem, task, c.se_weight, 1024 << 10);
        put(&mut mem, GROUP, c.c_weight, 1024 << 10);
        put(&mut mem, group_se, c.se_weight, 512 << 10);
        put(&mut mem, ROOT, c.c_weight, 2048 << 10);
        let w = f.calc_prop_weight(&mem, &Level { se: task, cfs_rq: GROUP, queued: false }, true, c.nice_0_load).expect("task level");
        assert_eq!(w, 1024 << 10);
        let w = f.calc_prop_weight(&mem, &Level { se: group_se, cfs_rq: ROOT, queued: true }, false, w).expect("group level");
        assert_eq!(w, 512 << 10);
        // The floor.
        put(&mut mem, task, c.se_weight, 1);
        assert_eq!(f.calc_prop_weight(&mem, &Level { se: task, cfs_rq: GROUP, queued: false }, true, 3).expect("tiny"), 2);
    }

    /// `avg_vruntime_weight`: unshifted sums take the full weight; shifted ones lose the low
    /// bits but keep at least 2.
    #[test]
    fn shifted_sums_weigh_at_least_two() {
        let f = flat();
        let mut mem = memory();
        assert_eq!(f.avg_vruntime_weight(&mem, ROOT, 1024 << 10).expect("w"), 1024 << 10);
        put(&mut mem, ROOT, f.c_sum_shift, 3);
        assert_eq!(f.avg_vruntime_weight(&mem, ROOT, 1024 << 10).expect("w"), 1024 << 7);
        assert_eq!(f.avg_vruntime_weight(&mem, ROOT, 9).expect("w"), 2);
        put(&mut mem, ROOT, f.c_sum_shift, 11);
        assert!(f.avg_vruntime_weight(&mem, ROOT, 9).is_err());
    }

    /// Reweighting an entity off the runqueue scales its lag by old / new weight (toward zero)
    /// and clears the cached inverse.
    #[test]
    fn reweight_rescales_the_lag() {
        let f = flat();
        let mut mem = memory();
        let se = entity(0);
        put(&mut mem, se, f.se_h_load.weight, 1024 << 10);
        put(&mut mem, se, f.se_h_load.inv_weight, 4_194_304);
        put(&mut mem, se, f.se_vlag, (-3_001i64) as u64);
        f.reweight(&mut mem, se, 2048 << 10).expect("reweight");
        assert_eq!(get(&mem, se, f.se_vlag).expect("vlag") as i64, -1_500);
        assert_eq!(get(&mem, se, f.se_h_load.weight).expect("w"), 2048 << 10);
        assert_eq!(get(&mem, se, f.se_h_load.inv_weight).expect("inv"), 0);
    }

    /// Three entities enqueued one after another: the sums equal a recomputation over the tree
    /// (relative to the final `zero_vruntime`), the lag is kept, and the tree checks.
    #[test]
    fn enqueued_entities_keep_the_sums_exact() {
        let f = flat();
        let c = &f.common;
        let mut mem = memory();
        put(&mut mem, ROOT, f.c_zero_vruntime, 10_000_000);
        let entities = [entity(0), entity(1), entity(2)];
        for (i, &se) in entities.iter().enumerate() {
            put(&mut mem, se, f.se_h_load.weight, [1024u64, 2048, 335][i] << 10);
            put(&mut mem, se, f.se_slice, 2_800_000);
            put(&mut mem, se, f.se_custom_slice, 1);
            put(&mut mem, se, f.se_vlag, [0u64, 4_000, (-7_000i64) as u64][i]);
            bump(&mut mem, ROOT, f.c_h_nr_queued, 1).expect("count");
            let level = Level { se, cfs_rq: ROOT, queued: false };
            f.place_entity(&mut mem, &level, NONE).expect("place");
            f.enqueue_entity(&mut mem, &level, NONE).expect("enqueue");
        }
        let zero = get(&mem, ROOT, f.c_zero_vruntime).expect("zero");
        let (mut sum, mut weight) = (0i64, 0i64);
        for &se in &entities {
            let w = get(&mem, se, f.se_h_load.weight).expect("w") as i64;
            sum += (get(&mem, se, c.se_vruntime).expect("v").wrapping_sub(zero) as i64) * w;
            weight += w;
        }
        assert_eq!(get(&mem, ROOT, f.c_sum_w_vruntime).expect("sum") as i64, sum);
        assert_eq!(get(&mem, ROOT, f.c_sum_weight).expect("weight") as i64, weight);
        let tree = c.timeline(&mut mem, ROOT, Some(f.augment)).expect("tree");
        assert_eq!(crate::actuate::rbtree::check_tree(&tree, 10).expect("valid tree").count, 3);
    }
}
