//! x86-64 page tables: 4- and 5-level walks with 1 GiB and 2 MiB leaves.
//!
//! Every entry read from the guest is untrusted: a walk checks the present bit at each level, masks
//! the frame with the architectural address mask, and fails with the level and entry it stopped at.
//! Frames in entries go through [`GuestMemory::table_frame`] (machine frames for Xen PV guests).

use std::fmt;

use crate::memory::{Gpa, GuestMemory, Gva, MemoryError, PAGE_SIZE};

/// Present bit of a page-table entry.
const PRESENT: u64 = 1 << 0;
/// Page-size bit: the entry at PDPT (1 GiB) or PD (2 MiB) level is a leaf.
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Bits 12..=51: the physical frame of the next table or of a 4 KiB page.
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How many levels the guest's page tables have (CR4.LA57).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// 4-level paging: 48-bit virtual addresses.
    FourLevel,
    /// 5-level paging: 57-bit virtual addresses.
    FiveLevel,
}

impl PagingMode {
    /// The number of table levels.
    pub const fn levels(self) -> u32 {
        match self {
            Self::FourLevel => 4,
            Self::FiveLevel => 5,
        }
    }

    /// Whether `va` is canonical: its bits above the top translated bit copy that bit.
    pub fn is_canonical(self, va: Gva) -> bool {
        let bits = 12 + 9 * self.levels();
        let shifted = (va.raw() as i64) >> (bits - 1);
        shifted == 0 || shifted == -1
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-level", self.levels())
    }
}

/// Why a virtual address did not translate.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The address is not canonical for the paging mode.
    #[error("{va} is not a canonical {mode} address")]
    NonCanonical {
        /// The address.
        va: Gva,
        /// The paging mode.
        mode: PagingMode,
    },
    /// An entry on the way is not present.
    #[error("{va} is not mapped (level-{level} entry {entry:#x} not present)")]
    NotPresent {
        /// The address.
        va: Gva,
        /// The table level (5 = PML5 … 1 = PT).
        level: u32,
        /// The entry's value.
        entry: u64,
    },
    /// An entry names a frame that is none of the guest's (a Xen PV guest's unknown machine frame).
    #[error("{va}: level-{level} entry {entry:#x} names a frame outside the guest")]
    ForeignFrame {
        /// The address.
        va: Gva,
        /// The table level.
        level: u32,
        /// The entry's value.
        entry: u64,
    },
    /// A page table could not be read.
    #[error("reading the page tables for {va}: {source}")]
    Memory {
        /// The address.
        va: Gva,
        /// The memory error.
        source: MemoryError,
    },
}

/// A guest's kernel page tables: a root table and a paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTables {
    /// Physical address of the top-level table (what CR3 would hold).
    pub root: Gpa,
    /// 4- or 5-level.
    pub mode: PagingMode,
}

impl PageTables {
    /// Translates `va` by walking the tables in `mem`.
    pub fn translate(&self, mem: &dyn GuestMemory, va: Gva) -> Result<Gpa, TranslateError> {
        if !self.mode.is_canonical(va) {
            return Err(TranslateError::NonCanonical { va, mode: self.mode });
        }
        let mut table = self.root.raw() & FRAME_MASK;
        for level in (1..=self.mode.levels()).rev() {
            let shift = 12 + 9 * (level - 1);
            let index = (va.raw() >> shift) & 0x1ff;
            let entry = mem
                .read_u64(Gpa(table + index * 8))
                .map_err(|source| TranslateError::Memory { va, source })?;
            if entry & PRESENT == 0 {
                return Err(TranslateError::NotPresent { va, level, entry });
            }
            // A leaf: a 4 KiB page at level 1, or a large page at level 2 (2 MiB) or 3 (1 GiB).
            // Its 4 KiB frame is translated, not the large page's base: machine frames need not
            // be contiguous where pseudo-physical ones are.
            let leaf = level == 1 || (matches!(level, 2 | 3) && entry & PAGE_SIZE_BIT != 0);
            let page_mask = if leaf { (1u64 << shift) - 1 } else { 0 };
            let frame = ((entry & FRAME_MASK & !page_mask) | (va.raw() & page_mask & FRAME_MASK)) >> 12;
            let foreign = TranslateError::ForeignFrame { va, level, entry };
            let table_page = mem.table_frame(frame).and_then(|gpfn| gpfn.checked_mul(PAGE_SIZE)).ok_or(foreign)?;
            if leaf {
                return Ok(Gpa(table_page | va.page_offset()));
            }
            table = table_page;
        }
        unreachable!("level 1 always returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ImageMemory, Pause};

    fn set(ram: &mut ImageMemory, table_page: u64, index: u64, entry: u64) {
        ram.write_u64(Gpa(table_page * PAGE_SIZE + index * 8), entry).expect("inside the image");
    }

    const P: u64 = PRESENT | 0x2;

    fn idx(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * (level - 1))) & 0x1ff
    }

    #[test]
    fn four_level_walk_with_all_page_sizes() {
        let mut ram = ImageMemory::zeroed(16 * 4096);
        let va4k = 0xffff_8880_0123_4567u64;
        set(&mut ram, 1, idx(va4k, 4), (2 * PAGE_SIZE) | P);
        set(&mut ram, 2, idx(va4k, 3), (3 * PAGE_SIZE) | P);
        set(&mut ram, 3, idx(va4k, 2), (4 * PAGE_SIZE) | P);
        set(&mut ram, 4, idx(va4k, 1), 0x7_7000 | P | (1 << 63));
        // A 2 MiB leaf beside it and a 1 GiB leaf in another PDPT slot.
        let va2m = va4k + (1 << 21);
        set(&mut ram, 3, idx(va2m, 2), 0x4020_0000 | P | PAGE_SIZE_BIT);
        let va1g = 0xffff_8881_4000_0000u64 + 0x12_3456;
        set(&mut ram, 2, idx(va1g, 3), 0x1_c000_0000 | P | PAGE_SIZE_BIT);
        let pt = PageTables { root: Gpa(PAGE_SIZE), mode: PagingMode::FourLevel };
        assert_eq!(pt.translate(&ram, Gva(va4k)).expect("4k"), Gpa(0x7_7567));
        assert_eq!(pt.translate(&ram, Gva(va2m)).expect("2m"), Gpa(0x4020_0000 | (va2m & 0x1f_ffff)));
        assert_eq!(pt.translate(&ram, Gva(va1g)).expect("1g"), Gpa(0x1_c012_3456));
        assert!(matches!(pt.translate(&ram, Gva(va4k + (1 << 30) * 3)), Err(TranslateError::NotPresent { level: 3, .. })));
        assert!(matches!(pt.translate(&ram, Gva(0x0000_8000_0000_0000)), Err(TranslateError::NonCanonical { .. })));
    }

    #[test]
    fn five_level_walk_uses_the_extra_level() {
        let mut ram = ImageMemory::zeroed(8 * 4096);
        let va = 0xff11_0000_0000_1234u64;
        set(&mut ram, 1, idx(va, 5), (2 * PAGE_SIZE) | P);
        set(&mut ram, 2, idx(va, 4), (3 * PAGE_SIZE) | P);
        set(&mut ram, 3, idx(va, 3), 0x8000_0000 | P | PAGE_SIZE_BIT);
        let pt = PageTables { root: Gpa(PAGE_SIZE), mode: PagingMode::FiveLevel };
        assert_eq!(pt.translate(&ram, Gva(va)).expect("5-level"), Gpa(0x8000_1234));
        assert!(PagingMode::FiveLevel.is_canonical(Gva(va)));
        assert!(!PagingMode::FourLevel.is_canonical(Gva(va)));
    }

    /// A Xen PV guest in miniature: page-table entries hold machine frames, pfn + 0x1000; machine
    /// frames below 0x1000 are not the guest's.
    struct PvImage(ImageMemory);

    impl GuestMemory for PvImage {
        fn describe(&self) -> String {
            "pv image".into()
        }
        fn ranges(&self) -> &[crate::memory::PhysRange] {
            self.0.ranges()
        }
        fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
            self.0.read_phys(gpa, buf)
        }
        fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
            self.0.write_phys(gpa, data)
        }
        fn pause(&mut self) -> Result<Pause, MemoryError> {
            Ok(Pause::Still)
        }
        fn resume(&mut self) -> Result<(), MemoryError> {
            Ok(())
        }
        fn table_frame(&self, frame: u64) -> Option<u64> {
            frame.checked_sub(0x1000)
        }
    }

    #[test]
    fn machine_frames_in_entries_are_translated() {
        let mut ram = ImageMemory::zeroed(16 * 4096);
        let mfn = |pfn: u64| (pfn + 0x1000) * PAGE_SIZE;
        let va = 0xffff_ffff_8100_2345u64;
        set(&mut ram, 1, idx(va, 4), mfn(2) | P);
        set(&mut ram, 2, idx(va, 3), mfn(3) | P);
        set(&mut ram, 3, idx(va, 2), mfn(4) | P);
        set(&mut ram, 4, idx(va, 1), mfn(9) | P);
        // A 2 MiB leaf: each 4 KiB frame of it is translated on its own.
        let va2m = va + (1 << 21);
        set(&mut ram, 3, idx(va2m, 2), mfn(0x200) | P | PAGE_SIZE_BIT);
        // An entry naming a machine frame the guest does not own.
        let wild = va + (2 << 21);
        set(&mut ram, 3, idx(wild, 2), 0x5000 | P);
        let pv = PvImage(ram);
        let pt = PageTables { root: Gpa(PAGE_SIZE), mode: PagingMode::FourLevel };
        assert_eq!(pt.translate(&pv, Gva(va)).expect("4k"), Gpa(9 * PAGE_SIZE + 0x345));
        assert_eq!(pt.translate(&pv, Gva(va2m)).expect("2m"), Gpa(0x202_345));
        assert!(matches!(pt.translate(&pv, Gva(wild)), Err(TranslateError::ForeignFrame { level: 2, .. })));
    }

    #[test]
    fn tables_pointing_outside_ram_fail_cleanly() {
        let mut ram = ImageMemory::zeroed(4 * 4096);
        let va = 0xffff_ffff_8100_0000u64;
        set(&mut ram, 1, idx(va, 4), 0xdead_0000_0000 | P);
        let pt = PageTables { root: Gpa(PAGE_SIZE), mode: PagingMode::FourLevel };
        assert!(matches!(pt.translate(&ram, Gva(va)), Err(TranslateError::Memory { .. })));
    }
}
