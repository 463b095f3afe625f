//! Staged writes: plan a change to a guest in memory, then apply it all at once.
//!
//! An operation such as an unpark reads and writes dozens of fields. [`Staged`] lets it run
//! against an overlay that serves its own earlier writes back to its reads, so the whole plan is
//! built (and may be abandoned on any error) before one byte reaches the guest.

use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::LinuxError;
use crate::memory::Gva;

/// A write overlay over kernel memory.
#[derive(Debug)]
pub struct Staged<'a, K: ?Sized> {
    base: &'a K,
    writes: Vec<(Gva, Vec<u8>)>,
}

impl<'a, K: KernelMemory + ?Sized> Staged<'a, K> {
    /// An empty overlay over `base`.
    pub fn new(base: &'a K) -> Self {
        Self { base, writes: Vec::new() }
    }

    /// The staged writes, in order.
    pub fn writes(&self) -> &[(Gva, Vec<u8>)] {
        &self.writes
    }

    /// Takes the staged writes out of the overlay (to apply them once the borrow of the base ends).
    pub fn into_writes(self) -> Vec<(Gva, Vec<u8>)> {
        self.writes
    }
}

/// Applies `writes` in order, as one batch ([`KernelMemoryMut::write_batch`]).
pub fn apply<K: KernelMemoryMut + ?Sized>(target: &mut K, writes: &[(Gva, Vec<u8>)]) -> Result<(), LinuxError> {
    target.write_batch(writes)
}

impl<K: KernelMemory + ?Sized> KernelMemory for Staged<'_, K> {
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError> {
        self.base.read_virt(va, buf)?;
        let start = va.raw();
        let end = start.saturating_add(buf.len() as u64);
        for (at, data) in &self.writes {
            let w_start = at.raw();
            let w_end = w_start.saturating_add(data.len() as u64);
            let (lo, hi) = (start.max(w_start), end.min(w_end));
            if lo < hi {
                // Offsets inside `buf` and `data`: below their lengths, so they fit `usize`.
                let at = crate::memory::to_usize;
                let dst = at(lo - start)..at(hi - start);
                let src = at(lo - w_start)..at(hi - w_start);
                buf[dst].copy_from_slice(&data[src]);
            }
        }
        Ok(())
    }
}

impl<K: KernelMemory + ?Sized> KernelMemoryMut for Staged<'_, K> {
    fn write_virt(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError> {
        // Fail now, not at apply time, on an address the base cannot reach.
        let mut probe = vec![0u8; data.len()];
        self.base.read_virt(va, &mut probe)?;
        self.writes.push((va, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::virt::DirectMapped;
    use crate::memory::{Gpa, GuestMemory, ImageMemory};

    #[test]
    fn reads_see_staged_writes_and_nothing_lands_until_applied() {
        let base = Gva(0xffff_8880_0000_0000);
        let mut mem = DirectMapped::new(ImageMemory::zeroed(4096), base);
        mem.memory_mut().write_u64(Gpa(8), 0x1111).expect("seed");
        let mut staged = Staged::new(&mem);
        staged.write_u64(Gva(base.raw() + 12), 0xaabb_ccdd_eeff_0011).expect("stage");
        assert_eq!(staged.read_u64(Gva(base.raw() + 8)).expect("read"), 0xeeff_0011_0000_1111);
        assert!(staged.write_u64(Gva(base.raw() + 4092), 1).is_err(), "beyond the image");
        let writes = staged.into_writes();
        assert_eq!(mem.read_u64(Gva(base.raw() + 8)).expect("read"), 0x1111);
        apply(&mut mem, &writes).expect("apply");
        assert_eq!(mem.read_u64(Gva(base.raw() + 12)).expect("read"), 0xaabb_ccdd_eeff_0011);
    }
}
