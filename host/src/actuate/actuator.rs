//! The write side of one attached domain: parks and unparks its tasks, each with the guest
//! paused, and kicks an idle vCPU that has to notice an unparked task.
//!
//! The domain knows how to pause, read and kick its guest; the layouts of what is written live
//! here, resolved once per domain from its kernel's profile.

use std::time::Duration;

use crate::domain::{Domain, DomainError};
use crate::memory::Pause;

use super::journal::ReleaseReason;

use super::park::{park, unpark, Deferred, ParkLayout, ParkOutcome, Retry, TaskIdentity, UnparkOutcome};

/// How many rounds a park or unpark is tried while the guest holds a lock it needs (or someone
/// else holds it paused) before it is given up: with [`BETWEEN_ROUNDS`] between rounds, at
/// least a second of the guest's own time to let go, where its locks are held for microseconds.
/// The one budget of `xsched park`, `unpark` and `release` and of the loop's release on exit.
pub const RETRY_ROUNDS: u32 = 500;
/// The guest runs this long between rounds, to release its locks.
pub const BETWEEN_ROUNDS: Duration = Duration::from_millis(2);

/// How the journal records an unpark's outcome: the reason the task left it, or the deferral
/// that keeps it there (to retry, or refused).
pub fn release_reason(outcome: &UnparkOutcome) -> Result<ReleaseReason, &Deferred> {
    match outcome {
        UnparkOutcome::Unparked { .. } => Ok(ReleaseReason::Unparked),
        UnparkOutcome::NotParked { .. } => Ok(ReleaseReason::NoLongerParked),
        UnparkOutcome::Deferred(Deferred::Gone) => Ok(ReleaseReason::Gone),
        UnparkOutcome::Deferred(d) => Err(d),
    }
}

/// What [`Actuator::apply`] did, in the order it was asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// One per task to unpark.
    pub unparks: Vec<UnparkOutcome>,
    /// One per task to park.
    pub parks: Vec<ParkOutcome>,
}

/// Parks and unparks the tasks of one domain.
#[derive(Debug)]
pub struct Actuator {
    layout: ParkLayout,
}

impl Actuator {
    /// The actuator for `domain`'s kernel.
    pub fn for_domain(domain: &Domain) -> Result<Self, DomainError> {
        let kernel = domain.kernel();
        let location = kernel.location();
        let layout = ParkLayout::new(kernel.profile(), location.virt_shift, location.per_cpu_offsets.clone())
            .map_err(|source| DomainError { name: domain.name.clone(), source })?;
        Ok(Self { layout })
    }

    /// Whether `state` is the state xsched gives a parked task.
    pub fn is_parked_state(&self, state: u32) -> bool {
        self.layout.is_parked(state)
    }

    /// Unparks `unparks` and then parks `parks`, all in one pause of the guest: what one period
    /// of the loop asks of one domain costs one stop and one resume however many tasks it
    /// moves. Nothing is written into a guest someone else holds paused: every change waits
    /// until it runs again. Idle vCPUs that must notice an unparked task are interrupted
    /// afterwards (see [`Domain::wake_stalled_cpus`]).
    pub fn apply(&self, domain: &mut Domain, unparks: &[TaskIdentity], parks: &[TaskIdentity]) -> Result<Outcomes, DomainError> {
        if unparks.is_empty() && parks.is_empty() {
            return Ok(Outcomes::default());
        }
        let outcomes = domain.with_paused(|k, _, pause| {
            if pause == Pause::HeldByOthers {
                return Ok(Outcomes {
                    unparks: unparks.iter().map(|_| UnparkOutcome::Deferred(held_by_others())).collect(),
                    parks: parks.iter().map(|_| ParkOutcome::Deferred(held_by_others())).collect(),
                });
            }
            Ok(Outcomes {
                unparks: unparks.iter().map(|task| unpark(k, &self.layout, task)).collect::<Result<_, _>>()?,
                parks: parks.iter().map(|task| park(k, &self.layout, task)).collect::<Result<_, _>>()?,
            })
        })?;
        let kick = outcomes.unparks.iter().any(|o| matches!(o, UnparkOutcome::Unparked { cpu_idle: true, .. } | UnparkOutcome::Deferred(Deferred::Retry(_))));
        if kick {
            domain.wake_stalled_cpus()?;
        }
        Ok(outcomes)
    }

    /// Parks `task` (see [`super::park`]), pausing the guest for it. Nothing is written into a
    /// guest someone else holds paused: the park waits until it runs again.
    pub fn park(&self, domain: &mut Domain, task: &TaskIdentity) -> Result<ParkOutcome, DomainError> {
        domain.with_paused(|k, _, pause| match pause {
            Pause::HeldByOthers => Ok(ParkOutcome::Deferred(held_by_others())),
            Pause::Taken | Pause::Still => park(k, &self.layout, task),
        })
    }

    /// Unparks `task`, pausing the guest for it (and waiting, as a park does, while someone else
    /// holds it paused). When the task's CPU is idle its vCPUs are interrupted (see
    /// [`Domain::wake_stalled_cpus`]) so that it notices the task at once.
    pub fn unpark(&self, domain: &mut Domain, task: &TaskIdentity) -> Result<UnparkOutcome, DomainError> {
        let outcome = domain.with_paused(|k, _, pause| match pause {
            Pause::HeldByOthers => Ok(UnparkOutcome::Deferred(held_by_others())),
            Pause::Taken | Pause::Still => unpark(k, &self.layout, task),
        })?;
        if matches!(outcome, UnparkOutcome::Unparked { cpu_idle: true, .. } | UnparkOutcome::Deferred(Deferred::Retry(_))) {
            domain.wake_stalled_cpus()?;
        }
        Ok(outcome)
    }
}

/// Why nothing is written into a domain someone else paused.
fn held_by_others() -> Deferred {
    Deferred::Retry(Retry::HeldByOthers)
}
