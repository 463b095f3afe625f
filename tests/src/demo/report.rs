//! The demo's results: a summary (JSON, for tests and tools) and a report (Markdown, printed).

use std::collections::BTreeMap;
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

/// One variant's results in one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct VariantSummary {
    /// Its short name (`without`, `weights-u1-nice19`, ..., `xsched`).
    pub name: String,
    /// What it is, short.
    pub label: String,
    /// Each guest's host CPU weight during the run, as the weight file held it (`cpu.weight`
    /// on cgroup v2, `cpu.shares` on v1); empty where the QEMUs stayed in their own cgroups.
    pub host_weights: BTreeMap<String, u64>,
    /// The background task's nice level and policy in its guest (`nice 0`, `nice 19`,
    /// `SCHED_IDLE`).
    pub background_setting: String,
    /// Shares per phase.
    pub phases: Vec<PhaseShares>,
    /// The background task's share.
    pub background: BackgroundShare,
    /// Whether the background task's share met both targets.
    pub meets_targets: bool,
    /// The timeline picture's file name (in the output folder).
    pub picture: String,
    /// The trace's file name: xsched's own, or the observer's.
    pub trace: String,
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
    /// The file the host weights are written to (`cpu.weight` or `cpu.shares`).
    pub weight_file: String,
    /// Every variant, in the order played: without, the baselines, with xsched.
    pub variants: Vec<VariantSummary>,
    /// The names of the variants that met the targets.
    pub met_by: Vec<String>,
    /// Reactions to the phase changes that start or stop the background task (with xsched).
    pub reactions: Vec<Reaction>,
    /// How many such changes the scenario has.
    pub expected_reactions: usize,
    /// Warning, BUG or oops lines the guests printed during the scenario.
    pub console_problems: Vec<String>,
    /// The host CPU all the scenario's VMs got with xsched, as a percentage of what they got
    /// without it, over every phase (target: at least 98 %).
    pub vm_cpu_kept: Option<f64>,
    /// xsched's own host CPU (loop and supervisor), mean over the phases, % of one host CPU.
    pub xsched_cpu: Option<f64>,
}

impl ScenarioSummary {
    /// The variant called `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantSummary> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// Whether every expected reaction happened, within the target.
    pub fn reactions_meet(&self, targets: &Targets) -> bool {
        self.reactions.len() == self.expected_reactions && self.reactions.iter().all(|r| r.decision_ms <= targets.reaction_ms)
    }
}

/// Whether a background share meets the targets.
pub fn shares_meet(background: &BackgroundShare, targets: &Targets) -> bool {
    background.while_foreground_busy < targets.background_busy_max && background.while_all_idle >= targets.background_idle_min
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
    let _ = writeln!(out, "CPU share per phase and variant: each task as its guest accounted it (% of its vCPU, the");
    let _ = writeln!(out, "guest's /proc), each guest's QEMU as the host accounted it (% of a host CPU). The first part");
    let _ = writeln!(out, "of each phase, while things settle, is left out. `u1:u2 2:1` is the operator's way without");
    let _ = writeln!(out, "xsched: u1's QEMU in a host cgroup of twice u2's CPU weight ({}), and in its guest the", s.weight_file);
    let _ = writeln!(out, "background task at nice 19 or SCHED_IDLE.\n");
    let _ = write!(out, "| phase | variant |");
    for task in &s.tasks {
        let _ = write!(out, " {task} |");
    }
    for guest in &s.guests {
        let _ = write!(out, " host: {guest} |");
    }
    let _ = writeln!(out, "\n|---|---|{}", "---|".repeat(s.tasks.len() + s.guests.len()));
    let phases = s.variants.first().map_or(0, |v| v.phases.len());
    for i in 0..phases {
        for (n, v) in s.variants.iter().enumerate() {
            let Some(p) = v.phases.get(i) else { continue };
            let _ = write!(out, "| {} | {} |", if n == 0 { p.label.as_str() } else { "" }, v.label);
            for task in &s.tasks {
                let _ = write!(out, " {} |", percent(p.tasks.get(task)));
            }
            for guest in &s.guests {
                let _ = write!(out, " {} |", percent(p.hosts.get(guest)));
            }
            out.push('\n');
        }
    }
    if let (Some(kept), Some(own)) = (s.vm_cpu_kept, s.xsched_cpu) {
        let _ = writeln!(out, "\nThe VMs got {kept:.1} % of the host CPU they got without xsched; xsched itself used {own:.2} % of a host CPU.");
    }
    let bg = s.tasks.last().map_or("background", String::as_str);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(out, "\n| variant | {bg} while a higher-priority task is busy (target < {}%) | {bg} while all of them sleep (target ≥ {}%) | targets |", t.background_busy_max, t.background_idle_min);
    let _ = writeln!(out, "|---|---|---|---|");
    for v in &s.variants {
        let (busy, idle) = (v.background.while_foreground_busy, v.background.while_all_idle);
        let _ = writeln!(out, "| {} | {} | {} | {} |", v.label, percent(Some(&busy)), percent(Some(&idle)), verdict(v.meets_targets));
    }
    let met: Vec<&str> = s.variants.iter().filter(|v| v.meets_targets).map(|v| v.label.as_str()).collect();
    let _ = writeln!(out, "\n**Targets met by: {}** (of {} variants).\n", if met.is_empty() { "none".to_owned() } else { met.join(", ") }, s.variants.len());
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
    for v in &s.variants {
        let _ = writeln!(out, "- timeline {}: {} (from the trace {})", v.label, v.picture, v.trace);
    }
    out.push('\n');
}

fn percent(value: Option<&f64>) -> String {
    match value {
        Some(v) if v.is_finite() && *v < 10.0 => format!("{v:.1}%"),
        Some(v) if v.is_finite() => format!("{v:.0}%"),
        _ => "–".to_owned(),
    }
}
