//! Domains: the guests xsched watches, each with a stable id, its memory and its located kernel.

mod spec;

use std::fmt;
use std::time::{Duration, Instant};

use crate::linux::snapshot::{GuestSnapshot, SnapshotReader};
use crate::linux::{Kernel, LinuxError};
use crate::memory::MemoryError;
use crate::profile::Profile;

pub use spec::{Backend, DomainSpec};

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

/// A guest xsched is attached to.
pub struct Domain {
    /// Its stable id.
    pub id: DomainId,
    /// The user's name for it.
    pub name: String,
    kernel: Kernel,
    reader: SnapshotReader,
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
}

impl Domain {
    /// Opens the domain's memory and finds its kernel among `profiles`.
    pub fn attach(id: DomainId, spec: &DomainSpec, profiles: Vec<Profile>) -> Result<Self, DomainError> {
        let error = |source: LinuxError| DomainError { name: spec.name.clone(), source };
        let mem = spec.open().map_err(|e| error(e.into()))?;
        let kernel = Kernel::attach(mem, profiles).map_err(error)?;
        let reader = SnapshotReader::for_kernel(&kernel).map_err(error)?;
        Ok(Self { id, name: spec.name.clone(), kernel, reader })
    }

    /// The located kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Pauses the guest, reads every task and runqueue, and resumes it.
    pub fn snapshot(&mut self) -> Result<DomainSnapshot, DomainError> {
        let error = |source: LinuxError| DomainError { name: self.name.clone(), source };
        let paused = match self.kernel.memory_mut().pause() {
            Ok(()) => true,
            // A core dump is still by nature.
            Err(MemoryError::Unsupported { .. }) => false,
            Err(e) => return Err(error(e.into())),
        };
        let started = Instant::now();
        let guest = self.reader.read(&self.kernel);
        let read = started.elapsed();
        if paused {
            self.kernel.memory_mut().resume().map_err(|e| error(e.into()))?;
        }
        let pause = if paused { started.elapsed() } else { Duration::ZERO };
        Ok(DomainSnapshot { guest, pause, read })
    }
}
