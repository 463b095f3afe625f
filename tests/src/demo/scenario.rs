//! The demo's two scenarios: which tasks run in which guest, what the policy is, and the
//! script of busy and idle phases the foreground tasks follow.

use std::time::Duration;

/// One task of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioTask {
    /// The guest it runs in.
    pub guest: &'static str,
    /// Its name (comm).
    pub comm: &'static str,
}

impl ScenarioTask {
    fn new(guest: &'static str, comm: &'static str) -> Self {
        Self { guest, comm }
    }
}

/// One phase: a label and the foreground tasks that are busy in it (the others sleep).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// What is going on, e.g. `db+web busy`.
    pub label: String,
    /// The busy foreground tasks.
    pub busy: Vec<&'static str>,
}

impl Phase {
    fn new(busy: &[&'static str]) -> Self {
        let label = if busy.is_empty() { "all idle".to_owned() } else { format!("{} busy", busy.join("+")) };
        Self { label, busy: busy.to_vec() }
    }
}

/// A scenario: tasks, policy, phases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Short name, used for file names (`priority`, `idle`).
    pub name: &'static str,
    /// One line saying what it shows.
    pub title: &'static str,
    /// The policy plugin's file name.
    pub plugin: &'static str,
    /// The policy's configuration (TOML).
    pub config: &'static str,
    /// The foreground tasks, which follow the phases.
    pub foreground: Vec<ScenarioTask>,
    /// The background task, ranked last, which always wants a CPU.
    pub background: ScenarioTask,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// How long each phase lasts.
    pub phase_length: Duration,
    /// The host CPU budget given to xsched (`--cpus`), and the host CPUs the guests share.
    pub host_cpus: u32,
}

impl Scenario {
    /// The paper's motivating case: db (guest u1) > web (guest u2) > bkup (guest u1) on one host
    /// CPU, with `priority`, while db and web go busy and idle.
    pub fn priority(phase_length: Duration) -> Self {
        Self {
            name: "priority",
            title: "db (u1) > web (u2) > bkup (u1) on one host CPU, policy priority",
            plugin: "libpriority.so",
            config: concat!(
                "[[rule]]\nclass = 0\nmatch = { domain = \"u1\", comm = \"db\" }\n",
                "[[rule]]\nclass = 1\nmatch = { domain = \"u2\", comm = \"web\" }\n",
                "[[rule]]\nclass = 2\nmatch = { domain = \"u1\", comm = \"bkup\" }\n",
            ),
            foreground: vec![ScenarioTask::new("u1", "db"), ScenarioTask::new("u2", "web")],
            background: ScenarioTask::new("u1", "bkup"),
            phases: vec![Phase::new(&["db", "web"]), Phase::new(&["web"]), Phase::new(&[]), Phase::new(&["db"])],
            phase_length,
            host_cpus: 1,
        }
    }

    /// The paper's experiment (its section 3): the lowest-priority process of guest u1 runs only
    /// when processes 1 and 2 (u1) and process 3 (u2) are all stopped, with `idle`.
    pub fn idle(phase_length: Duration) -> Self {
        Self {
            name: "idle",
            title: "lowest (u1) runs only when p1, p2 (u1) and p3 (u2) all sleep, policy idle",
            plugin: "libidle.so",
            config: concat!(
                "idle = { domain = \"u1\", comm = \"lowest\" }\n",
                "foreground = [{ domain = \"u1\", comm = \"p1\" }, { domain = \"u1\", comm = \"p2\" }, ",
                "{ domain = \"u2\", comm = \"p3\" }]\n",
            ),
            foreground: vec![ScenarioTask::new("u1", "p1"), ScenarioTask::new("u1", "p2"), ScenarioTask::new("u2", "p3")],
            background: ScenarioTask::new("u1", "lowest"),
            phases: vec![
                Phase::new(&["p1"]),
                Phase::new(&["p2", "p3"]),
                Phase::new(&[]),
                Phase::new(&["p3"]),
                Phase::new(&[]),
            ],
            phase_length,
            host_cpus: 1,
        }
    }

    /// Every task: the foreground ones, then the background one.
    pub fn tasks(&self) -> impl Iterator<Item = &ScenarioTask> {
        self.foreground.iter().chain([&self.background])
    }

    /// The guests the scenario uses, in order of first mention.
    pub fn guests(&self) -> Vec<&'static str> {
        let mut guests: Vec<&'static str> = Vec::new();
        for t in self.tasks() {
            if !guests.contains(&t.guest) {
                guests.push(t.guest);
            }
        }
        guests
    }

    /// Whether the background task should run in phase `phase`: when no foreground task is busy.
    pub fn background_runs_in(&self, phase: &Phase) -> bool {
        phase.busy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_consistent() {
        for s in [Scenario::priority(Duration::from_secs(1)), Scenario::idle(Duration::from_secs(1))] {
            let foreground: Vec<&str> = s.foreground.iter().map(|t| t.comm).collect();
            for phase in &s.phases {
                assert!(phase.busy.iter().all(|b| foreground.contains(b)), "{}: {phase:?}", s.name);
            }
            assert!(s.phases.iter().any(|p| s.background_runs_in(p)) && s.phases.iter().any(|p| !s.background_runs_in(p)));
            assert_eq!(s.guests(), ["u1", "u2"]);
        }
    }
}
