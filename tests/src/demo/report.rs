//! The demo's results: a summary (JSON, for tests and tools) and a report (Markdown, printed).

use std::fmt::Write as _;

use serde::Serialize;

use super::analysis::{BackgroundShare, PhaseShares, Reaction};

/// The demo's targets.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Targets {
    /// The background task's share, with xsched, while a foreground task is busy: under this, %.
    pub background_busy_max: f64,
    /// Its share, with xsched, while every foreground task sleeps: at least this, %.
    pub background_idle_min: f64,
    /// Reaction: within this many ms (two periods plus one guest tick).
    pub reaction_ms: f64,
}

/// One scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioSummary {
    /// Its short name.
    pub name: String,
    /// What it shows.
    pub title: String,
    /// The task names, foreground first, background last.
    pub tasks: Vec<String>,
    /// The guests, in order.
    pub guests: Vec<String>,
    /// Shares per phase without xsched.
    pub without: Vec<PhaseShares>,
    /// Shares per phase with xsched.
    pub with: Vec<PhaseShares>,
    /// The background task's share without xsched.
    pub background_without: BackgroundShare,
    /// The background task's share with xsched.
    pub background_with: BackgroundShare,
    /// Reactions to the phase changes that start or stop the background task.
    pub reactions: Vec<Reaction>,
    /// How many such changes the scenario has.
    pub expected_reactions: usize,
    /// The timeline picture's file name (in the output folder).
    pub picture: String,
    /// The trace's file name.
    pub trace: String,
    /// Warning, BUG or oops lines the guests printed during the scenario.
    pub console_problems: Vec<String>,
    /// The host CPU all the scenario's VMs got with xsched, as a percentage of what they got
    /// without it, over every phase (target: at least 98 %).
    pub vm_cpu_kept: Option<f64>,
    /// xsched's own host CPU (loop and supervisor), mean over the phases, % of one host CPU.
    pub xsched_cpu: Option<f64>,
}

impl ScenarioSummary {
    /// Whether the with-xsched shares meet the targets.
    pub fn shares_meet(&self, targets: &Targets) -> bool {
        self.background_with.while_foreground_busy < targets.background_busy_max && self.background_with.while_all_idle >= targets.background_idle_min
    }

    /// Whether every expected reaction happened, within the target.
    pub fn reactions_meet(&self, targets: &Targets) -> bool {
        self.reactions.len() == self.expected_reactions && self.reactions.iter().all(|r| r.decision_ms <= targets.reaction_ms)
    }
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The guests' kernel release (`uname -r`).
    pub kernel: String,
    /// Phase length, ms.
    pub phase_ms: u64,
    /// xsched's period, ms.
    pub period_ms: u64,
    /// The guest kernel's tick, ms.
    pub tick_ms: f64,
    /// The targets.
    pub targets: Targets,
    /// Per scenario.
    pub scenarios: Vec<ScenarioSummary>,
}

/// The report, in Markdown.
pub fn markdown(summary: &Summary) -> String {
    let mut out = String::new();
    let t = &summary.targets;
    let _ = writeln!(out, "# xsched demo: the paper's experiment on two lab guests\n");
    let _ = writeln!(
        out,
        "Guest kernel {}. Phases of {:.1} s; xsched period {} ms; guest tick {} ms. Both guests' QEMUs share one host CPU.\n",
        summary.kernel,
        summary.phase_ms as f64 / 1000.0,
        summary.period_ms,
        summary.tick_ms
    );
    for s in &summary.scenarios {
        scenario(&mut out, s, t);
    }
    out
}

fn scenario(out: &mut String, s: &ScenarioSummary, t: &Targets) {
    let _ = writeln!(out, "## {}: {}\n", s.name, s.title);
    let _ = writeln!(out, "CPU share per phase, without → with xsched: each task as its guest accounted it (% of its");
    let _ = writeln!(out, "vCPU, the guest's /proc), each guest's QEMU as the host accounted it (% of a host CPU).");
    let _ = writeln!(out, "The first part of each phase, while things settle, is left out.\n");
    let _ = write!(out, "| phase |");
    for task in &s.tasks {
        let _ = write!(out, " {task} |");
    }
    for guest in &s.guests {
        let _ = write!(out, " host: {guest} |");
    }
    let _ = writeln!(out, "\n|---|{}", "---|".repeat(s.tasks.len() + s.guests.len()));
    for (without, with) in s.without.iter().zip(&s.with) {
        let _ = write!(out, "| {} |", without.label);
        let cell = |a: Option<&f64>, b: Option<&f64>| format!(" {} → {} |", percent(a), percent(b));
        for task in &s.tasks {
            out.push_str(&cell(without.tasks.get(task), with.tasks.get(task)));
        }
        for guest in &s.guests {
            out.push_str(&cell(without.hosts.get(guest), with.hosts.get(guest)));
        }
        out.push('\n');
    }
    if let (Some(kept), Some(own)) = (s.vm_cpu_kept, s.xsched_cpu) {
        let _ = writeln!(out, "\nThe VMs got {kept:.1} % of the host CPU they got without xsched; xsched itself used {own:.2} % of a host CPU.");
    }
    let bg = s.tasks.last().map_or("background", String::as_str);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- {bg} while a higher-priority task is busy: {} without, **{} with xsched** (target < {}%: {})",
        percent(Some(&s.background_without.while_foreground_busy)),
        percent(Some(&s.background_with.while_foreground_busy)),
        t.background_busy_max,
        verdict(s.background_with.while_foreground_busy < t.background_busy_max)
    );
    let _ = writeln!(
        out,
        "- {bg} while all of them sleep: {} without, **{} with xsched** (target ≥ {}%: {})",
        percent(Some(&s.background_without.while_all_idle)),
        percent(Some(&s.background_with.while_all_idle)),
        t.background_idle_min,
        verdict(s.background_with.while_all_idle >= t.background_idle_min)
    );
    let _ = writeln!(
        out,
        "- reaction (last period that saw the old state → the period that parked/unparked {bg}; target ≤ {:.0} ms: {}):",
        t.reaction_ms,
        verdict(s.reactions_meet(t))
    );
    for r in &s.reactions {
        let effect = r.effect_ms.map_or("not seen".to_owned(), |ms| format!("{ms:.1} ms"));
        let periods = if r.periods == 1 { "1 period".to_owned() } else { format!("{} periods", r.periods) };
        let _ = writeln!(out, "  - {}: {:?} after {:.1} ms ({periods}); the guest showed it after {effect}", r.phase, r.action, r.decision_ms);
    }
    if s.reactions.len() < s.expected_reactions {
        let _ = writeln!(out, "  - {} of {} phase changes were not followed", s.expected_reactions - s.reactions.len(), s.expected_reactions);
    }
    let problems = if s.console_problems.is_empty() { "none".to_owned() } else { s.console_problems.join("; ") };
    let _ = writeln!(out, "- guest console warnings: {problems}");
    let _ = writeln!(out, "- timeline: {} (from xsched's trace {})\n", s.picture, s.trace);
}

fn percent(value: Option<&f64>) -> String {
    match value {
        Some(v) if v.is_finite() && *v < 10.0 => format!("{v:.1}%"),
        Some(v) if v.is_finite() => format!("{v:.0}%"),
        _ => "–".to_owned(),
    }
}
