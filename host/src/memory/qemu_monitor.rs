//! What both QEMU backends ask of the monitor: pause and resume, the vCPU paging registers, kicks.
//!
//! [`QemuMonitor`] holds an optional QMP session and whether this handle stopped the VM, so that
//! a pause someone else took ([`Pause::HeldByOthers`]) is never undone. The file backend
//! ([`super::qemu`]) may have no session (read only, no pause); the process backend
//! ([`super::qemu_process`]) always has one.

use super::qmp::QmpClient;
use super::{MemoryError, Pause, VcpuPaging};

/// `CR4.LA57`: five-level paging.
const CR4_LA57: u64 = 1 << 12;

/// A QEMU guest's monitor and this handle's share in its run state.
#[derive(Debug)]
pub struct QemuMonitor {
    qmp: Option<QmpClient>,
    /// Whether this handle stopped the VM (and so must be the one to let it run).
    stopped_it: bool,
}

impl QemuMonitor {
    /// Wraps a QMP session, or none (then pause, resume and kicks are [`MemoryError::Unsupported`]).
    pub fn new(qmp: Option<QmpClient>) -> Self {
        Self { qmp, stopped_it: false }
    }

    fn qmp(&mut self, backend: &str, action: &'static str) -> Result<&mut QmpClient, MemoryError> {
        self.qmp.as_mut().ok_or_else(|| MemoryError::Unsupported { backend: backend.to_owned(), action })
    }

    /// [`super::GuestMemory::pause`] (`backend` names the guest in errors): `stop`, and whether this call is what stopped the VM.
    pub fn pause(&mut self, backend: &str) -> Result<Pause, MemoryError> {
        if self.stopped_it {
            return Ok(Pause::Taken);
        }
        self.stopped_it = self.qmp(backend, "pause")?.stop()?;
        Ok(if self.stopped_it { Pause::Taken } else { Pause::HeldByOthers })
    }

    /// [`super::GuestMemory::resume`]: `cont`, only if this handle stopped the VM.
    pub fn resume(&mut self, backend: &str) -> Result<(), MemoryError> {
        if self.stopped_it {
            self.qmp(backend, "resume")?.cont()?;
            self.stopped_it = false;
        }
        Ok(())
    }

    /// [`super::GuestMemory::resume_abandoned`]: `cont`, whoever stopped the VM.
    pub fn resume_abandoned(&mut self, backend: &str) -> Result<(), MemoryError> {
        self.qmp(backend, "resume")?.cont()
    }

    /// [`super::GuestMemory::is_paused`]: `query-status`; no session says no.
    pub fn is_paused(&mut self) -> Result<bool, MemoryError> {
        match self.qmp.as_mut() {
            Some(qmp) => qmp.is_paused(),
            None => Ok(false),
        }
    }

    /// [`super::GuestMemory::vcpu_paging`]: CPU 0's `CR3` and `CR4` from the monitor's `info
    /// registers` (HMP through QMP); QEMU answers while the guest runs.
    pub fn vcpu_paging(&mut self) -> Result<Option<VcpuPaging>, MemoryError> {
        let Some(qmp) = self.qmp.as_mut() else { return Ok(None) };
        let text = qmp.human_command("info registers")?;
        let register = |name: &str| {
            text.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        };
        Ok(match (register("CR3="), register("CR4=")) {
            (Some(cr3), Some(cr4)) => Some(VcpuPaging { cr3, la57: cr4 & CR4_LA57 != 0 }),
            _ => None,
        })
    }

    /// [`super::GuestMemory::kick`]: an NMI to every vCPU (`inject-nmi`).
    pub fn kick(&mut self, backend: &str) -> Result<(), MemoryError> {
        self.qmp(backend, "kick vCPUs")?.execute("inject-nmi", None).map(drop)
    }
}
