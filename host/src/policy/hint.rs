//! The [`Hint`] handed to a policy with each snapshot (interface 1.1): which tasks are runnable
//! and which changed, kept from one period to the next at the cost of what changed.

use abi_stable::std_types::{RNone, RSome, RVec};
use xsched_plugin_api::{Hint, Snapshot};

/// The runnable tasks of the last snapshot, as a bit per task, and the hint made from them.
#[derive(Debug, Default)]
pub struct HintKeeper {
    /// Bit `i % 64` of word `i / 64`: task `i` is runnable.
    runnable: Vec<u64>,
    /// The hint for the snapshot last noted.
    hint: Hint,
}

impl HintKeeper {
    /// Notes a snapshot rewritten in full: any task may have changed.
    pub fn rewritten(&mut self, snapshot: &Snapshot) {
        self.runnable.clear();
        self.runnable.resize(snapshot.tasks.len().div_ceil(64), 0);
        for (i, view) in snapshot.tasks.iter().enumerate() {
            self.set(i, view.runnable);
        }
        self.hint.changed = RNone;
        self.list_runnable();
    }

    /// Notes a snapshot of which only the tasks `changed` (indices, ascending) were rewritten
    /// since the one noted before.
    pub fn updated(&mut self, snapshot: &Snapshot, changed: &[usize]) {
        for &i in changed {
            if let Some(view) = snapshot.tasks.get(i) {
                self.set(i, view.runnable);
            }
        }
        let listed = changed.iter().filter_map(|&i| u32::try_from(i).ok());
        match &mut self.hint.changed {
            RSome(list) => {
                list.clear();
                list.extend(listed);
            }
            none => *none = RSome(listed.collect()),
        }
        self.list_runnable();
    }

    /// The hint for the snapshot last noted.
    pub fn hint(&self) -> &Hint {
        &self.hint
    }

    fn set(&mut self, i: usize, runnable: bool) {
        if let Some(word) = self.runnable.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if runnable {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Lists the runnable tasks' indices into the hint, from the bits.
    fn list_runnable(&mut self) {
        let list: &mut RVec<u32> = &mut self.hint.runnable;
        list.clear();
        for (w, &word) in self.runnable.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                list.extend(u32::try_from(i).ok());
                bits &= bits - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsched_plugin_api::testing::{snapshot, task};
    use xsched_plugin_api::TaskView;

    fn runnable_of(snap: &Snapshot) -> Vec<u32> {
        snap.tasks.iter().enumerate().filter(|(_, t)| t.runnable).filter_map(|(i, _)| u32::try_from(i).ok()).collect()
    }

    #[test]
    fn the_hint_follows_the_snapshot_through_rewrites_and_updates() {
        let sleeping = |pid| TaskView { runnable: false, state: b'S', ..task(0, pid, "t") };
        let mut snap = snapshot(&[("g", 1)], (0..150).map(|pid| if pid % 7 == 0 { task(0, pid, "t") } else { sleeping(pid) }).collect());
        let mut keeper = HintKeeper::default();
        keeper.rewritten(&snap);
        assert_eq!(keeper.hint().runnable.to_vec(), runnable_of(&snap));
        assert!(keeper.hint().changed.is_none());
        // Task 7 sleeps, 64 and 149 wake.
        snap.tasks[7] = sleeping(7);
        snap.tasks[64] = task(0, 64, "t");
        snap.tasks[149] = task(0, 149, "t");
        keeper.updated(&snap, &[7, 64, 149]);
        assert_eq!(keeper.hint().runnable.to_vec(), runnable_of(&snap));
        assert_eq!(keeper.hint().changed.as_ref().map(|c| c.to_vec()), RSome(vec![7, 64, 149]));
        keeper.updated(&snap, &[]);
        assert_eq!(keeper.hint().changed.as_ref().map(|c| c.len()), RSome(0));
        assert_eq!(keeper.hint().runnable.to_vec(), runnable_of(&snap));
    }
}
