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
pub mod metrics;
pub mod share;
pub mod trace;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actuate::journal::Journal;
use crate::domain::{Domain, DomainError};
use crate::interrupt::{self, Critical};
use crate::policy::{Ranked, Ranker};
use crate::table::{DomainFacts, TaskKey, TaskTable};

pub use admit::{admit, admit_within, Plan};
pub use holdings::Holdings;

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

/// What one period saw and did, for whoever watches the loop (the trace, the summary line, the
/// metrics).
#[derive(Clone, Copy, Debug)]
pub struct PeriodReport<'a> {
    /// When the period began (its snapshot).
    pub started: Instant,
    /// The table read.
    pub table: &'a TaskTable,
    /// The policy's ranking of it.
    pub ranking: &'a [Ranked],
    /// What the loop changed, or kept.
    pub plan: &'a Plan,
    /// The run's counters so far.
    pub stats: &'a RunStats,
    /// Per domain, in id order: how long xsched has held it paused in all ([`Domain::held_paused`]).
    pub held_paused: &'a [Duration],
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
    shares: share::Shares,
    ranker: R,
    period: Duration,
    host_cpus: u32,
    stats: RunStats,
    heartbeat: Option<&'static AtomicU64>,
}

impl<R: Ranker> Scheduler<R> {
    /// A scheduler over `domains` (ids must be their positions), journaling to `journal`; each
    /// domain's floor and cap come from its spec.
    pub fn new(domains: Vec<Domain>, journal: Journal, ranker: R, period: Duration, host_cpus: u32) -> Result<Self, DomainError> {
        let shares = share::Shares::of(domains.iter().map(|d| (d.id, d.spec.share)));
        Ok(Self { holdings: Holdings::new(domains, journal)?, shares, ranker, period, host_cpus, stats: RunStats::default(), heartbeat: None })
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
    /// release). After each period, `on_period` gets its [`PeriodReport`]; breaking ends the
    /// loop with its error.
    ///
    /// The loop is one [`Critical`] section: a stop signal ends it at the next period, and is
    /// taken as handled once everything is released.
    pub fn run(
        &mut self,
        signals: &Signals,
        periods: Option<u64>,
        mut on_period: impl FnMut(&PeriodReport<'_>) -> ControlFlow<anyhow::Error>,
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

    fn periods(&mut self, signals: &Signals, periods: Option<u64>, on_period: &mut impl FnMut(&PeriodReport<'_>) -> ControlFlow<anyhow::Error>) -> anyhow::Result<()> {
        let mut table = TaskTable::default();
        let mut held_paused = Vec::with_capacity(self.holdings.domains.len());
        let mut previous_start: Option<Instant> = None;
        while !interrupt::requested() && periods.is_none_or(|n| self.stats.periods < n) {
            let started = Instant::now();
            beat(self.heartbeat);
            if signals.reload.swap(false, Ordering::Relaxed) {
                match self.ranker.reload() {
                    Ok(()) => log::info!("policy configuration reloaded"),
                    Err(e) => log::error!("policy configuration not reloaded: {e}"),
                }
            }
            self.read_into(&mut table, previous_start.map(|at| started - at))?;
            let parked: HashSet<TaskKey> = self.holdings.parked.iter().map(|(k, _)| *k).collect();
            let ranking = self.ranker.rank(&table, &parked, self.period, self.host_cpus).map_err(|e| anyhow::Error::new(e).context("policy failed"))?;
            let plan = admit_within(&table, &ranking, &parked, self.host_cpus, &mut self.shares);
            self.apply(&table, &plan, &parked)?;
            self.stats.periods += 1;
            if started.elapsed() > self.period {
                self.stats.overruns += 1;
            }
            held_paused.clear();
            held_paused.extend(self.holdings.domains.iter().map(Domain::held_paused));
            let report = PeriodReport { started, table: &table, ranking: &ranking, plan: &plan, stats: &self.stats, held_paused: &held_paused };
            if let ControlFlow::Break(error) = on_period(&report) {
                return Err(error);
            }
            previous_start = Some(started);
            std::thread::sleep(self.period.saturating_sub(started.elapsed()));
        }
        Ok(())
    }

    /// One pass over all domains, read while they run ([`Domain::snapshot_running`]), made the
    /// contents of `table` in place (the previous pass, taken `elapsed` earlier, gives the CPU use).
    fn read_into(&mut self, table: &mut TaskTable, elapsed: Option<Duration>) -> anyhow::Result<()> {
        let mut snaps = Vec::with_capacity(self.holdings.domains.len());
        for d in &mut self.holdings.domains {
            snaps.push(d.snapshot_running()?);
        }
        let pass: Vec<_> = self.holdings.domains.iter().zip(&snaps).map(|(d, snap)| (DomainFacts::of(d.id, &d.name, d.kernel()), snap)).collect();
        table.rebuild_from(&pass, elapsed);
        Ok(())
    }

    /// Makes the plan's changes, each domain's in one pause (none for a domain with nothing to
    /// change). A parked task that a complete reading of its domain no longer shows parked
    /// (SIGKILL woke it and it exited, or it undid the park) is unparked too: the unpark checks
    /// it with the guest paused and releases it whatever it finds.
    fn apply(&mut self, table: &TaskTable, plan: &Plan, parked: &HashSet<TaskKey>) -> anyhow::Result<()> {
        // One pass over the table for what the changes need: the parked tasks it still shows
        // parked, and the address of each task to park. None when nothing is parked or to park
        // (a steady state with nothing held): that period costs nothing here.
        let to_park: HashSet<TaskKey> = plan.park.iter().copied().collect();
        let mut shown_parked: HashSet<TaskKey> = HashSet::new();
        let mut park_addrs: Vec<(TaskKey, u64)> = Vec::with_capacity(plan.park.len());
        if !parked.is_empty() || !to_park.is_empty() {
            for t in &table.tasks {
                if t.parked && parked.contains(&t.key) {
                    shown_parked.insert(t.key);
                }
                if !to_park.is_empty() && to_park.contains(&t.key) {
                    park_addrs.push((t.key, t.task_addr));
                }
            }
        }
        let unparking: HashSet<TaskKey> = plan.unpark.iter().copied().collect();
        for index in 0..self.holdings.domains.len() {
            let id = self.holdings.domains[index].id;
            let complete = table.domains.iter().any(|d| d.id == id && d.problems.is_empty());
            let vanished = parked.iter().filter(|k| k.domain == id && complete && !unparking.contains(k) && !shown_parked.contains(k));
            let unpark: Vec<TaskKey> = plan.unpark.iter().filter(|k| k.domain == id && parked.contains(k)).chain(vanished).copied().collect();
            let park: Vec<(TaskKey, u64)> = park_addrs.iter().filter(|(k, _)| k.domain == id).copied().collect();
            self.holdings.change(index, &unpark, &park, &mut self.stats)?;
        }
        Ok(())
    }
}

fn beat(heartbeat: Option<&AtomicU64>) {
    if let Some(counter) = heartbeat {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
