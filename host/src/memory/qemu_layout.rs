//! Where a running QEMU keeps guest RAM: parsed from its monitor and from `/proc/PID/maps`.
//!
//! Three texts, each parsed by one function:
//!
//! - `info mtree -f` ([`flat_ram`]): the flat view of the `memory` address space lists every
//!   guest-physical range backed by RAM as `START-END (prio P, ram): BLOCK[ @OFFSET]`, END
//!   inclusive, OFFSET the range's position in the RAM block (q35 with 3 GiB: `pc.ram` at 0, at
//!   1 MiB from offset 1 MiB, and at 4 GiB from offset 2 GiB);
//! - `info ramblock` ([`block_size`]): each RAM block's used and total size;
//! - `/proc/PID/maps` ([`anonymous_mapping`]): QEMU allocates a RAM block that no file backs as one
//!   private anonymous mapping of the block's total size (memflow's QEMU connector finds it the
//!   same way, by size).
//!
//! The texts come from the QEMU being attached, trusted only as far as their shape is checked:
//! every number is parsed strictly and every range checked against the block, so what reaches the
//! backend is a set of segments inside one mapping of known size.

use super::segments::Segment;
use super::{Gpa, PhysRange};

/// Why a QEMU's RAM layout could not be worked out.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `info mtree -f` has no flat view of the `memory` address space.
    #[error("`info mtree -f` shows no flat view of the \"memory\" address space")]
    NoMemoryView,
    /// A RAM line of the flat view does not parse.
    #[error("`info mtree -f`: cannot read the RAM line {line:?}")]
    BadLine {
        /// The line.
        line: String,
    },
    /// The flat view has no RAM.
    #[error("`info mtree -f` shows no RAM in the \"memory\" address space")]
    NoRam,
    /// Guest RAM comes from more than one RAM block (NUMA nodes, hotplugged DIMMs).
    #[error("guest RAM comes from more than one RAM block ({first} and {second}): not supported")]
    SeveralBlocks {
        /// One block.
        first: String,
        /// Another.
        second: String,
    },
    /// `info ramblock` does not list the block.
    #[error("`info ramblock` does not list the RAM block {block:?}")]
    NoBlock {
        /// The block's name.
        block: String,
    },
    /// The block's sizes are no RAM a guest could have.
    #[error("RAM block {block:?}: used {used:#x} and total {total:#x} bytes: expected equal, non-zero and page-aligned")]
    BadBlockSize {
        /// The block's name.
        block: String,
        /// Its used length.
        used: u64,
        /// Its total (maximal) length.
        total: u64,
    },
    /// The flat view's ranges do not fit the block (past its end, overlapping).
    #[error("RAM block {block:?} ({size:#x} bytes): {reason}")]
    BadSegments {
        /// The block's name.
        block: String,
        /// Its size.
        size: u64,
        /// What is wrong.
        reason: String,
    },
    /// No anonymous read-write mapping of the block's size.
    #[error("no anonymous read-write mapping of {size:#x} bytes (the RAM block's size) in /proc/PID/maps: is guest RAM file-backed (use qemu:FILE) or in huge pages?")]
    NoMapping {
        /// The block's size.
        size: u64,
    },
    /// Several anonymous read-write mappings of the block's size.
    #[error("{count} anonymous read-write mappings of {size:#x} bytes in /proc/PID/maps: cannot tell which is guest RAM")]
    AmbiguousMapping {
        /// The block's size.
        size: u64,
        /// How many there are.
        count: usize,
    },
}

/// The RAM block behind the guest's RAM and where its ranges sit in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatRam {
    /// The RAM block's name (`pc.ram`, or a memory backend's id).
    pub block: String,
    /// Each guest-physical RAM range and its offset in the block (`Segment::file_offset`).
    pub segments: Vec<Segment>,
}

/// The RAM ranges of the `memory` address space in `info mtree -f` output.
pub fn flat_ram(mtree: &str) -> Result<FlatRam, LayoutError> {
    let view = mtree
        .split("FlatView #")
        .find(|view| view.lines().any(|line| line.trim_start().starts_with("AS \"memory\",")))
        .ok_or(LayoutError::NoMemoryView)?;
    let mut block: Option<&str> = None;
    let mut segments = Vec::new();
    for line in view.lines().filter(|line| line.contains(", ram): ")) {
        let bad = || LayoutError::BadLine { line: line.trim().to_owned() };
        let (range, rest) = line.trim().split_once(' ').ok_or_else(bad)?;
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hex(start).ok_or_else(bad)?, hex(end).ok_or_else(bad)?);
        let len = end.checked_sub(start).and_then(|d| d.checked_add(1)).ok_or_else(bad)?;
        let (_, region) = rest.split_once("): ").ok_or_else(bad)?;
        let mut words = region.split_whitespace();
        let name = words.next().ok_or_else(bad)?;
        let offset = match words.next().and_then(|w| w.strip_prefix('@')) {
            Some(offset) => hex(offset).ok_or_else(bad)?,
            None => 0,
        };
        match block {
            Some(first) if first != name => return Err(LayoutError::SeveralBlocks { first: first.to_owned(), second: name.to_owned() }),
            _ => block = Some(name),
        }
        segments.push(Segment { range: PhysRange { start: Gpa(start), len }, file_offset: offset });
    }
    let block = block.ok_or(LayoutError::NoRam)?.to_owned();
    Ok(FlatRam { block, segments })
}

/// The size of RAM block `block` in `info ramblock` output (rows `NAME PSIZE OFFSET USED TOTAL`,
/// the page size in two words such as `4 KiB`): its used length, which must equal its total.
pub fn block_size(ramblock: &str, block: &str) -> Result<u64, LayoutError> {
    let row = ramblock
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&block))
        .ok_or_else(|| LayoutError::NoBlock { block: block.to_owned() })?;
    let field = |from_end: usize| row.len().checked_sub(from_end).and_then(|i| row.get(i)).and_then(|w| w.strip_prefix("0x")).and_then(hex);
    let (used, total) = (field(2).unwrap_or(0), field(1).unwrap_or(0));
    if used == 0 || used != total || used % super::PAGE_SIZE != 0 {
        return Err(LayoutError::BadBlockSize { block: block.to_owned(), used, total });
    }
    Ok(used)
}

/// The start address of the one private anonymous read-write mapping of exactly `size` bytes in
/// `/proc/PID/maps` text.
pub fn anonymous_mapping(maps: &str, size: u64) -> Result<u64, LayoutError> {
    let candidates: Vec<u64> = maps
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // START-END PERMS OFFSET DEV INODE, and no path: anonymous.
            let [range, perms, _offset, _dev, inode] = words[..] else { return None };
            let (start, end) = range.split_once('-')?;
            let (start, end) = (hex(start)?, hex(end)?);
            (perms.starts_with("rw") && perms.ends_with('p') && inode == "0" && end.checked_sub(start) == Some(size)).then_some(start)
        })
        .collect();
    match candidates[..] {
        [start] => Ok(start),
        [] => Err(LayoutError::NoMapping { size }),
        _ => Err(LayoutError::AmbiguousMapping { size, count: candidates.len() }),
    }
}

/// A hexadecimal number without prefix, all digits.
fn hex(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from QEMU 7.2 (`-machine q35 -m 256M`, TCG).
    const MTREE_256M: &str = include_str!("testdata/mtree-q35-256m.txt");
    /// Captured from QEMU 7.2 (`-machine q35 -m 3G`, TCG): RAM split around the PCI hole.
    const MTREE_3G: &str = include_str!("testdata/mtree-q35-3g.txt");
    /// `info ramblock` of the 256 MiB guest.
    const RAMBLOCK_256M: &str = include_str!("testdata/ramblock-q35-256m.txt");
    /// An excerpt of the 3 GiB guest's `/proc/PID/maps` (shared libraries left out).
    const MAPS_3G: &str = include_str!("testdata/maps-q35-3g.txt");

    fn seg(start: u64, len: u64, file_offset: u64) -> Segment {
        Segment { range: PhysRange { start: Gpa(start), len }, file_offset }
    }

    #[test]
    fn a_small_q35_guest_has_ram_below_and_above_the_legacy_hole() {
        let ram = flat_ram(MTREE_256M).expect("flat view");
        assert_eq!(ram.block, "pc.ram");
        assert_eq!(ram.segments, vec![seg(0, 0xa0000, 0), seg(0x10_0000, 0x0ff0_0000, 0x10_0000)]);
        assert_eq!(block_size(RAMBLOCK_256M, "pc.ram"), Ok(256 << 20));
    }

    #[test]
    fn a_large_q35_guest_has_ram_above_four_gib() {
        let ram = flat_ram(MTREE_3G).expect("flat view");
        assert_eq!(
            ram.segments,
            vec![seg(0, 0xa0000, 0), seg(0x10_0000, 0x7ff0_0000, 0x10_0000), seg(0x1_0000_0000, 0x4000_0000, 0x8000_0000)]
        );
        assert_eq!(anonymous_mapping(MAPS_3G, 0xc000_0000), Ok(0x7feb_cfe0_0000));
    }

    #[test]
    fn mappings_are_matched_by_exact_size_only() {
        assert_eq!(anonymous_mapping(MAPS_3G, 0xc000_1000), Err(LayoutError::NoMapping { size: 0xc000_1000 }));
        // The TCG code buffer is rwx but private and anonymous too: one of two of its size.
        let doubled = format!("{MAPS_3G}7ff000000000-7ff03ffff000 rw-p 00000000 00:00 0 \n");
        assert_eq!(anonymous_mapping(&doubled, 0x3fff_f000), Err(LayoutError::AmbiguousMapping { size: 0x3fff_f000, count: 2 }));
        let shared = "7f0000000000-7f0010000000 rw-s 00000000 00:01 1234 /dev/shm/ram\n";
        assert_eq!(anonymous_mapping(shared, 0x1000_0000), Err(LayoutError::NoMapping { size: 0x1000_0000 }));
    }

    #[test]
    fn bad_texts_are_refused() {
        assert_eq!(flat_ram("nothing here"), Err(LayoutError::NoMemoryView));
        let view = "FlatView #0\n AS \"memory\", root: system\n Root memory region: system\n";
        assert_eq!(flat_ram(view), Err(LayoutError::NoRam));
        let backwards = format!("{view}  0000000000100000-000000000000ffff (prio 0, ram): pc.ram\n");
        assert!(matches!(flat_ram(&backwards), Err(LayoutError::BadLine { .. })));
        let two = format!("{view}  0-fff (prio 0, ram): a\n  1000-1fff (prio 0, ram): b\n");
        assert!(matches!(flat_ram(&two), Err(LayoutError::SeveralBlocks { .. })));
        let odd_offset = format!("{view}  0-fff (prio 0, ram): a @xyz\n");
        assert!(matches!(flat_ram(&odd_offset), Err(LayoutError::BadLine { .. })));
        assert_eq!(block_size(RAMBLOCK_256M, "mem"), Err(LayoutError::NoBlock { block: "mem".into() }));
        // A resizable block, used below its total: not the RAM of an ordinary guest.
        let resized = "pc.ram    4 KiB  0x0 0x0000000000001000 0x0000000000002000";
        assert!(matches!(block_size(resized, "pc.ram"), Err(LayoutError::BadBlockSize { .. })));
    }
}
