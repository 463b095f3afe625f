//! Test fixture: a policy that panics, to show the panic comes back to the host as an error
//! instead of aborting it, and that the host then releases what it parked.
//!
//! Config `""`: `rank` panics at once. `"panic"`: `new` panics. `"after=N PREFIX"`: the first N
//! calls of `rank` rank every runnable user task whose comm starts with PREFIX in one class (by
//! pid), so the host parks some; call N+1 panics.

use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// Panics on demand.
pub struct Panicky {
    /// Calls of `rank` left before it panics.
    calls_left: u32,
    /// Only tasks whose comm starts with this are ranked.
    prefix: String,
}

impl Policy for Panicky {
    const NAME: &'static str = "testing-panic";

    fn new(config: &str) -> Result<Self, String> {
        if config == "panic" {
            panic!("told to panic in new");
        }
        let mut words = config.split_whitespace();
        let calls_left = match words.next().and_then(|w| w.strip_prefix("after=")) {
            Some(n) => n.parse().map_err(|e| format!("line 1: after={n}: {e}"))?,
            None => 0,
        };
        Ok(Self { calls_left, prefix: words.next().unwrap_or_default().to_string() })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        if self.calls_left == 0 {
            panic!("rank panics as configured ({} tasks)", snapshot.tasks.len());
        }
        self.calls_left -= 1;
        Ok(snapshot
            .tasks
            .iter()
            .filter(|t| t.runnable && !t.kthread && t.comm().starts_with(&self.prefix))
            .map(|t| t.decide(0, u64::try_from(t.pid).unwrap_or(u64::MAX)))
            .collect())
    }
}

export_policy!(Panicky);
