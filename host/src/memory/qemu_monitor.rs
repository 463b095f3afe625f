//! What the QEMU backends ask of a guest's monitor: pause and resume, HMP queries, NMIs.
//!
//! A QEMU guest is controlled through one of two ways, each a [`Monitor`]: its QMP socket
//! ([`QmpClient`]), or, for a domain libvirt manages (libvirt owns that socket), libvirt's API
//! (`super::libvirt`). [`QemuMonitor`] holds one, or none, and whether this handle stopped the
//! VM, so that a pause someone else took ([`Pause::HeldByOthers`]) is never undone. The file
//! backend ([`super::qemu`]) may have no monitor (read only, no pause); the process backend
//! ([`super::qemu_process`]) always has one.

use std::fmt;

use super::qmp::QmpClient;
use super::{MemoryError, Pause, VcpuPaging};

/// `CR4.LA57`: five-level paging.
const CR4_LA57: u64 = 1 << 12;

/// A way to control a running QEMU guest.
pub trait Monitor: Send + fmt::Debug {
    /// Stops the guest's vCPUs and returns once they are stopped; says whether this call stopped
    /// a running guest (`false`: someone else holds it stopped, and must be the one to resume it).
    fn stop(&mut self) -> Result<bool, MemoryError>;

    /// Lets the guest's vCPUs run again.
    fn cont(&mut self) -> Result<(), MemoryError>;

    /// Whether the guest's vCPUs are stopped (by anyone).
    fn is_paused(&mut self) -> Result<bool, MemoryError>;

    /// Runs a human-monitor (HMP) command line and returns its text output.
    fn human_command(&mut self, command_line: &str) -> Result<String, MemoryError>;

    /// Sends an NMI to every vCPU.
    fn inject_nmi(&mut self) -> Result<(), MemoryError>;
}

impl Monitor for QmpClient {
    fn stop(&mut self) -> Result<bool, MemoryError> {
        QmpClient::stop(self)
    }

    fn cont(&mut self) -> Result<(), MemoryError> {
        QmpClient::cont(self)
    }

    fn is_paused(&mut self) -> Result<bool, MemoryError> {
        QmpClient::is_paused(self)
    }

    fn human_command(&mut self, command_line: &str) -> Result<String, MemoryError> {
        QmpClient::human_command(self, command_line)
    }

    fn inject_nmi(&mut self) -> Result<(), MemoryError> {
        self.execute("inject-nmi", None).map(drop)
    }
}

/// A QEMU guest's monitor and this handle's share in its run state.
#[derive(Debug)]
pub struct QemuMonitor {
    monitor: Option<Box<dyn Monitor>>,
    /// Whether this handle stopped the VM (and so must be the one to let it run).
    stopped_it: bool,
}

impl QemuMonitor {
    /// Wraps a monitor, or none (then pause, resume and kicks are [`MemoryError::Unsupported`]).
    pub fn new(monitor: Option<Box<dyn Monitor>>) -> Self {
        Self { monitor, stopped_it: false }
    }

    fn monitor(&mut self, backend: &str, action: &'static str) -> Result<&mut dyn Monitor, MemoryError> {
        match self.monitor.as_deref_mut() {
            Some(monitor) => Ok(monitor),
            None => Err(MemoryError::Unsupported { backend: backend.to_owned(), action }),
        }
    }

    /// [`super::GuestMemory::pause`] (`backend` names the guest in errors): stop, and whether this call is what stopped the VM.
    pub fn pause(&mut self, backend: &str) -> Result<Pause, MemoryError> {
        if self.stopped_it {
            return Ok(Pause::Taken);
        }
        self.stopped_it = self.monitor(backend, "pause")?.stop()?;
        Ok(if self.stopped_it { Pause::Taken } else { Pause::HeldByOthers })
    }

    /// [`super::GuestMemory::resume`]: continue, only if this handle stopped the VM.
    pub fn resume(&mut self, backend: &str) -> Result<(), MemoryError> {
        if self.stopped_it {
            self.monitor(backend, "resume")?.cont()?;
            self.stopped_it = false;
        }
        Ok(())
    }

    /// [`super::GuestMemory::resume_abandoned`]: continue, whoever stopped the VM.
    pub fn resume_abandoned(&mut self, backend: &str) -> Result<(), MemoryError> {
        self.monitor(backend, "resume")?.cont()
    }

    /// [`super::GuestMemory::is_paused`]; no monitor says no.
    pub fn is_paused(&mut self) -> Result<bool, MemoryError> {
        match self.monitor.as_deref_mut() {
            Some(monitor) => monitor.is_paused(),
            None => Ok(false),
        }
    }

    /// [`super::GuestMemory::vcpu_paging`]: CPU 0's `CR3` and `CR4` from the monitor's `info
    /// registers`; QEMU answers while the guest runs.
    pub fn vcpu_paging(&mut self) -> Result<Option<VcpuPaging>, MemoryError> {
        let Some(monitor) = self.monitor.as_deref_mut() else { return Ok(None) };
        Ok(paging_of(&monitor.human_command("info registers")?))
    }

    /// [`super::GuestMemory::kick`]: an NMI to every vCPU.
    pub fn kick(&mut self, backend: &str) -> Result<(), MemoryError> {
        self.monitor(backend, "kick vCPUs")?.inject_nmi()
    }
}

/// `CR3` and `CR4.LA57` from the text of HMP's `info registers` (words `CR3=HEX`, `CR4=HEX`).
fn paging_of(registers: &str) -> Option<VcpuPaging> {
    let register = |name: &str| registers.split_whitespace().find_map(|word| word.strip_prefix(name)).and_then(|hex| u64::from_str_radix(hex, 16).ok());
    Some(VcpuPaging { cr3: register("CR3=")?, la57: register("CR4=")? & CR4_LA57 != 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_registers_are_read_from_info_registers() {
        let text = "CR0=80050033 CR2=00007f0000001000 CR3=0000000002a0c000 CR4=00350ef0\nDR0=0000000000000000";
        assert_eq!(paging_of(text), Some(VcpuPaging { cr3: 0x2a0_c000, la57: false }));
        assert_eq!(paging_of("CR3=1000 CR4=00001000"), Some(VcpuPaging { cr3: 0x1000, la57: true }));
        assert_eq!(paging_of("CR3=xyz CR4=0"), None);
        assert_eq!(paging_of(""), None);
    }
}
