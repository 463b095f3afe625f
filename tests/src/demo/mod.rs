//! The main job: the paper's experiment on two lab guests, played without xsched, the way an
//! operator would without it (host CPU weights on the QEMUs plus a nicer background task in its
//! guest, in both weight orders), and with xsched, with a timeline picture per variant and a
//! table of CPU shares per phase (see `xsched-demo`).
//!
//! Guest u1 and guest u2 (one vCPU each, both on the chosen pinned kernel) boot once; their QEMUs
//! are pinned to one host CPU, so the two VMs share it as VMs share a physical CPU (host weights
//! only matter between VMs that contend for a CPU; every run checks the pinning); for the weights
//! variants each QEMU is put in a host cgroup of its own ([`crate::host_cgroup`]) for the run.
//! Each [`Scenario`] starts its workloads and plays its phases once per
//! [`Variant`]: without xsched, the chosen baselines, and with `xsched run --trace` (with the
//! scenario's policy and a budget of one host CPU); each run's trace is drawn with
//! `xsched timeline`.

pub mod analysis;
pub mod experiment;
pub mod observe;
pub mod report;
pub mod scenario;
pub mod variant;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xsched::run::trace::read_trace;

use crate::host_cgroup::{Hierarchy, HostWeights};
use crate::{guest, Guest, GuestSpec, KernelFiles, KernelPin, Lab};
use analysis::{background_share, host_cost, phase_shares, reactions};
use experiment::{run, start_workloads, stop_workloads, RunRecord, Xsched};
use report::{shares_meet, ScenarioSummary, Summary, Targets, VariantSummary};
pub use scenario::Scenario;
pub use variant::{BaselineChoice, Variant};

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
    /// The baseline variants each scenario plays.
    pub baselines: BaselineChoice,
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
    // Before booting: a host without a cpu cgroup hierarchy cannot play the weights variants.
    let weight_file = Hierarchy::detect()?.weight_file();
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
        let variants = options.baselines.variants(scenario.name);
        let summary = run_scenario(scenario, &guests, weight_file, &variants, &xsched, &targets, &options.out);
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

fn run_scenario(scenario: &Scenario, guests: &[Guest], weight_file: &str, variants: &[Variant], xsched: &Xsched, targets: &Targets, out: &Path) -> Result<ScenarioSummary> {
    let console_before: Vec<usize> = guests.iter().map(|g| g.console_problems().len()).collect();
    let started = start_workloads(scenario, guests)?;
    let bg = &scenario.background;
    let background = (guest(guests, bg.guest), started.pid_of(bg.comm).with_context(|| format!("{} was not started", bg.comm))?);
    let mut runs = Vec::new();
    let mut failed = None;
    for &variant in variants {
        eprintln!("  {} ...", variant.label(scenario));
        let played = variant.apply(guests, background).and_then(|weights| {
            let host_weights = weights.as_ref().map(HostWeights::current).transpose()?.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>();
            // The QEMUs leave the groups when `weights` drops, after the run.
            Ok((host_weights, run(scenario, guests, &started, variant, xsched, out)?))
        });
        // Undone whatever happened, so that no variant's settings leak into the next one.
        let undone = variant.undo(background);
        match played.and_then(|r| undone.map(|()| r)) {
            Ok((host_weights, record)) => runs.push((variant, host_weights, record)),
            Err(e) => {
                failed = Some(e.context(format!("scenario {}, variant {}", scenario.name, variant.name())));
                break;
            }
        }
    }
    stop_workloads(&started, guests)?;
    if let Some(e) = failed {
        return Err(e);
    }

    let mut summaries = Vec::with_capacity(runs.len());
    let mut xsched_trace = Vec::new();
    for (variant, host_weights, record) in &runs {
        let trace = read_trace(&record.trace)?;
        let picture = out.join(format!("{}-{variant}.svg", scenario.name));
        draw(xsched, scenario, *variant, record, &trace, &picture)?;
        let background = background_share(scenario, record);
        summaries.push(VariantSummary {
            name: variant.name(),
            label: variant.label(scenario),
            host_weights: host_weights.clone(),
            background_setting: variant.background_setting().to_owned(),
            phases: phase_shares(scenario, record),
            meets_targets: shares_meet(&background, targets),
            background,
            picture: file_name(&picture),
            trace: file_name(&record.trace),
        });
        if *variant == Variant::Xsched {
            xsched_trace = trace;
        }
    }
    let record_of = |v: Variant| runs.iter().find(|(w, _, _)| *w == v).map(|(_, _, r)| r);
    let shares_of = |v: Variant| summaries.iter().find(|s| s.name == v.name()).map(|s| s.phases.clone()).unwrap_or_default();
    let (vm_cpu_kept, xsched_cpu) = host_cost(&shares_of(Variant::Without), &shares_of(Variant::Xsched));
    let reactions = record_of(Variant::Xsched).map(|r| reactions(scenario, r, &xsched_trace)).unwrap_or_default();
    let console_problems = guests.iter().zip(console_before).flat_map(|(g, n)| g.console_problems().into_iter().skip(n).map(|p| format!("{}: {p}", g.name()))).collect();
    let expected_reactions = scenario.phases.windows(2).filter(|w| scenario.background_runs_in(&w[0]) != scenario.background_runs_in(&w[1])).count();
    Ok(ScenarioSummary {
        name: scenario.name.to_owned(),
        title: scenario.title.to_owned(),
        tasks: scenario.tasks().map(|t| t.comm.to_owned()).collect(),
        guests: scenario.guests().into_iter().map(str::to_owned).collect(),
        weight_file: weight_file.to_owned(),
        met_by: summaries.iter().filter(|v| v.meets_targets).map(|v| v.name.clone()).collect(),
        variants: summaries,
        reactions,
        expected_reactions,
        console_problems,
        vm_cpu_kept,
        xsched_cpu,
    })
}

/// Draws a run's trace with `xsched timeline`, marking where each phase began.
fn draw(xsched: &Xsched, scenario: &Scenario, variant: Variant, run: &RunRecord, trace: &[xsched::run::trace::TraceLine], picture: &Path) -> Result<()> {
    let first = trace.first().with_context(|| format!("{}: empty trace", run.trace.display()))?;
    let offset = first.wall - first.t;
    let mut command = Command::new(&xsched.binary);
    let title = format!("{}, {}", scenario.title, variant.label(scenario));
    command.arg("timeline").arg(&run.trace).arg("-o").arg(picture).arg("--title").arg(title);
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
