//! `xsched run --plugin PATH --domain …` (also `xsched --plugin PATH --domain …`): the
//! scheduling loop with a policy plugin.

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use xsched::domain::{Domain, DomainSpec};
use xsched::policy::PolicyPlugin;
use xsched::run::metrics::Metrics;
use xsched::run::trace::TraceLine;
use xsched::run::{Scheduler, Signals};

use super::park::JournalArgs;
use super::settings::{SettingsFile, PERIOD_MS};

/// The period when neither a flag nor a settings file gives one, milliseconds.
const DEFAULT_PERIOD_MS: u64 = 10;

/// Arguments of `xsched run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The loop's settings as a TOML file (e.g. /etc/xsched/xsched.toml: plugin, policy-config,
    /// domains, period-ms, cpus, journal, kernels, metrics); flags given win over it.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// The policy plugin: a path, or a file name looked up on $XSCHED_PLUGIN_PATH, beside the
    /// xsched binary, then in /usr/lib/xsched/plugins.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// The policy's configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long = "domain", help = concat!("A domain (not a core dump: it cannot be changed), as ", super::domain_forms!(), " (repeatable; each name and each guest once)."))]
    domains: Vec<DomainSpec>,
    /// The period, milliseconds (1 to 60000) [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(PERIOD_MS))]
    period: Option<u64>,
    /// The host CPU budget: how many tasks may run at once machine-wide, at least 1 [default: the
    /// host's CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// Stop after this many periods, at least 1 [default: run until SIGINT/SIGTERM].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    periods: Option<u64>,
    /// Write one JSON line per period with every managed task's state and decision (see
    /// `xsched timeline` to draw it).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Serve the loop's metrics as OpenMetrics text (for Prometheus) at http://ADDRESS/metrics,
    /// e.g. 127.0.0.1:9477.
    #[arg(long, value_name = "ADDRESS")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    common: JournalArgs,
}

/// What the loop runs with: the flags, over the settings file's values, over the defaults.
#[derive(Debug)]
struct Settings {
    plugin: PathBuf,
    policy_config: Option<PathBuf>,
    domains: Vec<DomainSpec>,
    period_ms: u64,
    cpus: Option<u32>,
    periods: Option<u64>,
    trace: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    common: JournalArgs,
}

impl Settings {
    fn of(args: &RunArgs) -> anyhow::Result<Self> {
        let file = args.config_file.as_deref().map(SettingsFile::read).transpose()?.unwrap_or_default();
        let from = args.config_file.as_ref().map_or(String::new(), |p| format!(" or `plugin` in {}", p.display()));
        let plugin = args.plugin.clone().or(file.plugin).with_context(|| format!("no policy plugin: give --plugin{from}"))?;
        let domains = if args.domains.is_empty() { file.domains } else { args.domains.clone() };
        if domains.is_empty() {
            let from = args.config_file.as_ref().map_or(String::new(), |p| format!(" or `domains` in {}", p.display()));
            anyhow::bail!("no domain to schedule: give --domain{from}");
        }
        let period_ms = args.period.or(file.period_ms).unwrap_or(DEFAULT_PERIOD_MS);
        Ok(Self {
            plugin,
            policy_config: args.config.clone().or(file.policy_config),
            domains,
            period_ms,
            cpus: args.cpus.or(file.cpus),
            periods: args.periods,
            trace: args.trace.clone(),
            metrics: args.metrics.or(file.metrics),
            common: args.common.or(file.journal, file.kernels),
        })
    }
}

/// Runs the loop until a signal, a period limit or an error; everything parked is released
/// before it returns — by the loop, or, if the loop dies, by its supervisor.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let args = &Settings::of(args)?;
    validate(args)?;
    let mut trace = args
        .trace
        .as_ref()
        .map(|path| xsched::files::create(path).map(BufWriter::new).with_context(|| format!("--trace {}", path.display())))
        .transpose()?;
    let plugin = PolicyPlugin::load(&args.plugin)?;
    let profiles = args.common.profiles()?;
    let domains = args
        .domains
        .iter()
        .zip(0..)
        .map(|(spec, i)| Domain::attach(xsched::domain::DomainId(i), spec, profiles.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let host_cpus = match args.cpus {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    };
    let signals = Signals::default();
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.reload.clone()).context("installing a signal handler")?;
    let period = Duration::from_millis(args.period_ms);
    // Before anything is parked, and before the policy runs any code of its own.
    let (domains, supervisor) = xsched::supervise::start(domains, args.common.path(), period)?;
    let policy = plugin.instantiate(args.policy_config.as_deref())?;
    // A thread: only after the fork.
    let mut metrics = args.metrics.map(Metrics::serve).transpose()?;
    let domain_names: Vec<String> = args.domains.iter().map(|spec| spec.name.clone()).collect();

    let started = Instant::now();
    let started_wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut last_summary = Instant::now();
    let mut trace_error = None;
    let mut scheduler = Scheduler::new(domains, args.common.open()?, policy, period, host_cpus)?;
    scheduler.beat_into(supervisor.heartbeat());
    println!(
        "xsched: policy {} on {} domain(s), period {} ms, {host_cpus} host CPU(s), supervised by pid {}",
        plugin.name(),
        args.domains.len(),
        args.period_ms,
        supervisor.supervisor_pid()
    );
    if let Some(metrics) = &metrics {
        println!("xsched: metrics at http://{}/metrics", metrics.address());
    }
    let result = scheduler.run(&signals, args.periods, |period| {
        let (table, plan, stats) = (period.table, period.plan, period.stats);
        if let Some(metrics) = metrics.as_mut() {
            metrics.record(period, &domain_names);
        }
        if let Some(out) = trace.as_mut() {
            let at = period.started.saturating_duration_since(started);
            if let Err(e) = TraceLine::of_period(at, (started_wall + at).as_secs_f64(), table, plan, stats).write_to(out) {
                trace_error.get_or_insert(e);
            }
        }
        if last_summary.elapsed() >= Duration::from_secs(1) {
            last_summary = Instant::now();
            let parked = table.tasks.iter().filter(|t| t.parked).count();
            println!(
                "xsched: {} tasks, {parked} parked, {} admitted; periods {} ({} overrun), parks {}, unparks {}, deferred {}",
                table.tasks.len(), plan.admitted.len(), stats.periods, stats.overruns, stats.parks, stats.unparks, stats.deferred
            );
        }
        if supervisor.supervisor_alive() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(anyhow::anyhow!("the supervisor (pid {}) died: stopped, releasing every parked task", supervisor.supervisor_pid()))
        }
    });
    supervisor.loop_ended();
    if let Some(out) = trace.as_mut() {
        out.flush().context("trace file")?;
    }
    if result.is_ok() && args.periods.is_none_or(|n| scheduler.stats().periods < n) {
        println!("xsched: stopped; every parked task was released");
    }
    result?;
    trace_error.map_or(Ok(()), |e| Err(anyhow::Error::from(e).context("trace file")))
}

/// Refuses, before anything is attached, what the arguments' parser cannot: a domain named
/// twice (the journal keys parks by name) or given twice, and a config or trace path that is
/// not a regular file (a FIFO would block the loop's start forever).
fn validate(args: &Settings) -> anyhow::Result<()> {
    DomainSpec::check_distinct(&args.domains).map_err(anyhow::Error::msg)?;
    xsched::run::share::check_floors(args.domains.iter().map(|d| (d.name.as_str(), d.share))).map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.policy_config {
        xsched::files::refuse_special(path).with_context(|| format!("--config {}", path.display()))?;
    }
    Ok(())
}
