//! `xsched park`, `xsched unpark` and `xsched release`: park and unpark single tasks by hand,
//! and release what the journal says is parked.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use xsched::actuate::actuator::{release_reason, Actuator, BETWEEN_ROUNDS, RETRY_ROUNDS};
use xsched::actuate::journal::{Journal, ParkRecord, ReleaseReason};
use xsched::actuate::park::{Deferred, ParkOutcome, Retry, TaskIdentity, UnparkOutcome};
use xsched::domain::{Domain, DomainId, DomainSpec};
use xsched::profile::Profile;

/// Where the journal is: `--journal`, else `$XSCHED_JOURNAL`, else `/var/lib/xsched/journal.jsonl`.
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// The park journal [default: $XSCHED_JOURNAL, else /var/lib/xsched/journal.jsonl].
    #[arg(long)]
    journal: Option<PathBuf>,
    #[command(flatten)]
    kernels: super::KernelsArg,
}

impl JournalArgs {
    /// These flags, with `journal` and `kernels` where a flag was not given (from a settings
    /// file: the command line wins).
    pub fn or(&self, journal: Option<PathBuf>, kernels: Option<PathBuf>) -> Self {
        Self { journal: self.journal.clone().or(journal), kernels: self.kernels.or(kernels) }
    }

    /// Every kernel profile (see [`super::KernelsArg`]).
    pub fn profiles(&self) -> anyhow::Result<Vec<Profile>> {
        self.kernels.profiles()
    }

    /// Opens the journal, creating it if there is none (for `run` and `park`).
    pub fn open(&self) -> anyhow::Result<Journal> {
        Ok(Journal::open(&self.path())?)
    }

    /// Opens the existing journal (for `unpark` and `release`: a missing one is an error).
    fn open_existing(&self) -> anyhow::Result<Journal> {
        Ok(Journal::open_existing(&self.path())?)
    }

    /// The journal's path.
    pub fn path(&self) -> PathBuf {
        self.journal
            .clone()
            .or_else(|| super::env_path("XSCHED_JOURNAL"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/xsched/journal.jsonl"))
    }

    /// Attaches the domain `spec` names, with its write side.
    fn attach(&self, spec: &DomainSpec) -> anyhow::Result<(Domain, Actuator)> {
        let domain = Domain::attach(DomainId(0), spec, self.profiles()?)?;
        let actuator = Actuator::for_domain(&domain)?;
        Ok((domain, actuator))
    }
}

/// Arguments of `xsched park` and `xsched unpark`.
#[derive(Debug, Args)]
pub struct TaskArgs {
    #[arg(long, help = concat!("The domain (not a core dump: it cannot be changed), as ", super::domain_forms!(), "."))]
    domain: DomainSpec,
    /// The task's pid (a thread id) inside the guest.
    pid: i32,
    #[command(flatten)]
    common: JournalArgs,
}

/// Arguments of `xsched release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Release every task the journal says is parked, in every domain.
    #[arg(long, conflicts_with = "domain")]
    all: bool,
    /// Only this domain's tasks (its name, as the journal records it).
    #[arg(long)]
    domain: Option<String>,
    /// Only this task (with --domain).
    #[arg(long, requires = "domain")]
    pid: Option<i32>,
    #[command(flatten)]
    common: JournalArgs,
}

/// The identity of task `pid` in `domain`, from a fresh snapshot.
fn find(domain: &mut Domain, pid: i32) -> anyhow::Result<(TaskIdentity, u32)> {
    let snap = domain.snapshot()?;
    let task = snap
        .guest
        .tasks
        .iter()
        .find(|t| t.record.pid == pid)
        .with_context(|| format!("domain {}: no task with pid {pid}", domain.name))?;
    Ok((TaskIdentity { addr: task.record.addr, pid, start_time: task.record.start_time }, task.record.state))
}

/// `xsched park`: journals the park, then parks the task, retrying while the guest holds a lock.
pub fn park(args: &TaskArgs) -> anyhow::Result<()> {
    let mut journal = args.common.open()?;
    let (mut domain, actuator) = args.common.attach(&args.domain)?;
    let (task, state) = find(&mut domain, args.pid)?;
    if journal.is_parked(&domain.name, task.pid, task.start_time) || actuator.is_parked_state(state) {
        bail!("domain {}: pid {} is already parked", domain.name, task.pid);
    }
    let record = ParkRecord { domain: args.domain.to_string(), pid: task.pid, start_time: task.start_time, addr: task.addr.raw(), saved_state: state };
    journal.record_park(record.clone())?;
    let mut last_retry = None;
    for _ in 0..RETRY_ROUNDS {
        match actuator.park(&mut domain, &task)? {
            ParkOutcome::Parked { state, runnable } => {
                println!("{}: parked pid {} (was {}, state {state:#x})", domain.name, task.pid, if runnable { "runnable" } else { "sleeping" });
                return Ok(());
            }
            ParkOutcome::Deferred(Deferred::Retry(why)) => {
                log::debug!("park {}: retry: {why}", task.pid);
                last_retry = Some(why);
                std::thread::sleep(BETWEEN_ROUNDS);
            }
            ParkOutcome::Deferred(other) => {
                journal.record_release(&record, ReleaseReason::NotParked)?;
                bail!("domain {}: pid {} cannot be parked: {}", domain.name, task.pid, other);
            }
        }
    }
    journal.record_release(&record, ReleaseReason::NotParked)?;
    bail!("domain {}: pid {} could not be parked in {RETRY_ROUNDS} attempts{}", domain.name, task.pid, last(last_retry))
}

/// `xsched unpark`: unparks one task and records its release.
pub fn unpark(args: &TaskArgs) -> anyhow::Result<()> {
    let mut journal = args.common.open_existing()?;
    let (mut domain, actuator) = args.common.attach(&args.domain)?;
    let (task, state) = find(&mut domain, args.pid)?;
    let journaled = journal.parked().find(|r| r.domain_name() == domain.name && r.pid == task.pid && r.start_time == task.start_time).cloned();
    let record = match journaled {
        Some(record) => record,
        // Our parked state is recognisable even when the journal lost the task.
        None if actuator.is_parked_state(state) => {
            log::warn!("domain {}: pid {} is parked but not in the journal", domain.name, task.pid);
            ParkRecord { domain: args.domain.to_string(), pid: task.pid, start_time: task.start_time, addr: task.addr.raw(), saved_state: state }
        }
        None => bail!("domain {}: pid {} is not parked by xsched", domain.name, task.pid),
    };
    let line = release_one(&mut domain, &actuator, &mut journal, &record)?;
    println!("{line}");
    Ok(())
}

/// Unparks the task of `record`, retrying while the guest holds a lock; records the release.
fn release_one(domain: &mut Domain, actuator: &Actuator, journal: &mut Journal, record: &ParkRecord) -> anyhow::Result<String> {
    let task = TaskIdentity { addr: xsched::memory::Gva(record.addr), pid: record.pid, start_time: record.start_time };
    let mut last_retry = None;
    for _ in 0..RETRY_ROUNDS {
        let outcome = actuator.unpark(domain, &task)?;
        let reason = match release_reason(&outcome) {
            Ok(reason) => reason,
            Err(Deferred::Retry(why)) => {
                log::debug!("unpark {}: retry: {why}", task.pid);
                last_retry = Some(why.clone());
                std::thread::sleep(BETWEEN_ROUNDS);
                continue;
            }
            Err(other) => bail!("domain {}: pid {} cannot be unparked: {}", domain.name, task.pid, other),
        };
        journal.record_release(record, reason)?;
        return Ok(match outcome {
            UnparkOutcome::Unparked { cpu, cpu_idle } => format!("{}: unparked pid {} on CPU {cpu}{}", domain.name, task.pid, if cpu_idle { " (idle CPU kicked)" } else { "" }),
            UnparkOutcome::NotParked { state } => format!("{}: pid {} was no longer parked (state {state:#x})", domain.name, task.pid),
            UnparkOutcome::Deferred(_) => format!("{}: pid {} is gone (exited, or the guest rebooted)", domain.name, task.pid),
        });
    }
    bail!("domain {}: pid {} could not be unparked in {RETRY_ROUNDS} attempts{}", domain.name, task.pid, last(last_retry))
}

/// `xsched release`: unparks what the journal says is parked (all of it, a domain's, or one task).
pub fn release(args: &ReleaseArgs) -> anyhow::Result<()> {
    if !args.all && args.domain.is_none() {
        bail!("say what to release: --all, or --domain NAME (and --pid PID)");
    }
    let mut journal = args.common.open_existing()?;
    if journal.skipped() > 0 {
        let shown = xsched::text::printable(&journal.path().display().to_string()).into_owned();
        println!("journal {shown}: {} damaged line(s) skipped (see the warnings), every valid record kept", journal.skipped());
    }
    let records: Vec<ParkRecord> = journal
        .parked()
        .filter(|r| args.domain.as_deref().is_none_or(|d| r.domain_name() == d) && args.pid.is_none_or(|p| r.pid == p))
        .cloned()
        .collect();
    let mut failures = 0;
    let mut domains: Vec<(Domain, Actuator)> = Vec::new();
    for record in &records {
        let spec: DomainSpec = record.domain.parse().map_err(anyhow::Error::msg).context("journal entry")?;
        let index = match domains.iter().position(|(d, _)| d.spec == spec) {
            Some(i) => i,
            None => match args.common.attach(&spec) {
                Ok((d, actuator)) => {
                    domains.push((d, actuator));
                    domains.len() - 1
                }
                Err(e) => {
                    eprintln!("xsched: {}: pid {} stays in the journal: {e:#}", record.domain_name(), record.pid);
                    failures += 1;
                    continue;
                }
            },
        };
        let (domain, actuator) = &mut domains[index];
        match release_one(domain, actuator, &mut journal, record) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("xsched: {e:#}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        bail!("{failures} parked task(s) could not be released; they stay in the journal");
    }
    if records.is_empty() {
        println!("nothing is parked");
    }
    Ok(())
}

/// The last reason to retry, after the colon that introduces it.
fn last(retry: Option<Retry>) -> String {
    retry.map(|why| format!(": {why}")).unwrap_or_default()
}
