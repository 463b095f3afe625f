//! The fair class's runqueue arithmetic for a waking task, one module per scheduler flavour.
//!
//! Like the kernel's `struct sched_class`, the flavour-neutral write path (`super::park`: locks,
//! identity, the state change, leaf list, PSI, `rq.nr_running`, resched, the staged overlay)
//! calls one operation here, [`FairClass::enqueue_task`], and never asks which flavour it runs.
//! Each flavour module mirrors its kernel's `enqueue_task_fair` and names the kernel it follows:
//! [`cfs`] (Linux 6.1), [`eevdf`] (Linux 6.12) and [`flat`] (Linux 7.3); [`fixed`] holds the
//! fixed-point weight arithmetic the EEVDF flavours share. A new kernel whose fair class moved is
//! a new module, an arm of [`FairClass`] and a [`Flavour`].

pub mod cfs;
pub mod eevdf;
pub mod fixed;
pub mod flat;
#[cfg(test)]
mod test_image;

use crate::linux::flavour::Flavour;
use crate::linux::layout::Field;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::walk::{add, ListHeadLayout, RbNodeLayout};
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::Profile;

use super::fields::{bump, get, list_add, set};
use super::rbtree::{check_tree, erase_cached, insert_cached, GuestRbTree, MinVruntimeAugment, RbKeyLayout, RbTreeError};

/// Largest red-black tree checked around an insert.
const TREE_LIMIT: usize = 1 << 20;

/// One level of a task's scheduling-entity hierarchy: the task's own entity first, then each
/// group entity up to the one on the CPU's root `cfs_rq`.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    /// The `sched_entity`.
    pub se: Gva,
    /// The `cfs_rq` it belongs to (`se->cfs_rq`).
    pub cfs_rq: Gva,
    /// It is already queued there (`se->on_rq`; never for the task's own level).
    pub queued: bool,
}

/// A change to a timeline.
#[derive(Clone, Copy, Debug)]
enum TreeChange {
    Insert,
    Erase,
}

/// The `sched_entity` and `cfs_rq` fields every flavour uses.
#[derive(Clone, Debug)]
pub struct FairLayout {
    se_weight: Field,
    se_inv_weight: Field,
    se_run_node: Field,
    se_group_node: u64,
    se_on_rq: Field,
    se_vruntime: Field,
    se_runnable_weight: Field,
    c_weight: Field,
    c_inv_weight: Field,
    c_nr_running: Field,
    c_on_list: Field,
    c_curr: Field,
    c_root: u64,
    c_leftmost: u64,
    rb: RbNodeLayout,
    key: RbKeyLayout,
    list: ListHeadLayout,
    nice_0_load: u64,
}

impl FairLayout {
    fn from_profile(p: &Profile, flavour: Flavour) -> Result<Self, LinuxError> {
        let se = |f: &str| Field::scalar(p, "sched_entity", f);
        let c = |f: &str| Field::scalar(p, "cfs_rq", f);
        Ok(Self {
            se_weight: se("load.weight")?,
            se_inv_weight: se("load.inv_weight")?,
            se_run_node: Field::of(p, "sched_entity", "run_node")?,
            se_group_node: p.offset("sched_entity", "group_node")?,
            se_on_rq: se("on_rq")?,
            se_vruntime: se("vruntime")?,
            se_runnable_weight: se("runnable_weight")?,
            c_weight: c("load.weight")?,
            c_inv_weight: c("load.inv_weight")?,
            c_nr_running: c(flavour.nr_queued())?,
            c_on_list: c("on_list")?,
            c_curr: c("curr")?,
            c_root: p.offset("cfs_rq", "tasks_timeline.rb_root.rb_node")?,
            c_leftmost: p.offset("cfs_rq", "tasks_timeline.rb_leftmost")?,
            rb: RbNodeLayout::from_profile(p)?,
            key: RbKeyLayout::timeline(p, flavour)?,
            list: ListHeadLayout::from_profile(p)?,
            nice_0_load: p.constant("NICE_0_LOAD")?,
        })
    }

    /// `account_entity_enqueue`: the entity's weight joins its runqueue's (`update_load_add`
    /// clears the cached inverse), a task joins its CPU's `cfs_tasks`, and the runqueue counts
    /// one more entity. Returns whether the runqueue just became busy while off the leaf list
    /// (the caller lists it: `list_add_leaf_cfs_rq`).
    fn account_entity_enqueue<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, is_task: bool, cfs_tasks: Gva) -> Result<bool, LinuxError> {
        let Level { se, cfs_rq, .. } = *level;
        let weight = get(mem, se, self.se_weight)?;
        bump(mem, cfs_rq, self.c_weight, weight)?;
        set(mem, cfs_rq, self.c_inv_weight, 0)?;
        if is_task {
            list_add(mem, self.list, add(se, self.se_group_node)?, cfs_tasks)?;
        }
        bump(mem, cfs_rq, self.c_nr_running, 1)?;
        Ok(get(mem, cfs_rq, self.c_nr_running)? == 1 && get(mem, cfs_rq, self.c_on_list)? == 0)
    }

    /// `se_update_runnable`: a group entity's runnable weight is the count `runnable` of its own
    /// runqueue (the level below).
    fn update_runnable<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, se: Gva, my_q: Option<Gva>, runnable: Field) -> Result<(), LinuxError> {
        match my_q {
            Some(my_q) => {
                let count = get(mem, my_q, runnable)?;
                set(mem, se, self.se_runnable_weight, count)
            }
            None => Ok(()),
        }
    }

    /// The timeline of the `cfs_rq` at `cfs_rq`.
    fn timeline<'a, K: KernelMemoryMut + ?Sized>(&self, mem: &'a mut K, cfs_rq: Gva, augment: Option<MinVruntimeAugment>) -> Result<GuestRbTree<'a, K>, LinuxError> {
        Ok(GuestRbTree::new(mem, self.rb, self.key, augment, add(cfs_rq, self.c_root)?, add(cfs_rq, self.c_leftmost)?))
    }

    /// Inserts `se` into its runqueue's timeline, checking the tree before and after.
    fn insert<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, augment: Option<MinVruntimeAugment>) -> Result<(), LinuxError> {
        self.change_timeline(mem, level, augment, TreeChange::Insert)
    }

    /// Erases `se` from its runqueue's timeline, checking the tree before and after.
    fn erase<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, augment: Option<MinVruntimeAugment>) -> Result<(), LinuxError> {
        self.change_timeline(mem, level, augment, TreeChange::Erase)
    }

    /// Inserts or erases `se`: the tree is checked before (never change a broken tree) and after,
    /// and must have gained or lost exactly that node.
    fn change_timeline<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, level: &Level, augment: Option<MinVruntimeAugment>, change: TreeChange) -> Result<(), LinuxError> {
        let node = self.se_run_node.at(level.se)?;
        let mut tree = self.timeline(mem, level.cfs_rq, augment)?;
        let before = check_tree(&tree, TREE_LIMIT).map_err(tree_error)?;
        let expected = match change {
            TreeChange::Insert => {
                insert_cached(&mut tree, node).map_err(tree_error)?;
                before.count.checked_add(1)
            }
            TreeChange::Erase => {
                erase_cached(&mut tree, node).map_err(tree_error)?;
                before.count.checked_sub(1)
            }
        };
        let after = check_tree(&tree, TREE_LIMIT).map_err(tree_error)?;
        if Some(after.count) != expected {
            return Err(LinuxError::Walk(format!("cfs_rq {}: {change:?} left {} nodes, {} before", level.cfs_rq, after.count, before.count)));
        }
        Ok(())
    }
}

/// The fair class of one kernel build: its flavour's layout and arithmetic.
#[derive(Clone, Debug)]
pub enum FairClass {
    /// CFS (Linux 6.1).
    Cfs(cfs::Cfs),
    /// EEVDF (Linux 6.12).
    Eevdf(eevdf::Eevdf),
    /// EEVDF over a flat runqueue (Linux 7.3).
    Flat(flat::Flat),
}

impl FairClass {
    /// The fair class of the kernel `p` describes; `virt_shift` locates its image symbols.
    pub fn from_profile(p: &Profile, virt_shift: u64) -> Result<Self, LinuxError> {
        let flavour = Flavour::of(p)?;
        let common = FairLayout::from_profile(p, flavour)?;
        Ok(match flavour {
            Flavour::Cfs => Self::Cfs(cfs::Cfs::from_profile(p, virt_shift, common)?),
            Flavour::Eevdf => Self::Eevdf(eevdf::Eevdf::from_profile(p, virt_shift, common)?),
            Flavour::EevdfFlat => Self::Flat(flat::Flat::from_profile(p, virt_shift, common)?),
        })
    }

    /// Its flavour.
    pub fn flavour(&self) -> Flavour {
        match self {
            Self::Cfs(_) => Flavour::Cfs,
            Self::Eevdf(_) => Flavour::Eevdf,
            Self::Flat(_) => Flavour::EevdfFlat,
        }
    }

    /// Why the hierarchy `levels` cannot be enqueued now (a transient state the kernel will
    /// leave by itself), or `None`.
    pub fn not_now<K: KernelMemory + ?Sized>(&self, mem: &K, levels: &[Level]) -> Result<Option<String>, LinuxError> {
        match self {
            Self::Cfs(_) => Ok(None),
            Self::Eevdf(e) => e.not_now(mem, levels),
            Self::Flat(f) => f.not_now(mem, levels),
        }
    }

    /// Stages what `enqueue_task_fair(rq, p, ENQUEUE_WAKEUP)` does to the fair runqueues for a
    /// task whose hierarchy is `levels`, on the CPU whose `rq` is at `rq` and whose `cfs_tasks`
    /// list head is at `cfs_tasks`. Returns the runqueues that became busy while off the leaf
    /// list, lowest level first.
    pub fn enqueue_task<K: KernelMemoryMut + ?Sized>(&self, mem: &mut K, rq: Gva, cfs_tasks: Gva, levels: &[Level]) -> Result<Vec<Gva>, LinuxError> {
        match self {
            Self::Cfs(c) => c.enqueue_task(mem, rq, cfs_tasks, levels),
            Self::Eevdf(e) => e.enqueue_task(mem, cfs_tasks, levels),
            Self::Flat(f) => f.enqueue_task(mem, cfs_tasks, levels),
        }
    }
}

fn tree_error(e: RbTreeError) -> LinuxError {
    LinuxError::Walk(e.to_string())
}
