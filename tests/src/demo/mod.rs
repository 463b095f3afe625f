//! The main job: the paper's experiment on two lab guests, without and with xsched, with a
//! timeline picture per scenario and a table of CPU shares per phase (see `xsched-demo`).
//!
//! Guest u1 and guest u2 (one vCPU each, both on the chosen pinned kernel) boot once; their QEMUs
//! are pinned to one host CPU, so the two VMs share it as VMs share a physical CPU. Each
//! [`Scenario`] starts its workloads, plays its phases once without xsched and once with
//! `xsched run --trace` (with the scenario's policy and a budget of one host CPU), then draws the
//! trace with `xsched timeline`.

pub mod analysis;
pub mod experiment;
pub mod report;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xsched::run::trace::read_trace;

use crate::{Guest, GuestSpec, KernelFiles, KernelPin, Lab};
use analysis::{background_share, host_cost, phase_shares, reactions};
use experiment::{run, start_workloads, stop_workloads, Xsched};
use report::{ScenarioSummary, Summary, Targets};
pub use scenario::Scenario;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The output folder.
    pub out: PathBuf,
    /// How long each phase lasts.
    pub phase_length: Duration,
    /// xsched's period, ms.
    pub period_ms: u64,
    /// The xsched binary (its plugins beside it).
    pub xsched: PathBuf,
    /// Scenario names to run (`priority`, `idle`); empty = both.
    pub only: Vec<String>,
    /// The kernel both guests boot.
    pub kernel: KernelPin,
}

/// Boots the guests, runs the scenarios, writes `summary.json`, `report.md`, the traces and the
/// pictures into the output folder, and returns the summary.
pub fn run_demo(options: &DemoOptions) -> Result<Summary> {
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let scenarios: Vec<Scenario> = [Scenario::priority(options.phase_length), Scenario::idle(options.phase_length)]
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| o == s.name))
        .collect();
    if scenarios.is_empty() {
        bail!("no such scenario: {:?} (there are priority and idle)", options.only);
    }
    let kernel = KernelFiles::ensure(&options.kernel)?;
    let tick_ms = 1000.0 / kernel_hz(&kernel)?;
    let specs = ["u1", "u2"]
        .map(|name| GuestSpec::new(name).kernel(options.kernel.clone()).vcpus(1).memory_mib(256).view_interval_ms(0));
    eprintln!("booting guests u1 and u2 on kernel {} ...", options.kernel);
    let guests = Lab::boot(&specs)?;
    for g in &guests {
        g.pin_to_host_cpus(&[0])?;
    }
    let xsched = Xsched { binary: options.xsched.clone(), period_ms: options.period_ms };
    let targets = Targets { background_busy_max: 1.0, background_idle_min: 50.0, reaction_ms: 2.0 * options.period_ms as f64 + tick_ms };
    let mut summaries = Vec::new();
    for scenario in &scenarios {
        eprintln!("scenario {}: {}", scenario.name, scenario.title);
        let summary = run_scenario(scenario, &guests, &xsched, &options.out);
        save_consoles(&guests, &options.out)?;
        summaries.push(summary.map_err(|e| e.context(console_tails(&guests)))?);
    }
    let summary = Summary {
        kernel: options.kernel.release.clone(),
        phase_ms: u64::try_from(options.phase_length.as_millis()).unwrap_or(u64::MAX),
        period_ms: options.period_ms,
        tick_ms,
        targets,
        scenarios: summaries,
    };
    let json = options.out.join("summary.json");
    std::fs::write(&json, serde_json::to_string_pretty(&summary)?).with_context(|| format!("writing {}", json.display()))?;
    let md = options.out.join("report.md");
    std::fs::write(&md, report::markdown(&summary)).with_context(|| format!("writing {}", md.display()))?;
    Ok(summary)
}

fn run_scenario(scenario: &Scenario, guests: &[Guest], xsched: &Xsched, out: &Path) -> Result<ScenarioSummary> {
    let console_before: Vec<usize> = guests.iter().map(|g| g.console_problems().len()).collect();
    let started = start_workloads(scenario, guests)?;
    eprintln!("  without xsched ...");
    let without = run(scenario, guests, &started, None, out);
    eprintln!("  with xsched ...");
    let (without_run, with_run) = without.and_then(|w| Ok((w, run(scenario, guests, &started, Some(xsched), out)?)))?;
    stop_workloads(&started, guests)?;

    let trace_path = with_run.trace.clone().context("the with-xsched run has no trace")?;
    let trace = read_trace(&trace_path)?;
    let picture = out.join(format!("{}.svg", scenario.name));
    draw(xsched, scenario, &with_run, &trace, &trace_path, &picture)?;
    let console_problems = guests.iter().zip(console_before).flat_map(|(g, n)| g.console_problems().into_iter().skip(n).map(|p| format!("{}: {p}", g.name()))).collect();
    let expected_reactions = scenario.phases.windows(2).filter(|w| scenario.background_runs_in(&w[0]) != scenario.background_runs_in(&w[1])).count();
    let (without, with) = (phase_shares(scenario, &without_run), phase_shares(scenario, &with_run));
    let (vm_cpu_kept, xsched_cpu) = host_cost(&without, &with);
    Ok(ScenarioSummary {
        name: scenario.name.to_owned(),
        title: scenario.title.to_owned(),
        tasks: scenario.tasks().map(|t| t.comm.to_owned()).collect(),
        guests: scenario.guests().into_iter().map(str::to_owned).collect(),
        background_without: background_share(scenario, &without_run),
        background_with: background_share(scenario, &with_run),
        reactions: reactions(scenario, &with_run, &trace),
        without,
        with,
        expected_reactions,
        picture: file_name(&picture),
        trace: file_name(&trace_path),
        console_problems,
        vm_cpu_kept,
        xsched_cpu,
    })
}

/// Draws the trace with `xsched timeline`, marking where each phase began.
fn draw(xsched: &Xsched, scenario: &Scenario, run: &experiment::RunRecord, trace: &[xsched::run::trace::TraceLine], trace_path: &Path, picture: &Path) -> Result<()> {
    let first = trace.first().with_context(|| format!("{}: empty trace", trace_path.display()))?;
    let offset = first.wall - first.t;
    let mut command = Command::new(&xsched.binary);
    command.arg("timeline").arg(trace_path).arg("-o").arg(picture).arg("--title").arg(scenario.title);
    for phase in &run.phases {
        command.arg("--mark").arg(format!("{:.3}={}", phase.steer_begun - offset, phase.label));
    }
    for task in scenario.tasks() {
        command.args(["--comm", task.comm]);
    }
    let output = command.output().with_context(|| format!("running {}", xsched.binary.display()))?;
    if !output.status.success() {
        bail!("xsched timeline failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// The guest kernel's tick rate (`CONFIG_HZ` in its config).
fn kernel_hz(kernel: &KernelFiles) -> Result<f64> {
    let config = std::fs::read_to_string(&kernel.config).with_context(|| format!("reading {}", kernel.config.display()))?;
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{}: no CONFIG_HZ", kernel.config.display()))
}

/// Writes each guest's console so far into `out/NAME.console.log`.
fn save_consoles(guests: &[Guest], out: &Path) -> Result<()> {
    for g in guests {
        let path = out.join(format!("{}.console.log", g.name()));
        std::fs::write(&path, g.console_text()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The last console lines of every guest, for an error message.
fn console_tails(guests: &[Guest]) -> String {
    let mut text = String::from("the guests' last console lines:");
    for g in guests {
        let console = g.console_text();
        let lines: Vec<&str> = console.lines().collect();
        for line in &lines[lines.len().saturating_sub(15)..] {
            text.push_str(&format!("\n  {}: {line}", g.name()));
        }
    }
    text
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
