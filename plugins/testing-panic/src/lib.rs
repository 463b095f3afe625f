//! Test fixture: a policy that panics, to show the panic comes back to the host as an error
//! instead of aborting it, and that the host then releases what it parked.
//!
//! Config `""`: `rank` panics at once. `"panic"`: `new` panics. `"after=N"`: the first N calls of
//! `rank` rank every runnable user task in one class (by pid), so the host parks some; call N+1
//! panics.

use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// Panics on demand.
pub struct Panicky {
    /// Calls of `rank` left before it panics.
    calls_left: u32,
}

impl Policy for Panicky {
    const NAME: &'static str = "testing-panic";

    fn new(config: &str) -> Result<Self, String> {
        if config == "panic" {
            panic!("told to panic in new");
        }
        let calls_left = match config.trim().strip_prefix("after=") {
            Some(n) => n.parse().map_err(|e| format!("line 1: after={n}: {e}"))?,
            None => 0,
        };
        Ok(Self { calls_left })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        if self.calls_left == 0 {
            panic!("rank panics as configured ({} tasks)", snapshot.tasks.len());
        }
        self.calls_left -= 1;
        Ok(snapshot
            .tasks
            .iter()
            .filter(|t| t.runnable && !t.kthread)
            .map(|t| t.decide(0, u64::try_from(t.pid).unwrap_or(u64::MAX)))
            .collect())
    }
}

export_policy!(Panicky);
