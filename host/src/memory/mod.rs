//! A domain's guest-physical memory: one small trait and its backends.
//!
//! [`GuestMemory`] reads and writes physical bytes at any offset and length (crossing pages freely),
//! reports which physical ranges are RAM, and pauses and resumes the domain so that a reader sees a
//! consistent guest and a writer never races a running vCPU. Typed reads are default methods over
//! the two raw ones. Backends:
//!
//! - [`qemu::QemuMemory`]: QEMU's shared RAM file, mapped once, plus QMP `stop`/`cont`;
//! - [`qemu_process::QemuProcessMemory`]: an unmodified QEMU's anonymous RAM, copied in and out
//!   of its process (`process_vm_readv`/`process_vm_writev`), the same QMP pause (`qemu_monitor`);
//! - `libvirt::open` (cargo feature `libvirt`, on by default): a libvirt domain by name, its
//!   QEMU's RAM reached as `qemu_process` does, pause, resume and monitor queries through
//!   libvirt itself (libvirt owns the QEMU's monitor);
//! - [`core::CoreMemory`]: an ELF core file from QEMU's `dump-guest-memory`, read-only;
//! - `xen::XenMemory` (cargo feature `xen`): Xen foreign mapping and domain pause/unpause.
//!
//! The QEMU ones are each a [`qemu_guest::QemuGuest`]: a way to RAM joined to a monitor.
//!
//! The two file backends map their file through `mapped`, guarded by `sigbus`: a file that
//! shrinks while mapped is [`MemoryError::Shrunk`] on the access that meets it, never a SIGBUS
//! death; [`GuestMemory::check_backing`] also notices a file replaced at its path.

mod addr;
pub mod core;
mod error;
mod image;
#[cfg(feature = "libvirt")]
pub mod libvirt;
mod mapped;
mod pause;
mod segments;
pub mod qemu;
pub mod qemu_guest;
mod qemu_layout;
mod qemu_monitor;
pub mod qemu_process;
pub mod qmp;
mod sigbus;
mod unix_socket;
#[cfg(feature = "xen")]
pub mod xen;

pub use addr::{Gpa, Gva};
pub use error::MemoryError;
pub use image::ImageMemory;
pub use pause::{Pausable, PauseMark, Paused};

/// Size of a guest page (x86-64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// A contiguous range of guest-physical RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First address of the range.
    pub start: Gpa,
    /// Length in bytes (never zero).
    pub len: u64,
}

impl PhysRange {
    /// One past the last address, saturating at the top of the address space.
    pub fn end(&self) -> u64 {
        self.start.raw().saturating_add(self.len)
    }

    /// Whether `[gpa, gpa + len)` lies wholly inside this range.
    pub fn contains(&self, gpa: Gpa, len: u64) -> bool {
        gpa >= self.start && gpa.raw().checked_add(len).is_some_and(|end| end <= self.end())
    }
}

/// A vCPU's paging registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuPaging {
    /// `CR3`: the physical address of the page-table root in use (low bits: PCID and flags).
    pub cr3: u64,
    /// `CR4.LA57`: five-level paging.
    pub la57: bool,
}

/// Who holds a domain still after [`GuestMemory::pause`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// The domain was running; this handle stopped it, and [`GuestMemory::resume`] lets it run.
    Taken,
    /// Someone else holds it stopped (an operator's pause, a snapshot, a migration, a guest
    /// panic): it can be read as it is, must not be written, and stays stopped after `resume`.
    HeldByOthers,
    /// Nothing ever runs: a core dump or an in-memory image.
    Still,
}

/// A domain's guest-physical memory.
///
/// Reads and writes are all-or-nothing: a request that touches any byte outside RAM fails with
/// [`MemoryError::OutOfRange`] and transfers nothing.
pub trait GuestMemory: Send {
    /// A short human description of the backend, used in messages ("qemu:/dev/shm/ram (256 MiB)").
    fn describe(&self) -> String;

    /// The guest-physical ranges backed by RAM, sorted and disjoint.
    fn ranges(&self) -> &[PhysRange];

    /// Reads `buf.len()` bytes starting at `gpa`.
    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Writes `data` starting at `gpa`. Read-only backends refuse with [`MemoryError::ReadOnly`].
    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError>;

    /// Makes sure no vCPU of the domain runs; returns once none does, saying who holds it still.
    fn pause(&mut self) -> Result<Pause, MemoryError>;

    /// Undoes this handle's own pause ([`Pause::Taken`]); a pause held by someone else stays.
    fn resume(&mut self) -> Result<(), MemoryError>;

    /// Undoes one pause that a dead holder took: an xsched loop killed while it held the domain
    /// paused. Call it only when that holder is known to have held a pause; an operator's pause
    /// looks the same from here. Backends that never pause have nothing to undo.
    fn resume_abandoned(&mut self) -> Result<(), MemoryError> {
        Ok(())
    }

    /// Whether the domain is paused right now (by anyone). Backends that cannot tell say no.
    fn is_paused(&mut self) -> Result<bool, MemoryError> {
        Ok(false)
    }

    /// The paging state of one of the domain's vCPUs, as the hypervisor reports it, when it
    /// can: the way to the kernel's page tables without searching RAM. Backends that cannot tell
    /// (a core dump) say `None`.
    fn vcpu_paging(&mut self) -> Result<Option<VcpuPaging>, MemoryError> {
        Ok(None)
    }

    /// Interrupts the domain's vCPUs (an NMI), so that an idle one notices work queued for it.
    /// Backends that cannot do it say so.
    fn kick(&mut self) -> Result<(), MemoryError> {
        Err(MemoryError::Unsupported { backend: self.describe(), action: "kick vCPUs" })
    }

    /// The guest-physical frame behind `frame`, a frame number as the guest's own page-table
    /// entries hold it: `frame` itself, except for Xen PV guests, whose entries hold machine
    /// frames. `None` when the frame is none of the guest's RAM.
    fn table_frame(&self, frame: u64) -> Option<u64> {
        Some(frame)
    }

    /// Total bytes of RAM.
    fn ram_size(&self) -> u64 {
        self.ranges().iter().map(|r| r.len).sum()
    }

    /// Whether what backs the memory is still what was attached: a mapped file that shrank
    /// ([`MemoryError::Shrunk`]) or that its path no longer names ([`MemoryError::Replaced`])
    /// fails here, even before an access meets the damage. A few system calls: for once per
    /// snapshot, not per read. Backends with nothing to check say yes.
    fn check_backing(&self) -> Result<(), MemoryError> {
        Ok(())
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, gpa: Gpa) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read_phys(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, gpa: Gpa) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read_phys(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, gpa: Gpa, value: u64) -> Result<(), MemoryError> {
        self.write_phys(gpa, &value.to_le_bytes())
    }
}

/// A byte offset or length as `usize`: lossless, since xsched builds only for 64-bit hosts.
#[allow(clippy::cast_possible_truncation, reason = "usize is 64 bits wide (lib.rs refuses other targets)")]
pub(crate) const fn to_usize(value: u64) -> usize {
    value as usize
}

/// Checks that `[gpa, gpa + len)` lies inside one of `ranges`.
pub(crate) fn check_access(ranges: &[PhysRange], gpa: Gpa, len: usize) -> Result<&PhysRange, MemoryError> {
    let len64 = len as u64;
    // Not `ok_or`: that builds the error (and drops it, a call) on every access that is fine.
    match ranges.iter().find(|r| r.contains(gpa, len64)) {
        Some(range) => Ok(range),
        None => Err(MemoryError::OutOfRange { gpa, len: len64 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_must_fit_one_range() {
        let ranges = [
            PhysRange { start: Gpa(0), len: 0x8000 },
            PhysRange { start: Gpa(0x1_0000_0000), len: 0x1000 },
        ];
        assert!(check_access(&ranges, Gpa(0x7ff8), 8).is_ok());
        assert!(check_access(&ranges, Gpa(0x7ff9), 8).is_err());
        assert!(check_access(&ranges, Gpa(0x1_0000_0ff8), 8).is_ok());
        assert!(check_access(&ranges, Gpa(u64::MAX - 2), 8).is_err());
        assert!(check_access(&ranges, Gpa(0x9000), 1).is_err());
    }
}
