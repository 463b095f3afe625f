//! What the loop asks of a policy: a [`Ranker`] ranks the task table into [`Ranked`] task keys.

use std::collections::HashSet;
use std::time::Duration;

use crate::table::{TaskKey, TaskTable};

use super::PolicyError;

/// One task's place in the policy's global ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// The task.
    pub key: TaskKey,
    /// Its class: lower is more important.
    pub class: u32,
    /// Its order within the class: lower goes first.
    pub order: u64,
}

/// What ranks tasks each period: a policy plugin, seen from the loop.
pub trait Ranker {
    /// Ranks the tasks of `table`; `parked` are the ones xsched holds parked.
    fn rank(&mut self, table: &TaskTable, parked: &HashSet<TaskKey>, period: Duration, host_cpus: u32) -> Result<Vec<Ranked>, PolicyError>;

    /// Re-reads the policy's configuration (on SIGHUP).
    fn reload(&mut self) -> Result<(), PolicyError>;
}
