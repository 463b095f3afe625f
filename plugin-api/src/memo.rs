//! A per-task memo for policies: what a policy computes from a task's rule-matched attributes
//! (its class, its group), kept from one snapshot to the next.
//!
//! Plain Rust (nothing here crosses the FFI boundary), free for any plugin. A value is kept by
//! the task's identity (domain, pid, start time) and computed again only when the task is new,
//! or when an attribute a rule can match and that can change while a task lives (its `comm`,
//! uid or cgroup) changed since. The domain, pid and tgid of an identity never change. Entries
//! of tasks gone from the snapshot are dropped by [`TaskMemo::finish`] (or
//! [`TaskMemo::finish_hinted`], which looks only when the host says tasks came or went).
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

use crate::{Hint, Snapshot, TaskView};

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

    /// Ends the current snapshot, told by the host's `hint` whether tasks came or went: only
    /// then does it look for entries to drop ([`Self::finish`]); otherwise it costs nothing.
    pub fn finish_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) {
        if hint.changed.is_some() {
            self.round += 1;
        } else {
            self.finish(snapshot);
        }
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

/// A [`TaskMemo`] that also keeps each value by its task's index, for a policy ranking with the
/// host's [`Hint`]: while the hint says the snapshot holds the same tasks at the same indices,
/// a task not listed as changed takes its value by index, without a look-up or a comparison of
/// its attributes. A snapshot then costs what changed, plus a read per runnable task.
#[derive(Clone, Debug)]
pub struct HintedMemo<V> {
    memo: TaskMemo<V>,
    /// The value of the task at each index, when known for the current snapshot.
    by_index: Vec<Option<V>>,
}

impl<V> Default for HintedMemo<V> {
    fn default() -> Self {
        Self { memo: TaskMemo::new(), by_index: Vec::new() }
    }
}

impl<V: Clone> HintedMemo<V> {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a snapshot handed with `hint` (`None`: without one, as [`Policy::rank`](crate::Policy::rank)
    /// is): forgets the values by index of the tasks that may have changed, all of them unless
    /// the hint lists them.
    pub fn begin(&mut self, snapshot: &Snapshot, hint: Option<&Hint>) {
        let n = snapshot.tasks.len();
        match hint.and_then(|h| h.changed.as_ref().into_option()) {
            Some(changed) if self.by_index.len() == n => {
                for &i in changed.iter() {
                    if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.by_index.get_mut(i)) {
                        *slot = None;
                    }
                }
            }
            _ => {
                self.by_index.clear();
                self.by_index.resize(n, None);
            }
        }
    }

    /// The value for `task`, the `index`th task of the current snapshot: by index when it did
    /// not change, else as [`TaskMemo::get`] finds or computes it.
    pub fn get(&mut self, index: usize, task: &TaskView, compute: impl FnOnce(&TaskView) -> V) -> V {
        if let Some(Some(value)) = self.by_index.get(index) {
            return value.clone();
        }
        let value = self.memo.get(index, task, compute).clone();
        if let Some(slot) = self.by_index.get_mut(index) {
            *slot = Some(value.clone());
        }
        value
    }

    /// Ends the current snapshot ([`TaskMemo::finish_hinted`], or [`TaskMemo::finish`] without
    /// a hint).
    pub fn finish(&mut self, snapshot: &Snapshot, hint: Option<&Hint>) {
        match hint {
            Some(hint) => self.memo.finish_hinted(snapshot, hint),
            None => self.memo.finish(snapshot),
        }
    }

    /// Forgets every value (after a configuration change).
    pub fn clear(&mut self) {
        self.memo.clear();
        self.by_index.clear();
    }

    /// How many tasks have a value.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    /// Whether no task has a value.
    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
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
    fn a_hinted_memo_computes_only_what_the_hint_lists_as_changed() {
        use abi_stable::std_types::{RNone, RSome};
        let mut memo: HintedMemo<u32> = HintedMemo::new();
        let mut computed = 0;
        let mut classify = |memo: &mut HintedMemo<u32>, snap: &Snapshot, hint: Option<&Hint>| -> Vec<u32> {
            memo.begin(snap, hint);
            let values = snap.tasks.iter().enumerate().map(|(i, t)| memo.get(i, t, |_| { computed += 1; computed })).collect();
            memo.finish(snap, hint);
            values
        };
        let mut snap = snapshot(&[("g1", 1)], vec![task(0, 10, "a"), task(0, 11, "b")]);
        let all = Hint { runnable: vec![0, 1].into(), changed: RNone };
        assert_eq!(classify(&mut memo, &snap, Some(&all)), [1, 2]);
        // Task 1 renamed, and listed: computed again. Task 0 renamed but not listed (the hint
        // says it did not change): kept by index.
        snap.tasks[0].comm = "a2".into();
        snap.tasks[1].comm = "b2".into();
        let listed = Hint { runnable: vec![0, 1].into(), changed: RSome(vec![1].into()) };
        assert_eq!(classify(&mut memo, &snap, Some(&listed)), [1, 3]);
        // Without a hint, or with one that says any task may have changed, every value is
        // checked against the task's attributes.
        assert_eq!(classify(&mut memo, &snap, None), [4, 3]);
        assert_eq!(classify(&mut memo, &snap, Some(&all)), [4, 3]);
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
