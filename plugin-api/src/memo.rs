//! A per-task memo for policies: what a policy computes from a task's rule-matched attributes
//! (its class, its group), kept from one snapshot to the next.
//!
//! Plain Rust (nothing here crosses the FFI boundary), free for any plugin. A value is kept by
//! the task's identity (domain, pid, start time) and computed again only when the task is new,
//! or when an attribute a rule can match and that can change while a task lives (its `comm`,
//! uid or cgroup) changed since. The domain, pid and tgid of an identity never change. Entries
//! of tasks gone from the snapshot are dropped by [`TaskMemo::finish`].
//!
//! ```
//! use xsched_plugin_api::memo::TaskMemo;
//! use xsched_plugin_api::testing::{snapshot, task};
//!
//! let mut classes: TaskMemo<u32> = TaskMemo::new();
//! let snap = snapshot(&[("guest1", 2)], vec![task(0, 10, "db"), task(0, 11, "web")]);
//! for (i, t) in snap.tasks.iter().enumerate() {
//!     let class = *classes.get(i, t, |t| if t.comm().starts_with("db") { 0 } else { 1 });
//!     assert_eq!(class, if t.pid == 10 { 0 } else { 1 });
//! }
//! // Once per snapshot, after the last `get`:
//! classes.finish(&snap);
//! ```

use std::collections::{HashMap, HashSet};

use crate::{Snapshot, TaskView};

/// A task's identity: domain, pid, start time.
type Identity = (u32, i32, u64);

/// Values computed per task, kept while the task lives and keeps its attributes.
#[derive(Clone, Debug)]
pub struct TaskMemo<V> {
    entries: HashMap<Identity, Entry<V>>,
    /// Snapshots finished: entries whose `seen` is this were used in the current one.
    round: u64,
}

/// One task's value and what it was computed from.
#[derive(Clone, Debug)]
struct Entry<V> {
    comm: String,
    uid: Option<u32>,
    cgroup: Option<String>,
    value: V,
    /// The last round the entry was used in.
    seen: u64,
    /// Where the task was in that round's snapshot.
    index: usize,
}

impl<V> Default for TaskMemo<V> {
    fn default() -> Self {
        Self { entries: HashMap::new(), round: 0 }
    }
}

impl<V> Entry<V> {
    /// Whether `task`'s attributes are those the value was computed from.
    fn holds(&self, task: &TaskView) -> bool {
        self.comm == task.comm() && self.uid == task.uid() && self.cgroup.as_deref() == task.cgroup()
    }

    /// Takes `task`'s attributes.
    fn take_attributes(&mut self, task: &TaskView) {
        self.comm.clear();
        self.comm.push_str(task.comm());
        self.uid = task.uid();
        match (&mut self.cgroup, task.cgroup()) {
            (Some(mine), Some(path)) => {
                mine.clear();
                mine.push_str(path);
            }
            (mine, path) => *mine = path.map(str::to_owned),
        }
    }
}

impl<V> TaskMemo<V> {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `task`, the `index`th task of the current snapshot: the one kept, or
    /// `compute(task)` when the task is new or changed its `comm`, uid or cgroup.
    pub fn get(&mut self, index: usize, task: &TaskView, compute: impl FnOnce(&TaskView) -> V) -> &V {
        use std::collections::hash_map::Entry as Slot;
        let round = self.round;
        let entry = match self.entries.entry((task.domain, task.pid, task.start_time)) {
            Slot::Occupied(slot) => {
                let e = slot.into_mut();
                if !e.holds(task) {
                    e.take_attributes(task);
                    e.value = compute(task);
                }
                e
            }
            Slot::Vacant(slot) => slot.insert(Entry {
                comm: task.comm().to_owned(),
                uid: task.uid(),
                cgroup: task.cgroup().map(str::to_owned),
                value: compute(task),
                seen: round,
                index,
            }),
        };
        entry.seen = round;
        entry.index = index;
        &entry.value
    }

    /// Ends the current snapshot: drops the entries of tasks that are not in `snapshot`.
    pub fn finish(&mut self, snapshot: &Snapshot) {
        let round = self.round;
        let tasks = &snapshot.tasks;
        let at = |index: usize, key: &Identity| tasks.get(index).is_some_and(|t| (t.domain, t.pid, t.start_time) == *key);
        // An entry not used this round is checked where its task was when it was: the
        // snapshot's order rarely changes. Only when one is not found there are all looked up.
        let mut present: Option<HashSet<Identity>> = None;
        self.entries.retain(|key, e| {
            e.seen == round
                || at(e.index, key)
                || present.get_or_insert_with(|| tasks.iter().map(|t| (t.domain, t.pid, t.start_time)).collect()).contains(key)
        });
        self.round += 1;
    }

    /// Forgets every value (after a configuration change).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many tasks have a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no task has a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{snapshot, task};

    /// Counts the computations: the value is the number of the computation that made it.
    fn classify(memo: &mut TaskMemo<u32>, snap: &Snapshot, computed: &mut u32) -> Vec<u32> {
        let values = snap
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                *memo.get(i, t, |_| {
                    *computed += 1;
                    *computed
                })
            })
            .collect();
        memo.finish(snap);
        values
    }

    #[test]
    fn values_are_kept_until_an_attribute_changes() {
        let mut memo = TaskMemo::new();
        let mut computed = 0;
        let a = task(0, 10, "a");
        let b = TaskView { uid: Some(1000).into(), ..task(1, 10, "b") };
        let snap = snapshot(&[("g1", 1), ("g2", 1)], vec![a.clone(), b.clone()]);
        assert_eq!(classify(&mut memo, &snap, &mut computed), [1, 2]);
        assert_eq!(classify(&mut memo, &snap, &mut computed), [1, 2], "nothing changed: nothing computed");
        // Renamed, new uid, new cgroup, new start time (a reused pid): each computed again.
        let changed = [
            TaskView { comm: "a2".into(), ..a.clone() },
            TaskView { uid: Some(1).into(), ..a.clone() },
            TaskView { cgroup: Some("/x".into()).into(), ..a.clone() },
            TaskView { start_time: 7, ..a.clone() },
        ];
        for (n, t) in (3..).zip(changed) {
            let snap = snapshot(&[("g1", 1), ("g2", 1)], vec![b.clone(), t]);
            assert_eq!(classify(&mut memo, &snap, &mut computed), [2, n]);
        }
    }

    #[test]
    fn tasks_gone_from_the_snapshot_are_dropped() {
        let mut memo: TaskMemo<u32> = TaskMemo::new();
        let tasks: Vec<TaskView> = (1..=4).map(|pid| task(0, pid, "t")).collect();
        let snap = snapshot(&[("g1", 1)], tasks.clone());
        for (i, t) in snap.tasks.iter().enumerate() {
            memo.get(i, t, |t| u32::try_from(t.pid).unwrap_or(0));
        }
        memo.finish(&snap);
        assert_eq!(memo.len(), 4);
        // No value asked for this round: the tasks still in the snapshot keep theirs, found
        // where they were (1, 2) or elsewhere (4, now first); 3 exited.
        let later = snapshot(&[("g1", 1)], vec![tasks[3].clone(), tasks[0].clone(), tasks[1].clone()]);
        memo.finish(&later);
        assert_eq!(memo.len(), 3);
        assert_eq!(*memo.get(0, &tasks[3], |_| 99), 4, "kept");
        memo.clear();
        assert!(memo.is_empty());
    }
}
