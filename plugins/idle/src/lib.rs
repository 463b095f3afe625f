//! xsched policy `idle`: the named tasks run only when nothing else is runnable.
//!
//! The host admits tasks in rank order while their domain has a free vCPU and the host CPU
//! budget lasts, and parks the rest; unmanaged tasks are never parked but use no budget either.
//! So that idle tasks only get CPUs nobody else wants, this policy ranks *every* runnable task of
//! interest: the foreground ones (by default all user tasks; narrow them with `foreground`) in
//! class 0, the idle ones in class 1. Kernel threads are never ranked. Within a class, `within`
//! orders the tasks (default: least CPU time in the last period first). One consequence: with
//! more runnable foreground tasks than the CPU budget, xsched parks some of them too, in turn.
//! See `idle.toml` beside this crate.

use serde::Deserialize;
use xsched_plugin_api::config::{AnyOf, Within};
use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// The class of foreground tasks.
const FOREGROUND: u32 = 0;
/// The class of idle tasks.
const IDLE: u32 = 1;

/// The policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The tasks that run only when nothing else is runnable.
    idle: AnyOf,
    /// The tasks they yield to; `None`: every runnable user task.
    foreground: Option<AnyOf>,
    /// How tasks of one class are ordered.
    #[serde(default)]
    within: Within,
}

/// The `idle` policy.
#[derive(Debug)]
pub struct Idle {
    /// Its configuration.
    config: Config,
}

impl Policy for Idle {
    const NAME: &'static str = "idle";

    fn new(config: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(config).map_err(|e| format!("idle config: {e}"))?;
        // Claiming the idle set only holds a guest's own tasks back; the foreground outranks.
        match &config.foreground {
            Some(foreground) => foreground.warn_if_unscoped("idle", "foreground"),
            None => eprintln!("xsched: policy idle: warning: no foreground given, so every runnable task of every guest holds the idle tasks back; name the foreground tasks with `domain = …`"),
        }
        Ok(Self { config })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        let c = &self.config;
        let class_of = |t| {
            if c.idle.matches(t, snapshot) {
                Some(IDLE)
            } else if c.foreground.as_ref().is_none_or(|f| f.matches(t, snapshot)) {
                Some(FOREGROUND)
            } else {
                None
            }
        };
        Ok(snapshot
            .tasks
            .iter()
            .filter(|t| t.runnable && !t.kthread)
            .filter_map(|t| class_of(t).map(|class| t.decide(class, c.within.order(t))))
            .collect())
    }
}

export_policy!(Idle);

#[cfg(test)]
mod tests {
    use super::*;
    use xsched_plugin_api::testing::{class_of, ranked_pids, snapshot, task};
    use xsched_plugin_api::TaskView;

    const EXAMPLE: &str = include_str!("../idle.toml");

    fn rank(config: &str, tasks: Vec<TaskView>) -> Vec<Decision> {
        let mut policy = Idle::new(config).expect("config");
        policy.rank(&snapshot(&[("guest1", 1), ("guest2", 1)], tasks)).expect("rank")
    }

    #[test]
    fn idle_tasks_come_after_every_other_runnable_task() {
        let tasks = vec![
            task(0, 30, "bkup"),
            TaskView { runtime_delta_ns: 7, ..task(1, 20, "webd") },
            task(0, 10, "dbd"),
            TaskView { kthread: true, ..task(0, 2, "ksoftirqd/0") },
            TaskView { runnable: false, state: b'S', ..task(1, 21, "cron") },
        ];
        let got = rank(EXAMPLE, tasks);
        assert_eq!(ranked_pids(&got), vec![10, 20, 30]);
        assert_eq!([10, 20, 30].map(|p| class_of(&got, p)), [Some(FOREGROUND), Some(FOREGROUND), Some(IDLE)]);
    }

    #[test]
    fn foreground_narrows_what_idle_tasks_yield_to() {
        let config = "idle = { comm = \"bkup\" }\nforeground = { domain = \"guest1\" }\n";
        let got = rank(config, vec![task(0, 30, "bkup"), task(0, 10, "dbd"), task(1, 20, "webd")]);
        assert_eq!(ranked_pids(&got), vec![10, 30], "guest2's web server is unmanaged");
        // With nothing else runnable, the idle task ranks first.
        assert_eq!(ranked_pids(&rank(EXAMPLE, vec![task(0, 30, "bkup")])), vec![30]);
    }

    #[test]
    fn bad_configs_give_the_line_and_the_problem() {
        let e = Idle::new("").expect_err("refused");
        assert!(e.contains("missing field `idle`"), "{e}");
        let e = Idle::new("idle = { comm = \"b\" }\nforeground = []\n").expect_err("refused");
        assert!(e.contains("line 2") && e.contains("matches nothing"), "{e}");
        let e = Idle::new("\nidle = { command = \"b\" }\n").expect_err("refused");
        assert!(e.contains("line 2") && e.contains("unknown field `command`"), "{e}");
    }
}
