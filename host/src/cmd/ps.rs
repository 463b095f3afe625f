//! `xsched ps`: the cross-domain task table, once (`ps`-like), as JSON, or live (`--watch`).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::profile::Profile;
use xsched::table::{TaskEntry, TaskTable};

/// Arguments of `xsched ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// A domain, as NAME=qemu:RAMFILE[,qmp=SOCK] | NAME=core:FILE | NAME=xen:DOMID (repeatable).
    #[arg(long = "domain", required = true)]
    domains: Vec<DomainSpec>,
    /// Directory of kernel profiles [default: $XSCHED_KERNELS, ./kernels, /usr/share/xsched/kernels].
    #[arg(long)]
    kernels: Option<PathBuf>,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
    /// Refresh continuously, like top, with CPU use per task and per domain.
    #[arg(long)]
    watch: bool,
    /// Refresh interval for --watch, milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// Stop --watch after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
}

/// Attaches to every domain and prints the table.
pub fn run(args: &PsArgs) -> anyhow::Result<()> {
    let kernels = super::kernels_dir(args.kernels.clone());
    let profiles: Vec<Profile> = Profile::load_dir(&kernels)?.into_iter().map(|(_, p)| p).collect();
    let mut domains = args
        .domains
        .iter()
        .zip(0..)
        .map(|(spec, i)| Domain::attach(DomainId(i), spec, profiles.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.watch {
        let table = take(&mut domains, None)?;
        return print(&table, args.json, false);
    }
    let mut previous: Option<(TaskTable, Instant)> = None;
    let mut refreshes = 0u64;
    loop {
        let now = Instant::now();
        let table = take(&mut domains, previous.as_ref().map(|(t, at)| (t, now - *at)))?;
        if previous.is_some() {
            if !args.json {
                print!("\x1b[H\x1b[2J");
            }
            print(&table, args.json, true)?;
            refreshes += 1;
            if args.count.is_some_and(|n| refreshes >= n) {
                return Ok(());
            }
        }
        previous = Some((table, now));
        std::thread::sleep(Duration::from_millis(args.interval).saturating_sub(now.elapsed()));
    }
}

/// One pass over all domains.
fn take(domains: &mut [Domain], previous: Option<(&TaskTable, Duration)>) -> anyhow::Result<TaskTable> {
    let mut pass = Vec::with_capacity(domains.len());
    for domain in domains.iter_mut() {
        let snap = domain.snapshot()?;
        // A mapped file that shrank or was replaced fails every read from then on: stop, saying so.
        domain.kernel().memory().check_backing().with_context(|| format!("domain {}", domain.name))?;
        pass.push(snap);
    }
    let pass: Vec<(&Domain, _)> = domains.iter().zip(pass).collect();
    Ok(TaskTable::build(&pass, previous))
}

fn print(table: &TaskTable, json: bool, watch: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, table)?;
        writeln!(out)?;
        return out.flush().context("stdout");
    }
    let name_of = |id: DomainId| table.domains.iter().find(|d| d.id == id).map_or("?", |d| d.name.as_str());
    for d in &table.domains {
        write!(out, "{}: Linux {}, {} vCPUs, {} tasks, paused {} µs (reading {} µs)", d.name, d.release, d.vcpus, d.tasks, d.pause_us, d.read_us)?;
        if watch {
            write!(out, ", CPU {:.1}%", d.cpu_percent)?;
        }
        writeln!(out)?;
        for problem in &d.problems {
            writeln!(out, "  partial: {problem}")?;
        }
    }
    writeln!(
        out,
        "{:<8} {:>7} {:>7} {:<15} S {:>3} QR {:<3} {:>3} {:>4} {:>6} {:>12}{} CGROUP",
        "DOMAIN", "PID", "TGID", "COMM", "CPU", "CLS", "NI", "PRI", "WEIGHT", "RUNTIME",
        if watch { "   %CPU" } else { "" }
    )?;
    let mut rows: Vec<&TaskEntry> = table.tasks.iter().collect();
    if watch {
        rows.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    }
    for t in rows {
        writeln!(
            out,
            "{:<8} {:>7} {:>7} {:<15} {} {:>3} {}{} {:<3} {:>3} {:>4} {:>6} {:>11.3}s{} {}",
            name_of(t.key.domain),
            t.key.pid,
            t.tgid,
            t.comm,
            t.state,
            t.cpu,
            match (t.queued, t.delayed) {
                (true, true) => 'd',
                (true, false) => 'q',
                (false, _) => '-',
            },
            if t.running { 'r' } else { '-' },
            t.policy.abbrev(),
            if t.policy.is_realtime() { "-".to_string() } else { t.nice.to_string() },
            t.prio,
            t.weight,
            t.runtime_ns as f64 / 1e9,
            if watch { format!(" {:>6.1}", t.cpu_percent) } else { String::new() },
            t.cgroup.as_deref().unwrap_or("?"),
        )?;
    }
    out.flush().context("stdout")
}
