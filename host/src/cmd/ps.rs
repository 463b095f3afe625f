//! `xsched ps`: the cross-domain task table, once (`ps`-like), as JSON, or live (`--watch`).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::table::{DomainFacts, TaskEntry, TaskTable};
use xsched::text::printable;

/// Arguments of `xsched ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(long = "domain", required = true, help = concat!("A domain, as ", super::domain_forms!(), " (repeatable; each name and each guest once)."))]
    domains: Vec<DomainSpec>,
    #[command(flatten)]
    kernels: super::KernelsArg,
    /// Print the table as JSON (names exact; a comm that is not valid UTF-8 also as
    /// `comm_bytes`).
    #[arg(long)]
    json: bool,
    /// Refresh continuously, like top, with CPU use per task and per domain.
    #[arg(long)]
    watch: bool,
    /// Refresh interval for --watch, milliseconds (10 to 3600000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    interval: u64,
    /// Stop --watch after this many refreshes, at least 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// Attaches to every domain and prints the table.
pub fn run(args: &PsArgs) -> anyhow::Result<()> {
    DomainSpec::check_distinct(&args.domains).map_err(anyhow::Error::msg)?;
    let profiles = args.kernels.profiles()?;
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
    // A terminal is cleared for each refresh; a pipe or a file gets the tables one after another.
    let clear = !args.json && std::io::stdout().is_terminal();
    let mut previous: Option<(TaskTable, Instant)> = None;
    let mut refreshes = 0u64;
    loop {
        let now = Instant::now();
        let table = take(&mut domains, previous.as_ref().map(|(t, at)| (t, now - *at)))?;
        if previous.is_some() {
            if clear {
                print!("\x1b[H\x1b[2J");
            } else if !args.json && refreshes > 0 {
                println!();
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
        pass.push(domain.snapshot()?);
    }
    let pass: Vec<_> = domains.iter().zip(&pass).map(|(d, snap)| (DomainFacts::of(d.id, &d.name, d.kernel()), snap)).collect();
    Ok(TaskTable::build_from(&pass, previous))
}

fn print(table: &TaskTable, json: bool, watch: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, table)?;
        writeln!(out)?;
        return out.flush().context("stdout");
    }
    // Everything a guest can write into is shown through `printable`; the domain names are
    // the operator's own, checked when parsed.
    let name_of = |id: DomainId| table.domains.iter().find(|d| d.id == id).map_or("?", |d| d.name.as_str());
    for d in &table.domains {
        let release = printable(&d.release);
        write!(out, "{}: Linux {release}, {} vCPUs, {} tasks, ", d.name, d.vcpus, d.tasks)?;
        if d.paused_by_others {
            write!(out, "paused by someone else: read as it is and left paused (reading {} µs)", d.read_us)?;
        } else {
            write!(out, "paused {} µs (reading {} µs)", d.pause_us, d.read_us)?;
        }
        if watch {
            write!(out, ", CPU {:.1}%", d.cpu_percent)?;
        }
        writeln!(out)?;
        for problem in &d.problems {
            writeln!(out, "  partial: {}", printable(problem))?;
        }
    }
    writeln!(
        out,
        "{:<8} {:>7} {:>7} {:<15} S {:>3} QR {:<3} {:>3} {:>4} {:>6} {:>11}{} CGROUP",
        "DOMAIN", "PID", "TGID", "COMM", "PSR", "CLS", "NI", "PRI", "WEIGHT", "TIME",
        if watch { "   %CPU" } else { "" }
    )?;
    let mut rows: Vec<&TaskEntry> = table.tasks.iter().collect();
    if watch {
        rows.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    }
    for t in rows {
        writeln!(
            out,
            "{:<8} {:>7} {:>7} {:<15} {} {:>3} {}{} {:<3} {:>3} {:>4} {:>6} {:>11}{} {}",
            name_of(t.key.domain),
            t.key.pid,
            t.tgid,
            printable(&t.comm),
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
            cpu_time(t.runtime_ns),
            if watch { format!(" {:>6.1}", t.cpu_percent) } else { String::new() },
            t.cgroup.as_deref().map_or(Cow::Borrowed("?"), printable),
        )?;
    }
    out.flush().context("stdout")
}

/// CPU time as procps prints it: `[DD-]HH:MM:SS`.
fn cpu_time(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let (days, hms) = (seconds / 86_400, seconds % 86_400);
    let clock = format!("{:02}:{:02}:{:02}", hms / 3600, hms % 3600 / 60, hms % 60);
    if days > 0 {
        format!("{days}-{clock}")
    } else {
        clock
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_time;

    #[test]
    fn cpu_time_reads_like_procps() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(59_999_999_999), "00:00:59");
        assert_eq!(cpu_time(3_723_000_000_000), "01:02:03");
        assert_eq!(cpu_time(2 * 86_400_000_000_000 + 5_000_000_000), "2-00:00:05");
    }
}
