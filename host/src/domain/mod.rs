//! Domains: the guests xsched watches, each with a stable id, its memory and its located kernel.

mod spec;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::linux::snapshot::{GuestSnapshot, SnapshotReader};
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::locate::KernelLocation;
use crate::linux::redo::RedoLog;
use crate::linux::{Kernel, LinuxError};
use crate::memory::{MemoryError, Pause, PauseMark, Paused};
use crate::profile::Profile;

pub use spec::{Backend, DomainSpec, Share};

/// How many times an idle vCPU with queued tasks is kicked before giving up for this round.
const KICK_ATTEMPTS: u32 = 10;
/// How long the guest runs after a kick before its runqueues are read again.
const KICK_SETTLE: Duration = Duration::from_millis(5);

/// A domain's stable id: its position on the command line, starting at 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct DomainId(pub u32);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a domain could not be attached or read.
#[derive(Debug, thiserror::Error)]
#[error("domain {name}: {source}")]
pub struct DomainError {
    /// The domain's name.
    pub name: String,
    /// What failed.
    #[source]
    pub source: LinuxError,
}

/// What a process holds of one domain, in memory it shares with its supervisor: all atomics,
/// so a zeroed mapping holds nothing.
#[repr(C)]
pub struct Hold {
    /// Set while the process may hold the domain paused.
    pub paused: AtomicBool,
    /// The batch of writes being made.
    pub redo: RedoLog,
}

/// A guest xsched is attached to.
pub struct Domain {
    /// Its stable id.
    pub id: DomainId,
    /// The user's name for it.
    pub name: String,
    /// The spec it was attached with.
    pub spec: DomainSpec,
    kernel: Kernel,
    reader: SnapshotReader,
    pause_mark: Option<PauseMark>,
    held_paused: Duration,
}

/// One snapshot of a domain and what it cost.
#[derive(Debug)]
pub struct DomainSnapshot {
    /// What was read.
    pub guest: GuestSnapshot,
    /// How long the guest was paused for it: from the pause taking effect to the resume having
    /// taken effect (zero for a domain that cannot pause, a core dump).
    pub pause: Duration,
    /// How long reading took, the part of the pause that is xsched's own work.
    pub read: Duration,
    /// Someone else held the guest paused: it was read as it is and left paused.
    pub held_by_others: bool,
}

impl Domain {
    /// Opens the domain's memory and finds its kernel among `profiles`.
    pub fn attach(id: DomainId, spec: &DomainSpec, profiles: Vec<Profile>) -> Result<Self, DomainError> {
        let error = |source: LinuxError| DomainError { name: spec.name.clone(), source };
        let mem = spec.open().map_err(|e| error(e.into()))?;
        let kernel = Kernel::attach(mem, profiles).map_err(error)?;
        let reader = SnapshotReader::for_kernel(&kernel).map_err(error)?;
        Ok(Self { id, name: spec.name.clone(), spec: spec.clone(), kernel, reader, pause_mark: None, held_paused: Duration::ZERO })
    }

    /// The located kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Publishes in `hold` what this process holds of the domain: whether it may hold a pause,
    /// and the batch of writes it is making. A supervising process that shares `hold` reads it
    /// after this process died, to finish the batch and undo the pause.
    pub fn publish_holds_in(&mut self, hold: &'static Hold) {
        self.pause_mark = Some(&hold.paused);
        self.kernel.record_writes_in(&hold.redo);
    }

    /// A domain attached earlier (by [`Domain::attach`], in this process or the one it forked
    /// from), opened again from its spec and the kernel found then, without a search of its RAM.
    pub fn reopen(id: DomainId, spec: &DomainSpec, profile: Profile, location: KernelLocation) -> Result<Self, DomainError> {
        let error = |source: LinuxError| DomainError { name: spec.name.clone(), source };
        let mem = spec.open().map_err(|e| error(e.into()))?;
        let kernel = Kernel::reopen(mem, profile, location).map_err(error)?;
        let reader = SnapshotReader::for_kernel(&kernel).map_err(error)?;
        Ok(Self { id, name: spec.name.clone(), spec: spec.clone(), kernel, reader, pause_mark: None, held_paused: Duration::ZERO })
    }

    /// Pauses the guest, reads every task and runqueue, and resumes it. A guest someone else
    /// paused is read as it is, and stays paused. Fails when what backs the guest's memory is no
    /// longer what was attached (a file that shrank or was replaced).
    pub fn snapshot(&mut self) -> Result<DomainSnapshot, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        let paused = Paused::take(&mut self.kernel, self.pause_mark).map_err(|e| error(e.into()))?;
        let held = paused.pause();
        let started = Instant::now();
        let guest = self.reader.read(&*paused);
        let read = started.elapsed();
        paused.end().map_err(|e| error(e.into()))?;
        let pause = if held == Pause::Taken { started.elapsed() } else { Duration::ZERO };
        self.held_paused += pause;
        // A mapped file that shrank or was replaced fails every read from then on: say so now,
        // rather than hand out a snapshot of holes.
        self.kernel.memory().check_backing().map_err(|e| error(e.into()))?;
        Ok(DomainSnapshot { guest, pause, read, held_by_others: held == Pause::HeldByOthers })
    }

    /// Reads every task and runqueue while the guest runs: no pause. What is read may be torn
    /// by the guest's own changes in between; a racy read is one more kind of hostile input,
    /// bounded and validated like any (problems make the snapshot partial). Every write
    /// re-validates what it relies on with the guest paused, so a racy read can make a decision
    /// late, never a write wrong: the scheduling loop reads this way.
    pub fn snapshot_running(&mut self) -> Result<DomainSnapshot, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        let started = Instant::now();
        let guest = self.reader.read(&self.kernel);
        let read = started.elapsed();
        self.kernel.memory().check_backing().map_err(|e| error(e.into()))?;
        Ok(DomainSnapshot { guest, pause: Duration::ZERO, read, held_by_others: false })
    }

    /// Runs `f` on the kernel with the guest paused, and resumes it; `f` learns who holds the
    /// guest still, and must not write into one someone else holds ([`Pause::HeldByOthers`]:
    /// an operator's snapshot or migration would miss the write, or catch half of it).
    pub fn with_paused<T>(&mut self, f: impl FnOnce(&mut Kernel, &SnapshotReader, Pause) -> Result<T, LinuxError>) -> Result<T, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        let mut paused = Paused::take(&mut self.kernel, self.pause_mark).map_err(|e| error(e.into()))?;
        let held = paused.pause();
        let started = Instant::now();
        let result = f(&mut paused, &self.reader, held);
        paused.end().map_err(|e| error(e.into()))?;
        if held == Pause::Taken {
            self.held_paused += started.elapsed();
        }
        result.map_err(error)
    }

    /// How long xsched has held this guest paused since it was attached, in all (from the pause
    /// taking effect to the resume having taken effect).
    pub fn held_paused(&self) -> Duration {
        self.held_paused
    }

    /// Pauses and resumes the guest doing nothing in between: the floor under the cost of every
    /// snapshot and change, and a health check.
    pub fn ping(&mut self) -> Result<Duration, DomainError> {
        let started = Instant::now();
        self.with_paused(|_, _, _| Ok(()))?;
        Ok(started.elapsed())
    }

    /// Gives back what a dead xsched process held of this domain, as its `hold` records: when
    /// the domain is paused, completes the batch of writes the process was making, then
    /// resumes it. Call it only when `hold` says the process may have held a pause (a domain
    /// paused by someone else looks the same from here). Says whether it resumed the domain.
    pub fn finish_abandoned(&mut self, hold: &Hold) -> Result<bool, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        if !self.kernel.memory_mut().is_paused().map_err(|e| error(e.into()))? {
            return Ok(false);
        }
        if let Some(writes) = hold.redo.pending() {
            log::warn!("domain {}: completing a batch of {} writes cut short", self.name, writes.len());
            self.kernel.write_batch(&writes).map_err(error)?;
            hold.redo.clear();
        }
        self.kernel.memory_mut().resume_abandoned().map_err(|e| error(e.into()))?;
        hold.paused.store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Interrupts the guest's vCPUs while one of them idles with tasks on its runqueue.
    ///
    /// The kick is an NMI, and an NMI that lands between the idle loop's last `need_resched()`
    /// check (interrupts off) and its `hlt` is taken before the `hlt`, which then sleeps anyway;
    /// so the runqueues are read again after each kick, a few times.
    pub fn wake_stalled_cpus(&mut self) -> Result<(), DomainError> {
        for _ in 0..KICK_ATTEMPTS {
            let stalled = self.with_paused(|k, reader, _| reader.stalled_cpus(&*k))?;
            if stalled.is_empty() {
                return Ok(());
            }
            log::debug!("domain {}: CPUs {stalled:?} idle with queued tasks: kicking", self.name);
            if !self.kick_if_safe()? {
                return Ok(());
            }
            std::thread::sleep(KICK_SETTLE);
        }
        log::debug!("domain {}: a CPU stays idle with queued tasks after {KICK_ATTEMPTS} kicks", self.name);
        Ok(())
    }

    /// Sends the kick unless the guest would panic on an unknown NMI; says whether it did.
    fn kick_if_safe(&mut self) -> Result<bool, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        let panics = ["unknown_nmi_panic", "panic_on_unrecovered_nmi"]
            .iter()
            .map(|s| self.kernel.symbol(s).and_then(|va| self.kernel.read_u32(va)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        if panics.iter().any(|&v| v != 0) {
            log::warn!("domain {}: not kicking an idle CPU: the guest panics on unknown NMIs", self.name);
            return Ok(false);
        }
        match self.kernel.memory_mut().kick() {
            Ok(()) => Ok(true),
            Err(MemoryError::Unsupported { .. }) => Ok(false),
            Err(e) => Err(error(e.into())),
        }
    }
}
