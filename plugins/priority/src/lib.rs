//! xsched policy `priority`: strict classes from ordered rules.
//!
//! Rules are tried in the order written; the first one that matches a runnable task gives its
//! class (lower runs first, so class 0 beats class 1 on every CPU of every domain). Tasks that
//! match no rule are unmanaged — never parked — unless `default_class` gives them a class.
//! Kernel threads are never ranked. Within a class, tasks are ordered by `within` (default:
//! least CPU time in the last period first, so the tasks of a class take turns when there are
//! more of them than CPUs). See `priority.toml` beside this crate.
//!
//! A task's class is worked out by the rules once, and again only when its `comm`, uid or
//! cgroup changes ([`TaskMemo`]): a period costs a look-up per runnable task.

use serde::Deserialize;
use xsched_plugin_api::config::{AnyOf, Within};
use xsched_plugin_api::memo::HintedMemo;
use xsched_plugin_api::{export_policy, Decision, Hint, Policy, Snapshot, TaskView};

/// The policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How tasks of one class are ordered.
    #[serde(default)]
    within: Within,
    /// The class of runnable tasks that match no rule; `None`: they are unmanaged.
    default_class: Option<u32>,
    /// The rules, in order.
    #[serde(rename = "rule")]
    rules: Vec<Rule>,
}

/// One rule: the tasks it matches get its class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// A name for the rule (in warnings).
    #[serde(default)]
    name: Option<String>,
    /// The class: lower is more important.
    class: u32,
    /// Which tasks.
    #[serde(rename = "match")]
    matches: AnyOf,
}

impl Config {
    fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| format!("priority config: {e}"))?;
        if config.rules.is_empty() {
            return Err("priority config: no [[rule]]: every task would be unmanaged".into());
        }
        for (i, rule) in config.rules.iter().enumerate() {
            let what = match &rule.name {
                Some(name) => format!("rule {} ({name})", i + 1),
                None => format!("rule {}", i + 1),
            };
            rule.matches.warn_if_unscoped("priority", &what);
        }
        Ok(config)
    }

    /// The class of `task` of `snapshot`: the first matching rule's, else the default.
    fn class_of(&self, task: &TaskView, snapshot: &Snapshot) -> Option<u32> {
        self.rules.iter().find(|r| r.matches.matches(task, snapshot)).map(|r| r.class).or(self.default_class)
    }
}

/// The `priority` policy.
#[derive(Debug)]
pub struct Priority {
    /// Its configuration.
    config: Config,
    /// Each ranked task's class (`None`: unmanaged).
    classes: HintedMemo<Option<u32>>,
}

impl Priority {
    /// The decisions about the runnable user tasks among `tasks` (index in `snapshot`, view),
    /// the snapshot handed with `hint`.
    fn decide<'a>(&mut self, snapshot: &Snapshot, hint: Option<&Hint>, tasks: impl Iterator<Item = (usize, &'a TaskView)>) -> Vec<Decision> {
        let Self { config, classes } = self;
        classes.begin(snapshot, hint);
        let decisions = tasks
            .filter(|(_, t)| t.runnable && !t.kthread)
            .filter_map(|(i, t)| classes.get(i, t, |t| config.class_of(t, snapshot)).map(|class| t.decide(class, config.within.order(t))))
            .collect();
        classes.finish(snapshot, hint);
        decisions
    }
}

impl Policy for Priority {
    const NAME: &'static str = "priority";

    fn new(config: &str) -> Result<Self, String> {
        Config::parse(config).map(|config| Self { config, classes: HintedMemo::new() })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        Ok(self.decide(snapshot, None, snapshot.tasks.iter().enumerate()))
    }

    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> Result<Vec<Decision>, String> {
        let runnable = hint.runnable.iter().filter_map(|&i| usize::try_from(i).ok()).filter_map(|i| snapshot.tasks.get(i).map(|t| (i, t)));
        Ok(self.decide(snapshot, Some(hint), runnable))
    }
}

export_policy!(Priority);

#[cfg(test)]
mod tests {
    use super::*;
    use xsched_plugin_api::testing::{class_of, ranked_pids, snapshot, task};
    use xsched_plugin_api::TaskView;

    const EXAMPLE: &str = include_str!("../priority.toml");

    fn rank(config: &str, tasks: Vec<TaskView>) -> Vec<Decision> {
        let mut policy = Priority::new(config).expect("config");
        policy.rank(&snapshot(&[("guest1", 1), ("guest2", 1)], tasks)).expect("rank")
    }

    #[test]
    fn the_example_ranks_db_over_web_over_bkup() {
        let tasks = vec![
            TaskView { runtime_delta_ns: 5, ..task(0, 30, "bkup") },
            task(1, 20, "webd"),
            TaskView { runtime_delta_ns: 9, ..task(0, 10, "dbd") },
            task(0, 11, "dbd"),
            task(0, 40, "sshd"),
            TaskView { kthread: true, ..task(0, 2, "kworker/0:1") },
            TaskView { runnable: false, state: b'S', ..task(1, 21, "webd") },
        ];
        let got = rank(EXAMPLE, tasks);
        // Both DB threads first (the one that ran less last period ahead), then web, then bkup;
        // sshd, the kernel thread and the sleeping web task are not ranked.
        assert_eq!(ranked_pids(&got), vec![11, 10, 20, 30]);
        assert_eq!([10, 20, 30].map(|p| class_of(&got, p)), [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn the_first_matching_rule_wins_and_default_class_catches_the_rest() {
        let config = r#"
            default_class = 9
            within = "pid"
            [[rule]]
            class = 3
            match = { uid = 1000 }
            [[rule]]
            class = 1
            match = [{ tgid = 50 }, { cgroup = "/batch/*" }]
        "#;
        let tasks = vec![
            TaskView { uid: Some(1000).into(), tgid: 50, ..task(0, 51, "a") },
            TaskView { tgid: 50, ..task(0, 52, "b") },
            TaskView { cgroup: Some("/batch/x".into()).into(), ..task(1, 60, "c") },
            task(1, 70, "d"),
        ];
        let got = rank(config, tasks);
        assert_eq!([51, 52, 60, 70].map(|p| class_of(&got, p)), [Some(3), Some(1), Some(1), Some(9)]);
        assert_eq!(ranked_pids(&got), vec![52, 60, 51, 70]);
    }

    #[test]
    fn the_hinted_rank_decides_as_the_full_one() {
        let tasks = vec![
            TaskView { runtime_delta_ns: 5, ..task(0, 30, "bkup") },
            TaskView { runnable: false, state: b'S', ..task(1, 21, "webd") },
            task(1, 20, "webd"),
            TaskView { kthread: true, ..task(0, 2, "kworker/0:1") },
            task(0, 10, "dbd"),
        ];
        let snap = snapshot(&[("guest1", 1), ("guest2", 1)], tasks);
        let runnable = snap.tasks.iter().enumerate().filter(|(_, t)| t.runnable).filter_map(|(i, _)| u32::try_from(i).ok()).collect::<Vec<_>>();
        let mut policy = Priority::new(EXAMPLE).expect("config");
        let full = policy.rank(&snap).expect("rank");
        for changed in [abi_stable::std_types::RNone, abi_stable::std_types::RSome(vec![2u32].into())] {
            let hint = Hint { runnable: runnable.clone().into(), changed };
            assert_eq!(policy.rank_hinted(&snap, &hint).expect("rank"), full);
        }
        assert_eq!(ranked_pids(&full), vec![10, 20, 30]);
    }

    #[test]
    fn classes_follow_renames_and_gone_tasks_are_forgotten() {
        let mut policy = Priority::new(EXAMPLE).expect("config");
        let snap = |tasks| snapshot(&[("guest1", 1), ("guest2", 1)], tasks);
        let got = policy.rank(&snap(vec![task(0, 10, "dbd"), task(0, 30, "bkup")])).expect("rank");
        assert_eq!([10, 30].map(|p| class_of(&got, p)), [Some(0), Some(2)]);
        // pid 10 execs into a backup, pid 30 exits: the class follows the new name, and the
        // exited task's class is dropped.
        let got = policy.rank(&snap(vec![task(0, 10, "bkup-run")])).expect("rank");
        assert_eq!(class_of(&got, 10), Some(2));
        assert_eq!(policy.classes.len(), 1);
        // A new task with a reused pid (another start time) is classified afresh.
        let reused = TaskView { start_time: 5_000, ..task(0, 10, "dbd") };
        let got = policy.rank(&snap(vec![reused])).expect("rank");
        assert_eq!(class_of(&got, 10), Some(0));
    }

    #[test]
    fn bad_configs_give_the_line_and_the_problem() {
        let err = |text: &str| Priority::new(text).expect_err("refused");
        let e = err("[[rule]]\nclass = 0\nmatch = { comm = \"a\" }\n\n[[rule]]\nclass = -1\nmatch = {}\n");
        assert!(e.contains("line 6") && e.contains("invalid value"), "{e}");
        let e = err("[[rule]]\nclass = 0\nmatch = { comm = \"a*b\" }\n");
        assert!(e.contains("line 3") && e.contains("`*` may only end a pattern"), "{e}");
        let e = err("within = \"fastest\"\n[[rule]]\nclass = 0\nmatch = {}\n");
        assert!(e.contains("line 1") && e.contains("unknown variant `fastest`"), "{e}");
        let e = err("[[rule]]\nclas = 0\n");
        assert!(e.contains("line 2") && e.contains("unknown field `clas`"), "{e}");
        let e = err("");
        assert!(e.contains("missing field `rule`"), "{e}");
    }
}
