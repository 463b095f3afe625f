//! Test fixture: a policy that panics in `rank` (and in `new` when its config is "panic"), to
//! show the panic comes back to the host as an error instead of aborting it.

use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// Panics on demand.
pub struct Panicky;

impl Policy for Panicky {
    const NAME: &'static str = "testing-panic";

    fn new(config: &str) -> Result<Self, String> {
        if config == "panic" {
            panic!("told to panic in new");
        }
        Ok(Self)
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        panic!("rank always panics ({} tasks)", snapshot.tasks.len());
    }
}

export_policy!(Panicky);
