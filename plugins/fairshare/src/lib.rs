//! xsched policy `fairshare`: CPU shared by weight between groups, machine-wide.
//!
//! Every task belongs to at most one group: the first `[[group]]` whose `match` it matches, or
//! else the implicit group of its uid, cgroup or domain (`group_by`; `"none"`: no implicit
//! groups). A task in no group (kernel threads, or an unknown uid or cgroup) is unmanaged.
//!
//! Each group's CPU use is the sum of its tasks' `runtime_delta_ns`, in whichever domain they
//! run, kept as an exponentially decayed total whose half-life is `half_life_ms` (the window).
//! Every runnable task is ranked in class 0, ordered by how far its group would be above its
//! share if the task ran: the k-th task of a group (k = 0, 1, …, its tasks in `within` order)
//! gets `(usage + k × period) / weight`. So the group furthest below its share goes first, and
//! with several CPUs the groups interleave by weight. See `fairshare.toml` beside this crate.
//!
//! A task's group is worked out once, and again only when its `comm`, uid or cgroup changes
//! ([`TaskMemo`]); a period looks at the groups of the tasks that ran or want to run only.

use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use xsched_plugin_api::config::{AnyOf, Within};
use xsched_plugin_api::memo::TaskMemo;
use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot, TaskView};

/// What forms the implicit groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GroupBy {
    /// One group per uid.
    #[default]
    Uid,
    /// One group per cgroup path.
    Cgroup,
    /// One group per domain.
    Domain,
    /// Only the explicit groups.
    None,
}

/// The policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What forms the implicit groups.
    #[serde(default)]
    group_by: GroupBy,
    /// The weight of each implicit group.
    #[serde(default = "one")]
    default_weight: NonZeroU32,
    /// The half-life of the usage history, milliseconds.
    #[serde(default = "default_half_life")]
    half_life_ms: NonZeroU64,
    /// How the tasks of one group are ordered.
    #[serde(default)]
    within: Within,
    /// The explicit groups, tried in order.
    #[serde(default, rename = "group")]
    groups: Vec<Group>,
}

fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_half_life() -> NonZeroU64 {
    NonZeroU64::new(1_000).unwrap_or(NonZeroU64::MIN)
}

/// An explicit group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    /// Its name (unique).
    name: Spanned<String>,
    /// Its weight: its share is weight / the sum of the weights of the groups that want CPU.
    weight: NonZeroU32,
    /// Its members.
    #[serde(rename = "match")]
    matches: AnyOf,
}

impl Config {
    fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| format!("fairshare config: {e}"))?;
        let mut seen = HashSet::new();
        for g in &config.groups {
            if !seen.insert(g.name.get_ref()) {
                let line = text.get(..g.name.span().start).map_or(0, |t| t.lines().count());
                return Err(format!("fairshare config: line {line}: group `{}` is defined twice", g.name.get_ref()));
            }
        }
        if config.group_by == GroupBy::None && config.groups.is_empty() {
            return Err("fairshare config: group_by = \"none\" and no [[group]]: every task would be unmanaged".into());
        }
        for g in &config.groups {
            g.matches.warn_if_unscoped("fairshare", &format!("group {}", g.name.get_ref()));
        }
        Ok(config)
    }

    /// The key and weight of `task`'s group, if it has one.
    fn group_of(&self, task: &TaskView, snapshot: &Snapshot) -> Option<(Arc<str>, u32)> {
        if task.kthread {
            return None;
        }
        if let Some(g) = self.groups.iter().find(|g| g.matches.matches(task, snapshot)) {
            return Some((format!("group {}", g.name.get_ref()).into(), g.weight.get()));
        }
        let key = match self.group_by {
            GroupBy::Uid => format!("uid {}", task.uid()?),
            GroupBy::Cgroup => format!("cgroup {}", task.cgroup()?),
            GroupBy::Domain => format!("domain {}", snapshot.domain_name(task.domain)),
            GroupBy::None => return None,
        };
        Some((key.into(), self.default_weight.get()))
    }
}

/// The `fairshare` policy.
#[derive(Debug)]
pub struct FairShare {
    /// Its configuration.
    config: Config,
    /// Each group's decayed CPU use, nanoseconds.
    usage: HashMap<Arc<str>, f64>,
    /// The time of the previous snapshot.
    last_ns: Option<u64>,
    /// The group (key and weight) of each task that ran or wanted to run.
    groups: TaskMemo<Option<(Arc<str>, u32)>>,
}

/// A group's runnable tasks this period, with their places in the snapshot.
type Members<'a> = HashMap<Arc<str>, (u32, Vec<(usize, &'a TaskView)>)>;

impl FairShare {
    /// Ages the usage history to the snapshot's time, adds this period's CPU time, and returns
    /// the runnable members of each group. Only tasks that ran or want to run are looked at:
    /// the others add nothing.
    fn account<'a>(&mut self, snapshot: &'a Snapshot) -> Members<'a> {
        let elapsed = self.last_ns.map_or(0, |last| snapshot.time_ns.saturating_sub(last));
        self.last_ns = Some(snapshot.time_ns);
        // Precision loss only past 2^53 ns (104 days) in one step: harmless for a decay factor.
        #[allow(clippy::cast_precision_loss)]
        let decay = (-(elapsed as f64) / (self.config.half_life_ms.get() as f64 * 1e6)).exp2();
        self.usage.values_mut().for_each(|u| *u *= decay);
        let Self { config, usage, groups, .. } = self;
        let mut members = Members::new();
        for (i, task) in snapshot.tasks.iter().enumerate().filter(|(_, t)| t.runnable || t.runtime_delta_ns > 0) {
            let Some((key, weight)) = groups.get(i, task, |t| config.group_of(t, snapshot)) else { continue };
            #[allow(clippy::cast_precision_loss)]
            let used = task.runtime_delta_ns as f64;
            match usage.get_mut(key) {
                Some(u) => *u += used,
                None => {
                    usage.insert(Arc::clone(key), used);
                }
            }
            if task.runnable {
                members.entry(Arc::clone(key)).or_insert_with(|| (*weight, Vec::new())).1.push((i, task));
            }
        }
        groups.finish(snapshot);
        usage.retain(|k, u| *u >= 1.0 || members.contains_key(k));
        members
    }
}

impl Policy for FairShare {
    const NAME: &'static str = "fairshare";

    fn new(config: &str) -> Result<Self, String> {
        Ok(Self { config: Config::parse(config)?, usage: HashMap::new(), last_ns: None, groups: TaskMemo::new() })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        let members = self.account(snapshot);
        let within = self.config.within;
        #[allow(clippy::cast_precision_loss)]
        let period = snapshot.period_ns as f64;
        let mut decisions = Vec::new();
        for (key, (weight, mut tasks)) in members {
            tasks.sort_by_key(|(_, t)| (within.order(t), t.domain, t.pid));
            let usage = self.usage.get(&key).copied().unwrap_or(0.0);
            for (k, (i, task)) in (0u32..).zip(tasks) {
                let projected = (usage + f64::from(k) * period) / f64::from(weight);
                // Float-to-int `as` saturates: an absurd usage just ranks last.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                decisions.push((i, task.decide(0, projected as u64)));
            }
        }
        // In snapshot order: the host matches decisions to its table fastest in its own order.
        decisions.sort_unstable_by_key(|(i, _)| *i);
        Ok(decisions.into_iter().map(|(_, d)| d).collect())
    }

    /// Takes the new groups and weights, keeping the usage history of groups that stay.
    fn reload(&mut self, config: &str) -> Result<(), String> {
        self.config = Config::parse(config)?;
        // The groups follow the new rules.
        self.groups.clear();
        Ok(())
    }
}

export_policy!(FairShare);

#[cfg(test)]
mod tests {
    use super::*;
    use xsched_plugin_api::testing::{ranked_pids, snapshot, task};

    const EXAMPLE: &str = include_str!("../fairshare.toml");

    /// Runs `periods` periods of a toy host with a budget of `cpus` (vCPUs unlimited): the first
    /// `cpus` ranked tasks run for the whole period. Returns each task's CPU time.
    fn simulate(policy: &mut FairShare, mut tasks: Vec<TaskView>, cpus: usize, periods: u64) -> HashMap<i32, u64> {
        let mut snap = snapshot(&[("guest1", 8), ("guest2", 8)], Vec::new());
        for n in 0..periods {
            snap.time_ns = n * snap.period_ns;
            snap.tasks = tasks.clone().into();
            let ranked = ranked_pids(&policy.rank(&snap).expect("rank"));
            for t in &mut tasks {
                t.runtime_delta_ns = if ranked.iter().take(cpus).any(|&p| p == t.pid) { snap.period_ns } else { 0 };
                t.runtime_ns += t.runtime_delta_ns;
            }
        }
        tasks.iter().map(|t| (t.pid, t.runtime_ns)).collect()
    }

    #[test]
    fn cpu_follows_the_weights_across_domains() {
        // The example: "batch" (weight 1) and "interactive" (weight 2), each with a task in
        // both guests and more tasks than CPUs.
        for cpus in [1, 2, 3] {
            let mut policy = FairShare::new(EXAMPLE).expect("config");
            let tasks = vec![
                task(0, 10, "hogA"),
                task(1, 11, "hogA"),
                task(0, 20, "hogB"),
                task(1, 21, "hogB"),
                task(1, 22, "hogB"),
            ];
            let cpu = simulate(&mut policy, tasks, cpus, 3_000);
            let (a, b) = (cpu[&10] + cpu[&11], cpu[&20] + cpu[&21] + cpu[&22]);
            #[allow(clippy::cast_precision_loss)]
            let ratio = b as f64 / a as f64;
            assert!((ratio - 2.0).abs() < 0.1, "{cpus} CPUs: interactive/batch = {ratio}");
        }
    }

    #[test]
    fn implicit_groups_by_uid_and_decay() {
        let mut policy = FairShare::new("group_by = \"uid\"\nhalf_life_ms = 100\n").expect("config");
        let alice = |pid, delta| TaskView { uid: Some(1000).into(), runtime_delta_ns: delta, ..task(0, pid, "a") };
        let bob = TaskView { uid: Some(1001).into(), ..task(1, 30, "b") };
        let nobody = TaskView { uid: None.into(), ..task(1, 40, "c") };
        let mut snap = snapshot(&[("guest1", 1), ("guest2", 1)], vec![alice(10, 50_000_000), alice(11, 0), bob.clone(), nobody]);
        let got = policy.rank(&snap).expect("rank");
        // Alice used CPU, so Bob goes first; the task with no uid is unmanaged.
        assert_eq!(ranked_pids(&got), vec![30, 11, 10]);
        // Ten half-lives later Alice's use is forgotten: her idle task ties with Bob's on order.
        snap.time_ns = 1_000_000_000;
        snap.tasks = vec![alice(10, 0), alice(11, 0), bob].into();
        let got = policy.rank(&snap).expect("rank");
        assert_eq!(got.iter().filter(|d| d.order < 100_000).count(), 2, "{got:?}");
    }

    #[test]
    fn reload_keeps_the_history() {
        let mut policy = FairShare::new(EXAMPLE).expect("config");
        let snap = snapshot(&[("guest1", 1)], vec![TaskView { runtime_delta_ns: 1_000, ..task(0, 10, "hogA") }]);
        policy.rank(&snap).expect("rank");
        policy.reload(&EXAMPLE.replace("weight = 2", "weight = 4")).expect("reload");
        assert!(policy.usage.get("group batch").is_some_and(|&u| u >= 1_000.0));
        assert!(policy.reload("[[group]]\n").is_err());
        assert_eq!(policy.config.groups[1].weight.get(), 4, "a failed reload keeps the old config");
    }

    #[test]
    fn bad_configs_give_the_line_and_the_problem() {
        let err = |text: &str| FairShare::new(text).expect_err("refused");
        let e = err("[[group]]\nname = \"a\"\nweight = 0\nmatch = {}\n");
        assert!(e.contains("line 3") && e.contains("nonzero"), "{e}");
        let e = err("[[group]]\nname = \"a\"\nweight = 1\nmatch = {}\n\n[[group]]\nname = \"a\"\nweight = 1\nmatch = {}\n");
        assert!(e.contains("line 7: group `a` is defined twice"), "{e}");
        let e = err("group_by = \"user\"\n");
        assert!(e.contains("line 1") && e.contains("unknown variant `user`"), "{e}");
        let e = err("group_by = \"none\"\n");
        assert!(e.contains("every task would be unmanaged"), "{e}");
    }
}
