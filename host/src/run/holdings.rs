//! What a scheduling loop holds: its domains, their actuators, the journal, and the tasks it
//! parked — and the one way to change or give back any of it.
//!
//! Changes come per domain: all of one domain's parks and unparks of one period are journaled
//! with one write, made in one pause of the guest ([`Actuator::apply`]), and their releases
//! journaled with one more. The loop changes tasks through [`Holdings`]; so does the supervisor
//! that releases what a dead loop left parked ([`crate::supervise`]), from the same journal.

use crate::actuate::actuator::{release_reason, Actuator, BETWEEN_ROUNDS, RETRY_ROUNDS};
use crate::actuate::journal::{Journal, ParkRecord, ReleaseReason};
use crate::actuate::park::{Deferred, ParkOutcome, TaskIdentity};
use crate::domain::{Domain, DomainError};
use crate::memory::Gva;
use crate::table::TaskKey;

use super::RunStats;

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

    /// Makes one domain's changes in one pause: unparks the parked tasks `unpark` names, and
    /// parks the tasks `park` names (each with its `task_struct` address), journaled first.
    /// Counts what happened in `stats`.
    pub(super) fn change(&mut self, domain: usize, unpark: &[TaskKey], park: &[(TaskKey, u64)], stats: &mut RunStats) -> anyhow::Result<()> {
        let spec = self.domains[domain].spec.to_string();
        let unparks: Vec<(TaskKey, ParkRecord)> = unpark.iter().filter_map(|key| self.parked.iter().find(|(k, _)| k == key).cloned()).collect();
        let parks: Vec<(TaskKey, ParkRecord)> = park
            .iter()
            .map(|&(key, addr)| (key, ParkRecord { domain: spec.clone(), pid: key.pid, start_time: key.start_time, addr, saved_state: 0 }))
            .collect();
        if unparks.is_empty() && parks.is_empty() {
            return Ok(());
        }
        let park_records: Vec<ParkRecord> = parks.iter().map(|(_, r)| r.clone()).collect();
        self.journal.record_parks(&park_records)?;
        let identity = |key: &TaskKey, record: &ParkRecord| TaskIdentity { addr: Gva(record.addr), pid: key.pid, start_time: key.start_time };
        let outcomes = self.actuators[domain].apply(
            &mut self.domains[domain],
            &unparks.iter().map(|(k, r)| identity(k, r)).collect::<Vec<_>>(),
            &parks.iter().map(|(k, r)| identity(k, r)).collect::<Vec<_>>(),
        )?;

        let mut releases: Vec<(&ParkRecord, ReleaseReason)> = Vec::new();
        let mut refused = None;
        for ((key, record), outcome) in unparks.iter().zip(&outcomes.unparks) {
            let reason = match release_reason(outcome) {
                Ok(reason) => reason,
                Err(Deferred::Retry(why)) => {
                    log::debug!("pid {} not unparked yet: {why}", key.pid);
                    stats.deferred += 1;
                    continue;
                }
                Err(why) => {
                    refused.get_or_insert_with(|| format!("pid {} cannot be unparked: {why}", key.pid));
                    continue;
                }
            };
            if reason == ReleaseReason::Unparked {
                stats.unparks += 1;
            }
            releases.push((record, reason));
            self.parked.retain(|(k, _)| k != key);
        }
        for ((key, record), outcome) in parks.iter().zip(&outcomes.parks) {
            match outcome {
                ParkOutcome::Parked { .. } => {
                    stats.parks += 1;
                    self.parked.push((*key, record.clone()));
                }
                ParkOutcome::Deferred(d) => {
                    if !matches!(d, Deferred::Retry(_)) {
                        log::debug!("pid {} not parked: {d:?}", key.pid);
                    }
                    stats.deferred += 1;
                    releases.push((record, ReleaseReason::NotParked));
                }
            }
        }
        self.journal.record_releases(&releases)?;
        refused.map_or(Ok(()), |why| Err(anyhow::anyhow!(why)))
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

    /// Unparks everything held, one pause per domain a round, retrying briefly while a guest
    /// holds a lock (or someone else holds it paused); `progress` is called each round (a
    /// supervisor's heartbeat).
    pub fn release_all(&mut self, stats: &mut RunStats, mut progress: impl FnMut()) -> anyhow::Result<()> {
        for _ in 0..RETRY_ROUNDS {
            for domain in 0..self.domains.len() {
                let id = self.domains[domain].id;
                let keys: Vec<TaskKey> = self.parked.iter().map(|(k, _)| *k).filter(|k| k.domain == id).collect();
                self.change(domain, &keys, &[], stats)?;
            }
            if self.parked.is_empty() {
                return Ok(());
            }
            progress();
            std::thread::sleep(BETWEEN_ROUNDS);
        }
        anyhow::bail!("{} task(s) stay parked (in the journal: run `xsched release --all`)", self.parked.len())
    }
}
