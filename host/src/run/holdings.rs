//! What a scheduling loop holds: its domains, their actuators, the journal, and the tasks it
//! parked — and the one way to give all of it back.
//!
//! The loop parks and unparks through [`Holdings`]; so does the supervisor that releases what a
//! dead loop left parked ([`crate::supervise`]), from the same journal.

use std::time::Duration;

use crate::actuate::actuator::Actuator;
use crate::actuate::journal::{Journal, ParkRecord};
use crate::actuate::park::{Deferred, ParkOutcome, TaskIdentity, UnparkOutcome};
use crate::domain::{Domain, DomainError};
use crate::memory::Gva;
use crate::table::TaskKey;

use super::RunStats;

/// Rounds of [`Holdings::release_all`] before it gives up (and leaves the journal to
/// `xsched release --all`).
const RELEASE_ATTEMPTS: u32 = 500;
/// Pause between rounds of [`Holdings::release_all`].
const BETWEEN_RELEASE_ROUNDS: Duration = Duration::from_millis(2);

/// Domains, their actuators, the journal and the parked tasks.
pub struct Holdings {
    /// Ids are positions.
    pub(super) domains: Vec<Domain>,
    /// One per domain, in the same order.
    actuators: Vec<Actuator>,
    journal: Journal,
    /// What is parked, each with its journal record.
    pub(super) parked: Vec<(TaskKey, ParkRecord)>,
}

impl Holdings {
    /// Holdings over `domains` (ids must be their positions), journaling to `journal`.
    pub fn new(domains: Vec<Domain>, journal: Journal) -> Result<Self, DomainError> {
        let actuators = domains.iter().map(Actuator::for_domain).collect::<Result<_, _>>()?;
        Ok(Self { domains, actuators, journal, parked: Vec::new() })
    }

    /// Parks the task `key` at `task_addr`, journaled first; counts it in `stats`.
    pub(super) fn park(&mut self, key: TaskKey, task_addr: u64, stats: &mut RunStats) -> anyhow::Result<()> {
        let index = key.domain.0 as usize;
        let domain = &mut self.domains[index];
        let task = TaskIdentity { addr: Gva(task_addr), pid: key.pid, start_time: key.start_time };
        let record = ParkRecord { domain: domain.spec.to_string(), pid: key.pid, start_time: key.start_time, addr: task_addr, saved_state: 0 };
        self.journal.record_park(record.clone())?;
        match self.actuators[index].park(domain, &task)? {
            ParkOutcome::Parked { .. } => {
                stats.parks += 1;
                self.parked.push((key, record));
            }
            ParkOutcome::Deferred(d) => {
                if !matches!(d, Deferred::Retry(_)) {
                    log::debug!("pid {} not parked: {d:?}", key.pid);
                }
                stats.deferred += 1;
                self.journal.record_release(&record, "not parked")?;
            }
        }
        Ok(())
    }

    /// Unparks `self.parked[i]`; true when it is released now (unparked, or found gone), false
    /// when deferred.
    pub(super) fn unpark(&mut self, i: usize, stats: &mut RunStats) -> anyhow::Result<bool> {
        let (key, record) = self.parked[i].clone();
        let task = TaskIdentity { addr: Gva(record.addr), pid: key.pid, start_time: key.start_time };
        let index = key.domain.0 as usize;
        let reason = match self.actuators[index].unpark(&mut self.domains[index], &task)? {
            UnparkOutcome::Unparked { .. } => "unparked",
            UnparkOutcome::NotParked { .. } => "no longer parked",
            UnparkOutcome::Deferred(Deferred::Gone) => "gone",
            UnparkOutcome::Deferred(Deferred::Retry(why)) => {
                log::debug!("pid {} not unparked yet: {why}", key.pid);
                stats.deferred += 1;
                return Ok(false);
            }
            UnparkOutcome::Deferred(Deferred::Refused(why)) => anyhow::bail!("pid {} cannot be unparked: {why}", key.pid),
        };
        self.journal.record_release(&record, reason)?;
        self.parked.remove(i);
        if reason == "unparked" {
            stats.unparks += 1;
        }
        Ok(true)
    }

    /// Forgets `self.parked[i]` (it exited, or lost its park), journaling why.
    pub(super) fn forget(&mut self, i: usize, reason: &str) -> anyhow::Result<()> {
        let (_, record) = self.parked.remove(i);
        self.journal.record_release(&record, reason)?;
        Ok(())
    }

    /// Takes on what the journal holds parked in these domains: tasks an earlier xsched left.
    pub fn adopt_leftovers(&mut self) {
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
    }

    /// Unparks everything held, retrying briefly while a guest holds a lock (or someone else
    /// holds it paused); `progress` is called each round (a supervisor's heartbeat).
    pub fn release_all(&mut self, stats: &mut RunStats, mut progress: impl FnMut()) -> anyhow::Result<()> {
        for _ in 0..RELEASE_ATTEMPTS {
            let mut i = 0;
            while i < self.parked.len() {
                if !self.unpark(i, stats)? {
                    i += 1;
                }
            }
            if self.parked.is_empty() {
                return Ok(());
            }
            progress();
            std::thread::sleep(BETWEEN_RELEASE_ROUNDS);
        }
        anyhow::bail!("{} task(s) stay parked (in the journal: run `xsched release --all`)", self.parked.len())
    }
}
