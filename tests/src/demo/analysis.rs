//! What the demo measures: each task's CPU share per phase (the guests' own accounting), the
//! background task's share against the targets, and xsched's reaction time (from its trace).

use std::collections::BTreeMap;

use serde::Serialize;
use xsched::run::trace::{Decision, TraceLine, TraceTask};

use super::experiment::{PhaseRecord, RunRecord};
use super::scenario::Scenario;

/// One phase's shares.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseShares {
    /// The phase's label.
    pub label: String,
    /// Each task's share of its vCPU (its guest's clock), percent.
    pub tasks: BTreeMap<String, f64>,
    /// Each guest's share of one host CPU (its QEMU process), percent.
    pub hosts: BTreeMap<String, f64>,
    /// xsched's own share of one host CPU (loop and supervisor), percent; with xsched only.
    pub xsched: Option<f64>,
}

/// The shares of every phase of a run.
pub fn phase_shares(scenario: &Scenario, run: &RunRecord) -> Vec<PhaseShares> {
    run.phases.iter().map(|p| shares_in(scenario, p)).collect()
}

fn shares_in(scenario: &Scenario, phase: &PhaseRecord) -> PhaseShares {
    let mut tasks = BTreeMap::new();
    for task in scenario.tasks() {
        let (Some(a), Some(b)) = (phase.start.guests.get(task.guest), phase.end.guests.get(task.guest)) else { continue };
        let (Some(ra), Some(rb)) = (a.run_ns.get(task.comm), b.run_ns.get(task.comm)) else { continue };
        let elapsed = b.uptime_s - a.uptime_s;
        if elapsed > 0.0 {
            tasks.insert(task.comm.to_owned(), 100.0 * rb.saturating_sub(*ra) as f64 / 1e9 / elapsed);
        }
    }
    let wall = phase.end.wall - phase.start.wall;
    let hosts = phase
        .end
        .guests
        .iter()
        .filter_map(|(name, b)| {
            let a = phase.start.guests.get(name)?;
            (wall > 0.0).then(|| (name.clone(), 100.0 * (b.host_cpu_s - a.host_cpu_s) / wall))
        })
        .collect();
    let xsched = match (phase.start.xsched_cpu_s, phase.end.xsched_cpu_s) {
        (Some(a), Some(b)) if wall > 0.0 => Some(100.0 * (b - a) / wall),
        _ => None,
    };
    PhaseShares { label: phase.label.clone(), tasks, hosts, xsched }
}

/// The host CPU the VMs got in the phases of `with`, as a percentage of what they got in those
/// of `without`; and xsched's own mean share over the phases of `with`.
pub fn host_cost(without: &[PhaseShares], with: &[PhaseShares]) -> (Option<f64>, Option<f64>) {
    let total = |phases: &[PhaseShares]| phases.iter().flat_map(|p| p.hosts.values()).sum::<f64>();
    let kept = (total(without) > 0.0).then(|| 100.0 * total(with) / total(without));
    let own: Vec<f64> = with.iter().filter_map(|p| p.xsched).collect();
    let mean = (!own.is_empty()).then(|| own.iter().sum::<f64>() / own.len() as f64);
    (kept, mean)
}

/// The background task's share over the phases where it should not run and where it should.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BackgroundShare {
    /// While some foreground task is busy, percent (target: under 1 % with xsched).
    pub while_foreground_busy: f64,
    /// While every foreground task sleeps, percent (target: it runs).
    pub while_all_idle: f64,
}

/// The background task's share over a run (guest accounting, the steady part of each phase).
pub fn background_share(scenario: &Scenario, run: &RunRecord) -> BackgroundShare {
    let bg = &scenario.background;
    let mut sums = [(0.0, 0.0); 2];
    for (phase, record) in scenario.phases.iter().zip(&run.phases) {
        let (Some(a), Some(b)) = (record.start.guests.get(bg.guest), record.end.guests.get(bg.guest)) else { continue };
        let (Some(ra), Some(rb)) = (a.run_ns.get(bg.comm), b.run_ns.get(bg.comm)) else { continue };
        let sum = &mut sums[usize::from(scenario.background_runs_in(phase))];
        sum.0 += rb.saturating_sub(*ra) as f64 / 1e9;
        sum.1 += b.uptime_s - a.uptime_s;
    }
    let percent = |(ran, elapsed): (f64, f64)| if elapsed > 0.0 { 100.0 * ran / elapsed } else { f64::NAN };
    BackgroundShare { while_foreground_busy: percent(sums[0]), while_all_idle: percent(sums[1]) }
}

/// How fast xsched followed one phase change that should start or stop the background task.
#[derive(Clone, Debug, Serialize)]
pub struct Reaction {
    /// The phase that begins.
    pub phase: String,
    /// `unpark` (the foreground went idle) or `park` (it went busy).
    pub action: Decision,
    /// From the last period that still saw the old state to the period that parked or
    /// unparked the background task, ms: an upper bound on the time from the change to
    /// xsched's write.
    pub decision_ms: f64,
    /// The same, in periods.
    pub periods: u64,
    /// From the last period that saw the old state to the first period whose snapshot shows
    /// the effect in the guest (the task off its runqueue, or its run time growing), ms.
    pub effect_ms: Option<f64>,
}

/// The reactions to every phase change that should start or stop the background task, from
/// xsched's trace. A change xsched never followed is left out (and shows as fewer reactions).
pub fn reactions(scenario: &Scenario, run: &RunRecord, trace: &[TraceLine]) -> Vec<Reaction> {
    let mut out = Vec::new();
    for (i, window) in scenario.phases.windows(2).enumerate() {
        let (before, after) = (scenario.background_runs_in(&window[0]), scenario.background_runs_in(&window[1]));
        let Some(record) = run.phases.get(i + 1) else { break };
        if before == after {
            continue;
        }
        let end = run.phases.get(i + 2).map_or(f64::INFINITY, |p| p.steer_begun);
        if let Some(r) = reaction(scenario, trace, &window[1].label, after, record.steer_begun, end) {
            out.push(r);
        }
    }
    out
}

/// The reaction to the phase change begun at `begun` (wall clock) that makes the background
/// task run (`runs`) or stop, looking no later than `until`.
fn reaction(scenario: &Scenario, trace: &[TraceLine], phase: &str, runs: bool, begun: f64, until: f64) -> Option<Reaction> {
    let wants_cpu = |t: &TraceTask| t.state == "R" || matches!(t.decision, Decision::Park | Decision::Parked | Decision::Unpark);
    let fg_wants_cpu = |line: &TraceLine| line.tasks.iter().any(|t| scenario.foreground.iter().any(|f| f.comm == t.comm) && wants_cpu(t));
    fn named<'a>(line: &'a TraceLine, comm: &str) -> Option<&'a TraceTask> {
        line.tasks.iter().find(|t| t.comm == comm)
    }
    let bg = |line| named(line, scenario.background.comm);
    let from = trace.iter().position(|l| l.wall >= begun)?;
    let seen = from + trace[from..].iter().take_while(|l| l.wall < until).position(|l| fg_wants_cpu(l) != runs)?;
    let last_old = trace[seen.checked_sub(1)?].t;
    let action = if runs { Decision::Unpark } else { Decision::Park };
    let acted = seen + trace[seen..].iter().take_while(|l| l.wall < until).position(|l| bg(l).is_some_and(|t| t.decision == action))?;
    let effect = trace[acted + 1..].iter().zip(&trace[acted..]).take_while(|(l, _)| l.wall < until).find(|(l, prev)| {
        match (bg(l), bg(prev)) {
            (Some(now), Some(then)) if runs => now.runtime_ns > then.runtime_ns,
            (Some(now), _) => !now.queued,
            _ => false,
        }
    });
    Some(Reaction {
        phase: phase.to_owned(),
        action,
        decision_ms: 1000.0 * (trace[acted].t - last_old),
        periods: trace[acted].period.saturating_sub(trace[seen - 1].period),
        effect_ms: effect.map(|(l, _)| 1000.0 * (l.t - last_old)),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::demo::experiment::{GuestReading, Reading};

    fn task(comm: &str, state: &str, decision: Decision, runtime_ns: u64) -> TraceTask {
        TraceTask { domain: "u1".into(), pid: 1, comm: comm.into(), state: state.into(), queued: state == "R", running: false, decision, runtime_ns }
    }

    fn line(period: u64, tasks: Vec<TraceTask>) -> TraceLine {
        let t = period as f64 * 0.01;
        TraceLine { t, period, tasks, wall: 1000.0 + t }
    }

    fn reading(wall: f64, uptime_s: f64, run: &[(&str, u64)]) -> Reading {
        let run_ns = run.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect();
        Reading { wall, guests: BTreeMap::from([("u1".to_owned(), GuestReading { uptime_s, run_ns, host_cpu_s: wall / 2.0 })]), xsched_cpu_s: None }
    }

    fn phase(label: &str, begun: f64, start: Reading, end: Reading) -> PhaseRecord {
        PhaseRecord { label: label.into(), steer_begun: begun, steered_at: begun, start, end }
    }

    /// The priority scenario's phases 2 → 3 (web busy → all idle): web goes idle at period 3,
    /// xsched unparks bkup in period 4, bkup runs from period 5.
    #[test]
    fn reactions_and_shares_come_from_the_trace_and_readings() {
        let scenario = Scenario::priority(Duration::from_secs(1));
        let zero = || reading(0.0, 0.0, &[]);
        let run = RunRecord {
            variant: "xsched".into(),
            phases: vec![
                phase("db+web busy", 999.0, zero(), zero()),
                phase("web busy", 1000.0, reading(1000.0, 10.0, &[("bkup", 0)]), reading(1001.0, 11.0, &[("bkup", 5_000_000)])),
                phase("all idle", 1000.025, reading(1001.0, 11.0, &[("bkup", 5_000_000)]), reading(1002.0, 12.0, &[("bkup", 905_000_000)])),
            ],
            trace: "priority-xsched.trace.jsonl".into(),
        };
        let web = |state, d| TraceTask { domain: "u2".into(), pid: 2, ..task("web", state, d, 0) };
        let trace = vec![
            line(1, vec![web("R", Decision::Run), task("bkup", "P", Decision::Parked, 7)]),
            line(2, vec![web("R", Decision::Run), task("bkup", "P", Decision::Parked, 7)]),
            line(3, vec![task("bkup", "P", Decision::Parked, 7)]),
            line(4, vec![task("bkup", "P", Decision::Unpark, 7)]),
            line(5, vec![task("bkup", "R", Decision::Run, 9)]),
        ];
        let got = reactions(&scenario, &run, &trace);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].action, got[0].periods), (Decision::Unpark, 2));
        assert!((got[0].decision_ms - 20.0).abs() < 1e-6 && (got[0].effect_ms.expect("effect") - 30.0).abs() < 1e-6, "{got:?}");

        let shares = background_share(&scenario, &run);
        assert!((shares.while_foreground_busy - 0.5).abs() < 1e-9 && (shares.while_all_idle - 90.0).abs() < 1e-9, "{shares:?}");
        let per_phase = phase_shares(&scenario, &run);
        assert!((per_phase[2].tasks["bkup"] - 90.0).abs() < 1e-9 && (per_phase[2].hosts["u1"] - 50.0).abs() < 1e-9);
    }
}
