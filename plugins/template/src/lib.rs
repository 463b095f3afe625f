//! xsched policy template: every runnable task takes turns on the CPUs, least CPU time in the
//! last period first; tasks matching `ignore` are left alone (unmanaged). See `template.toml`.
//!
//! A policy is a plain Rust type implementing [`Policy`], exported with [`export_policy!`]: no
//! `unsafe`, no `extern`. A panic in `new`, `rank` or `reload` comes back to the host as an
//! error.

use serde::Deserialize;
use xsched_plugin_api::config::AnyOf;
use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// The policy file, validated by serde: `toml` errors give the line and the problem.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tasks to leave alone.
    ignore: Option<AnyOf>,
}

/// The policy's state: its configuration (and whatever it remembers between periods).
#[derive(Debug)]
pub struct TakeTurns {
    config: Config,
}

impl Policy for TakeTurns {
    const NAME: &'static str = "template";

    fn new(config: &str) -> Result<Self, String> {
        let config = toml::from_str(config).map_err(|e| format!("template config: {e}"))?;
        Ok(Self { config })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        let ignored = |t| self.config.ignore.as_ref().is_some_and(|m| m.matches(t, snapshot));
        Ok(snapshot
            .tasks
            .iter()
            .filter(|t| t.runnable && !t.kthread && !ignored(t))
            .map(|t| t.decide(0, t.runtime_delta_ns))
            .collect())
    }
}

export_policy!(TakeTurns);

#[cfg(test)]
mod tests {
    use super::*;
    use xsched_plugin_api::testing::{ranked_pids, snapshot, task};
    use xsched_plugin_api::TaskView;

    #[test]
    fn tasks_take_turns_and_ignored_ones_are_left_alone() {
        let mut policy = TakeTurns::new(include_str!("../template.toml")).expect("config");
        let tasks = vec![TaskView { runtime_delta_ns: 9, ..task(0, 10, "a") }, task(1, 20, "b"), task(0, 30, "sshd")];
        let got = policy.rank(&snapshot(&[("guest1", 1), ("guest2", 1)], tasks)).expect("rank");
        assert_eq!(ranked_pids(&got), vec![20, 10]);
    }

    #[test]
    fn a_bad_config_gives_the_line() {
        let e = TakeTurns::new("\nignore = { name = \"x\" }").expect_err("refused");
        assert!(e.contains("line 2") && e.contains("unknown field `name`"), "{e}");
    }
}
