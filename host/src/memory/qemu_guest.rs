//! A QEMU guest as [`GuestMemory`]: where its RAM is reached, and its monitor.
//!
//! The QEMU backends differ in how they reach guest RAM (a shared file mapped here, or the QEMU
//! process's memory), each a [`QemuRam`], and in how they control the guest (QMP, or libvirt),
//! each a [`super::qemu_monitor::Monitor`]; [`QemuGuest`] joins one of each and implements
//! [`GuestMemory`] once for all of them.

use std::fmt;

use super::qemu_monitor::QemuMonitor;
use super::{Gpa, GuestMemory, MemoryError, Pause, PhysRange, VcpuPaging};

/// Where a QEMU guest's RAM is read and written: the data half of [`GuestMemory`].
pub trait QemuRam: Send + fmt::Debug {
    /// [`GuestMemory::ranges`].
    fn ranges(&self) -> &[PhysRange];

    /// [`GuestMemory::read_phys`].
    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// [`GuestMemory::write_phys`].
    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError>;

    /// [`GuestMemory::check_backing`].
    fn check_backing(&self) -> Result<(), MemoryError>;
}

/// A QEMU guest's RAM and monitor.
#[derive(Debug)]
pub struct QemuGuest<R> {
    ram: R,
    monitor: QemuMonitor,
    /// What [`GuestMemory::describe`] says.
    description: String,
}

impl<R> QemuGuest<R> {
    /// Joins `ram` and `monitor`; `description` is what [`GuestMemory::describe`] says.
    pub(super) fn new(ram: R, monitor: QemuMonitor, description: String) -> Self {
        Self { ram, monitor, description }
    }

    /// Where the guest's RAM is reached.
    pub fn ram(&self) -> &R {
        &self.ram
    }
}

impl<R: QemuRam> GuestMemory for QemuGuest<R> {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn ranges(&self) -> &[PhysRange] {
        self.ram.ranges()
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.ram.read_phys(gpa, buf)
    }

    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
        self.ram.write_phys(gpa, data)
    }

    fn check_backing(&self) -> Result<(), MemoryError> {
        self.ram.check_backing()
    }

    fn pause(&mut self) -> Result<Pause, MemoryError> {
        self.monitor.pause(&self.description)
    }

    fn resume(&mut self) -> Result<(), MemoryError> {
        self.monitor.resume(&self.description)
    }

    fn resume_abandoned(&mut self) -> Result<(), MemoryError> {
        self.monitor.resume_abandoned(&self.description)
    }

    fn is_paused(&mut self) -> Result<bool, MemoryError> {
        self.monitor.is_paused()
    }

    fn vcpu_paging(&mut self) -> Result<Option<VcpuPaging>, MemoryError> {
        self.monitor.vcpu_paging()
    }

    fn kick(&mut self) -> Result<(), MemoryError> {
        self.monitor.kick(&self.description)
    }
}
