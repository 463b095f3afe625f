//! `xsched-demo`: the paper's experiment on two lab guests, without xsched, with host weights
//! plus nice as an operator would do it, and with xsched (see the library's `demo` module).
//! Prints the report and leaves pictures, traces and a JSON summary in the output folder.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use xsched_lab::demo::{report, run_demo, BaselineChoice, DemoOptions};
use xsched_lab::KernelPin;

/// Runs the demo scenarios on two lab guests and reports what xsched changed.
#[derive(Debug, Parser)]
#[command(name = "xsched-demo", version, about)]
struct Cli {
    /// Where the report, summary, traces and pictures go.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// How long each phase lasts, ms.
    #[arg(long, default_value_t = 5000)]
    phase_ms: u64,
    /// xsched's scheduling period, ms.
    #[arg(long, default_value_t = 10)]
    period_ms: u64,
    /// The xsched binary [default: the one beside this binary].
    #[arg(long)]
    xsched: Option<PathBuf>,
    /// Run only this scenario (priority or idle; repeatable).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// The guests' kernel: a pin in tests/lab/kernels/ (6.1, 6.12) [default: $XSCHED_LAB_KERNEL,
    /// else 6.1].
    #[arg(long)]
    kernel: Option<KernelPin>,
    /// Which baselines (host weights plus nice 19 or SCHED_IDLE) to play between "without" and
    /// "with xsched": [SCENARIO:]VARIANT with VARIANT weights-u1-nice19, weights-u1-idle,
    /// weights-u2-nice19, weights-u2-idle, or none (repeatable) [default: all four, every
    /// scenario].
    #[arg(long = "baseline")]
    baselines: Vec<String>,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let xsched = match cli.xsched {
        Some(path) => path,
        None => std::env::current_exe().context("finding this binary")?.with_file_name("xsched"),
    };
    let options = DemoOptions {
        out: cli.out,
        phase_length: Duration::from_millis(cli.phase_ms),
        period_ms: cli.period_ms,
        xsched,
        only: cli.scenarios,
        kernel: cli.kernel.map_or_else(KernelPin::selected, Ok)?,
        baselines: BaselineChoice::parse(&cli.baselines)?,
    };
    let summary = run_demo(&options)?;
    println!("{}", report::markdown(&summary));
    println!("Pictures, traces and summary.json are in {}/", options.out.display());
    Ok(())
}
