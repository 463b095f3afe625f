//! Kernel-virtual reads: the one capability the kernel walkers need.

use crate::memory::{Gpa, GuestMemory, Gva};

use super::LinuxError;

/// Reads guest kernel-virtual memory. Implemented by [`super::Kernel`] (a located guest kernel)
/// and by [`DirectMapped`] (a synthetic image seen through a linear map).
pub trait KernelMemory {
    /// Reads `buf.len()` bytes at `va`.
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError>;

    /// Reads a `u64` at `va`.
    fn read_u64(&self, va: Gva) -> Result<u64, LinuxError> {
        let mut b = [0u8; 8];
        self.read_virt(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a `u32` at `va`.
    fn read_u32(&self, va: Gva) -> Result<u32, LinuxError> {
        let mut b = [0u8; 4];
        self.read_virt(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a pointer at `va`.
    fn read_ptr(&self, va: Gva) -> Result<Gva, LinuxError> {
        self.read_u64(va).map(Gva)
    }
}

/// Writes guest kernel-virtual memory: what changing a guest's scheduling needs on top of reads.
///
/// Callers pause the guest (and check the locks they race) before writing: a write is a plain
/// store, invisible to the guest's memory model.
pub trait KernelMemoryMut: KernelMemory {
    /// Writes `data` at `va`.
    fn write_virt(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError>;

    /// Writes a little-endian `u64` at `va`.
    fn write_u64(&mut self, va: Gva, value: u64) -> Result<(), LinuxError> {
        self.write_virt(va, &value.to_le_bytes())
    }

    /// Makes `writes`, in order, as one change. A kernel with a redo log records the batch first
    /// (see [`super::redo`]), so that a change cut short by the writer's death is completed.
    fn write_batch(&mut self, writes: &[(Gva, Vec<u8>)]) -> Result<(), LinuxError> {
        writes.iter().try_for_each(|(va, data)| self.write_virt(*va, data))
    }
}

/// Guest memory seen through one linear map, `va = base + pa`: the shape of the kernel's direct
/// map. Synthetic images for tests, fuzzing and benchmarks are read through it.
#[derive(Debug)]
pub struct DirectMapped<M> {
    mem: M,
    base: Gva,
}

impl<M: GuestMemory> DirectMapped<M> {
    /// Views `mem` at virtual `base`.
    pub fn new(mem: M, base: Gva) -> Self {
        Self { mem, base }
    }

    /// The virtual address of physical `gpa`.
    pub fn va(&self, gpa: Gpa) -> Gva {
        Gva(self.base.raw().wrapping_add(gpa.raw()))
    }

    /// The underlying memory.
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }
}

impl<M: GuestMemory> KernelMemory for DirectMapped<M> {
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError> {
        let gpa = va.checked_offset_from(self.base).ok_or_else(|| crate::memory::MemoryError::OutOfRange {
            gpa: Gpa(va.raw()),
            len: buf.len() as u64,
        })?;
        Ok(self.mem.read_phys(Gpa(gpa), buf)?)
    }
}

impl<M: GuestMemory> KernelMemoryMut for DirectMapped<M> {
    fn write_virt(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError> {
        let gpa = va.checked_offset_from(self.base).ok_or_else(|| crate::memory::MemoryError::OutOfRange {
            gpa: Gpa(va.raw()),
            len: data.len() as u64,
        })?;
        Ok(self.mem.write_phys(Gpa(gpa), data)?)
    }
}
