//! The scheduling loop: every period, read all domains into one task table, ask the policy for
//! a global ranking, and park or unpark tasks so that the ranking holds.
//!
//! Every park is journaled before it is written. Whatever ends the loop — a stop signal (see
//! [`crate::interrupt`]), a policy error, a guest error — every task parked by this loop is
//! released before [`Scheduler::run`] returns; tasks an earlier, crashed xsched left parked in
//! these domains are released when the loop starts. What a loop cannot do itself, because it
//! died, its supervisor does ([`crate::supervise`]).

pub mod admit;
pub mod holdings;
pub mod trace;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actuate::journal::Journal;
use crate::domain::{Domain, DomainError};
use crate::interrupt::{self, Critical};
use crate::table::{TaskKey, TaskTable};

pub use admit::{admit, Plan, Ranked};
pub use holdings::Holdings;

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

/// Flags the loop watches, set from signal handlers (stop signals are [`crate::interrupt`]'s).
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// Reload the policy's configuration.
    pub reload: Arc<AtomicBool>,
}

/// The loop's state: what it holds, its policy, and its counters.
pub struct Scheduler<R> {
    holdings: Holdings,
    ranker: R,
    period: Duration,
    host_cpus: u32,
    stats: RunStats,
    heartbeat: Option<&'static AtomicU64>,
}

impl<R: Ranker> Scheduler<R> {
    /// A scheduler over `domains` (ids must be their positions), journaling to `journal`.
    pub fn new(domains: Vec<Domain>, journal: Journal, ranker: R, period: Duration, host_cpus: u32) -> Result<Self, DomainError> {
        Ok(Self { holdings: Holdings::new(domains, journal)?, ranker, period, host_cpus, stats: RunStats::default(), heartbeat: None })
    }

    /// Counts every period and every round of releasing in `counter`, for a supervisor that
    /// takes a counter that stops moving for a stalled loop.
    pub fn beat_into(&mut self, counter: &'static AtomicU64) {
        self.heartbeat = Some(counter);
    }

    /// The counters so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Runs until a stop signal arrives, `periods` periods have passed, or `on_period` breaks,
    /// then releases every parked task. A policy or guest error also ends the loop (after the
    /// release). After each period, `on_period` gets the moment the period began (its
    /// snapshot), the table, the plan and the counters; breaking ends the loop with its error.
    ///
    /// The loop is one [`Critical`] section: a stop signal ends it at the next period, and is
    /// taken as handled once everything is released.
    pub fn run(
        &mut self,
        signals: &Signals,
        periods: Option<u64>,
        mut on_period: impl FnMut(Instant, &TaskTable, &Plan, &RunStats) -> ControlFlow<anyhow::Error>,
    ) -> anyhow::Result<()> {
        let _critical = Critical::enter();
        self.holdings.adopt_leftovers();
        let result = self.release().and_then(|()| self.periods(signals, periods, &mut on_period));
        let released = self.release();
        interrupt::take_request();
        result.and(released)
    }

    fn release(&mut self) -> anyhow::Result<()> {
        let heartbeat = self.heartbeat;
        self.holdings.release_all(&mut self.stats, || beat(heartbeat))
    }

    fn periods(&mut self, signals: &Signals, periods: Option<u64>, on_period: &mut impl FnMut(Instant, &TaskTable, &Plan, &RunStats) -> ControlFlow<anyhow::Error>) -> anyhow::Result<()> {
        let mut previous: Option<(TaskTable, Instant)> = None;
        while !interrupt::requested() && periods.is_none_or(|n| self.stats.periods < n) {
            let started = Instant::now();
            beat(self.heartbeat);
            if signals.reload.swap(false, Ordering::Relaxed) {
                match self.ranker.reload() {
                    Ok(()) => log::info!("policy configuration reloaded"),
                    Err(e) => log::error!("policy configuration not reloaded: {e}"),
                }
            }
            let table = self.read(previous.as_ref().map(|(t, at)| (t, started - *at)))?;
            // Before planning: the table was read after the previous period's parks.
            self.forget_vanished(&table)?;
            let parked: HashSet<TaskKey> = self.holdings.parked.iter().map(|(k, _)| *k).collect();
            let ranking = self.ranker.rank(&table, &parked, self.period, self.host_cpus).map_err(|e| anyhow::anyhow!("policy failed: {e}"))?;
            let plan = admit(&table, &ranking, &parked, self.host_cpus);
            self.apply(&table, &plan)?;
            self.stats.periods += 1;
            if started.elapsed() > self.period {
                self.stats.overruns += 1;
            }
            if let ControlFlow::Break(error) = on_period(started, &table, &plan, &self.stats) {
                return Err(error);
            }
            previous = Some((table, started));
            std::thread::sleep(self.period.saturating_sub(started.elapsed()));
        }
        Ok(())
    }

    /// One pass over all domains.
    fn read(&mut self, previous: Option<(&TaskTable, Duration)>) -> anyhow::Result<TaskTable> {
        let mut snaps = Vec::with_capacity(self.holdings.domains.len());
        for d in &mut self.holdings.domains {
            snaps.push(d.snapshot()?);
        }
        let pass: Vec<(&Domain, _)> = self.holdings.domains.iter().zip(snaps).collect();
        Ok(TaskTable::build(&pass, previous))
    }

    fn apply(&mut self, table: &TaskTable, plan: &Plan) -> anyhow::Result<()> {
        for key in &plan.unpark {
            if let Some(i) = self.holdings.parked.iter().position(|(k, _)| k == key) {
                self.holdings.unpark(i, &mut self.stats)?;
            }
        }
        for key in &plan.park {
            if let Some(entry) = table.tasks.iter().find(|t| t.key == *key) {
                self.holdings.park(*key, entry.task_addr, &mut self.stats)?;
            }
        }
        Ok(())
    }

    /// Drops parked tasks that exited (SIGKILL wakes a parked task) or lost their park.
    fn forget_vanished(&mut self, table: &TaskTable) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.holdings.parked.len() {
            let key = self.holdings.parked[i].0;
            match table.tasks.iter().find(|t| t.key == key) {
                Some(t) if t.parked => i += 1,
                // Not parked any more (killed and gone, or the task undid the park): re-plan it.
                _ => self.holdings.forget(i, "gone or no longer parked")?,
            }
        }
        Ok(())
    }
}

fn beat(heartbeat: Option<&AtomicU64>) {
    if let Some(counter) = heartbeat {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
