//! The scheduling loop: every period, read all domains into one task table, ask the policy for
//! a global ranking, and park or unpark tasks so that the ranking holds.
//!
//! Every park is journaled before it is written. Whatever ends the loop — a stop request
//! (SIGINT/SIGTERM), a policy error, a guest error — every task parked by this loop is released
//! before [`Scheduler::run`] returns; tasks an earlier, crashed xsched left parked in these
//! domains are released when the loop starts.

pub mod admit;
pub mod trace;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actuate::actuator::Actuator;
use crate::actuate::journal::{Journal, ParkRecord};
use crate::actuate::park::{Deferred, ParkOutcome, TaskIdentity, UnparkOutcome};
use crate::domain::{Domain, DomainError};
use crate::memory::Gva;
use crate::table::{TaskKey, TaskTable};

pub use admit::{admit, Plan, Ranked};

/// What ranks tasks each period: a policy plugin, seen from the loop.
pub trait Ranker {
    /// Ranks the tasks of `table`; `parked` are the ones xsched holds parked.
    fn rank(&mut self, table: &TaskTable, parked: &HashSet<TaskKey>, period: Duration, host_cpus: u32) -> Result<Vec<Ranked>, String>;

    /// Re-reads the policy's configuration (on SIGHUP).
    fn reload(&mut self) -> Result<(), String>;
}

/// Counters of one run, for the periodic summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Periods completed.
    pub periods: u64,
    /// Periods that took longer than the period.
    pub overruns: u64,
    /// Parks written.
    pub parks: u64,
    /// Unparks written.
    pub unparks: u64,
    /// Operations put off to a later period (a lock held, a task still switching).
    pub deferred: u64,
}

/// Flags the loop watches, set from signal handlers.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// Stop and release everything.
    pub stop: Arc<AtomicBool>,
    /// Reload the policy's configuration.
    pub reload: Arc<AtomicBool>,
}

/// The loop's state: domains, journal, policy, and what it holds parked.
pub struct Scheduler<R> {
    domains: Vec<Domain>,
    /// One per domain, in the same order.
    actuators: Vec<Actuator>,
    journal: Journal,
    ranker: R,
    period: Duration,
    host_cpus: u32,
    parked: Vec<(TaskKey, ParkRecord)>,
    stats: RunStats,
}

impl<R: Ranker> Scheduler<R> {
    /// A scheduler over `domains` (ids must be their positions), journaling to `journal`.
    pub fn new(domains: Vec<Domain>, journal: Journal, ranker: R, period: Duration, host_cpus: u32) -> Result<Self, DomainError> {
        let actuators = domains.iter().map(Actuator::for_domain).collect::<Result<_, _>>()?;
        Ok(Self { domains, actuators, journal, ranker, period, host_cpus, parked: Vec::new(), stats: RunStats::default() })
    }

    /// The counters so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Runs until `signals.stop` is set or `periods` periods have passed, then releases every
    /// parked task. A policy or guest error also ends the loop (after the release). After each
    /// period, `on_period` gets the moment the period began (its snapshot), the table, the plan
    /// and the counters.
    pub fn run(&mut self, signals: &Signals, periods: Option<u64>, mut on_period: impl FnMut(Instant, &TaskTable, &Plan, &RunStats)) -> anyhow::Result<()> {
        self.release_leftovers()?;
        let result = self.periods(signals, periods, &mut on_period);
        let released = self.release_all();
        result.and(released)
    }

    fn periods(&mut self, signals: &Signals, periods: Option<u64>, on_period: &mut impl FnMut(Instant, &TaskTable, &Plan, &RunStats)) -> anyhow::Result<()> {
        let mut previous: Option<(TaskTable, Instant)> = None;
        while !signals.stop.load(Ordering::Relaxed) && periods.is_none_or(|n| self.stats.periods < n) {
            let started = Instant::now();
            if signals.reload.swap(false, Ordering::Relaxed) {
                match self.ranker.reload() {
                    Ok(()) => log::info!("policy configuration reloaded"),
                    Err(e) => log::error!("policy configuration not reloaded: {e}"),
                }
            }
            let table = self.read(previous.as_ref().map(|(t, at)| (t, started - *at)))?;
            // Before planning: the table was read after the previous period's parks.
            self.forget_vanished(&table)?;
            let parked: HashSet<TaskKey> = self.parked.iter().map(|(k, _)| *k).collect();
            let ranking = self.ranker.rank(&table, &parked, self.period, self.host_cpus).map_err(|e| anyhow::anyhow!("policy failed: {e}"))?;
            let plan = admit(&table, &ranking, &parked, self.host_cpus);
            self.apply(&table, &plan)?;
            self.stats.periods += 1;
            if started.elapsed() > self.period {
                self.stats.overruns += 1;
            }
            on_period(started, &table, &plan, &self.stats);
            previous = Some((table, started));
            std::thread::sleep(self.period.saturating_sub(started.elapsed()));
        }
        Ok(())
    }

    /// One pass over all domains.
    fn read(&mut self, previous: Option<(&TaskTable, Duration)>) -> anyhow::Result<TaskTable> {
        let mut snaps = Vec::with_capacity(self.domains.len());
        for d in &mut self.domains {
            snaps.push(d.snapshot()?);
        }
        let pass: Vec<(&Domain, _)> = self.domains.iter().zip(snaps).collect();
        Ok(TaskTable::build(&pass, previous))
    }

    fn apply(&mut self, table: &TaskTable, plan: &Plan) -> anyhow::Result<()> {
        for key in &plan.unpark {
            if let Some(i) = self.parked.iter().position(|(k, _)| k == key) {
                if self.unpark(i)? {
                    self.stats.unparks += 1;
                }
            }
        }
        for key in &plan.park {
            let Some(entry) = table.tasks.iter().find(|t| t.key == *key) else { continue };
            let index = key.domain.0 as usize;
            let domain = &mut self.domains[index];
            let task = TaskIdentity { addr: Gva(entry.task_addr), pid: key.pid, start_time: key.start_time };
            let record = ParkRecord { domain: domain.spec.to_string(), pid: key.pid, start_time: key.start_time, addr: entry.task_addr, saved_state: 0 };
            self.journal.record_park(record.clone())?;
            match self.actuators[index].park(domain, &task)? {
                ParkOutcome::Parked { .. } => {
                    self.stats.parks += 1;
                    self.parked.push((*key, record));
                }
                ParkOutcome::Deferred(d) => {
                    if !matches!(d, Deferred::Retry(_)) {
                        log::debug!("pid {} not parked: {d:?}", key.pid);
                    }
                    self.stats.deferred += 1;
                    self.journal.record_release(&record, "not parked")?;
                }
            }
        }
        Ok(())
    }

    /// Unparks `self.parked[i]`; true when it was unparked now, false when deferred.
    fn unpark(&mut self, i: usize) -> anyhow::Result<bool> {
        let (key, record) = self.parked[i].clone();
        let task = TaskIdentity { addr: Gva(record.addr), pid: key.pid, start_time: key.start_time };
        let index = key.domain.0 as usize;
        let reason = match self.actuators[index].unpark(&mut self.domains[index], &task)? {
            UnparkOutcome::Unparked { .. } => "unparked",
            UnparkOutcome::NotParked { .. } => "no longer parked",
            UnparkOutcome::Deferred(Deferred::Gone) => "gone",
            UnparkOutcome::Deferred(Deferred::Retry(_)) => {
                self.stats.deferred += 1;
                return Ok(false);
            }
            UnparkOutcome::Deferred(Deferred::Refused(why)) => anyhow::bail!("pid {} cannot be unparked: {why}", key.pid),
        };
        self.journal.record_release(&record, reason)?;
        self.parked.remove(i);
        Ok(reason == "unparked")
    }

    /// Drops parked tasks that exited (SIGKILL wakes a parked task) or lost their park.
    fn forget_vanished(&mut self, table: &TaskTable) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.parked.len() {
            let key = self.parked[i].0;
            match table.tasks.iter().find(|t| t.key == key) {
                Some(t) if t.parked => i += 1,
                // Not parked any more (killed and gone, or the task undid the park): re-plan it.
                _ => {
                    let (_, record) = self.parked.remove(i);
                    self.journal.record_release(&record, "gone or no longer parked")?;
                }
            }
        }
        Ok(())
    }

    /// Unparks everything this loop parked, retrying briefly while the guest holds a lock.
    fn release_all(&mut self) -> anyhow::Result<()> {
        for _ in 0..RELEASE_ATTEMPTS {
            let mut i = 0;
            while i < self.parked.len() {
                if !self.unpark(i)? {
                    i += 1;
                }
            }
            if self.parked.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        anyhow::bail!("{} task(s) stay parked (in the journal: run `xsched release --all`)", self.parked.len())
    }

    /// Resumes domains an earlier, killed xsched left paused and releases what the journal holds
    /// for these domains.
    fn release_leftovers(&mut self) -> anyhow::Result<()> {
        for d in &mut self.domains {
            d.resume_if_paused()?;
        }
        let leftovers: Vec<ParkRecord> = self
            .journal
            .parked()
            .filter(|r| self.domains.iter().any(|d| d.name == r.domain_name()))
            .cloned()
            .collect();
        for record in leftovers {
            let Some(d) = self.domains.iter().position(|d| d.name == record.domain_name()) else { continue };
            log::warn!("releasing pid {} in {}, left parked by an earlier xsched", record.pid, record.domain_name());
            let key = TaskKey { domain: self.domains[d].id, pid: record.pid, start_time: record.start_time };
            self.parked.push((key, record));
        }
        self.release_all()
    }
}

/// Rounds of [`Scheduler::release_all`] before it gives up (and leaves the journal to
/// `xsched release --all`).
const RELEASE_ATTEMPTS: u32 = 500;
