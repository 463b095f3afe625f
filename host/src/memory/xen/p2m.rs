//! A Xen PV guest's physical-to-machine map (p2m) and its inverse, from the guest's own tables.
//!
//! A PV guest runs on machine frames (MFNs): its page-table entries name them, and a foreign
//! mapping of a PV domain takes them. The guest keeps its pseudo-physical view, pfn -> mfn, in a
//! three-level structure it publishes in its shared-info page for tools (save/restore, core dumps):
//!
//! - `shared_info.arch.max_pfn`: how many pfns the p2m covers;
//! - `shared_info.arch.pfn_to_mfn_frame_list_list`: the MFN of one page of MFNs ("frame list
//!   list"), each naming a page of MFNs ("frame list"), each naming a page of the p2m itself, an
//!   array of MFNs indexed by pfn.
//!
//! Everything here is parsed from guest memory and is therefore untrusted: sizes are capped by the
//! caller, entries outside the machine address space or carrying Linux's marker bits become
//! holes, and nothing indexes unchecked.

use std::mem::offset_of;

use xenctrl_sys as xc;

/// 8-byte entries per 4 KiB page, at every level of the p2m structure (64-bit guests).
pub(super) const ENTRIES_PER_PAGE: u64 = 512;

/// Highest machine frame bit + 1: x86-64 physical addresses have at most 52 bits.
const MFN_BITS: u32 = 52 - 12;
/// Linux's `FOREIGN_FRAME_BIT` and `IDENTITY_FRAME_BIT` (arch/x86/include/asm/xen/page.h): the
/// entry is not one of the guest's own RAM frames. `INVALID_P2M_ENTRY` (all ones) has them too.
const MARKER_BITS: u64 = 3 << 62;

/// Where `max_pfn` and `pfn_to_mfn_frame_list_list` sit in the shared-info page (Xen's public
/// `struct shared_info`, 64-bit layout, as the 4.17 headers define it).
const MAX_PFN_OFFSET: usize =
    offset_of!(xc::shared_info, arch) + offset_of!(xc::arch_shared_info, max_pfn);
const FRAME_LIST_LIST_OFFSET: usize = offset_of!(xc::shared_info, arch)
    + offset_of!(xc::arch_shared_info, pfn_to_mfn_frame_list_list);

/// What the guest publishes in its shared-info page about its p2m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct P2mRoot {
    /// Number of pfns the p2m covers (`arch.max_pfn`).
    pub max_pfn: u64,
    /// MFN of the frame list list (`arch.pfn_to_mfn_frame_list_list`).
    pub frame_list_list: u64,
}

impl P2mRoot {
    /// Reads the root from a copy of the shared-info page; `None` if the page is too short.
    pub fn parse(shared_info: &[u8]) -> Option<Self> {
        Some(Self {
            max_pfn: le_u64(shared_info, MAX_PFN_OFFSET)?,
            frame_list_list: le_u64(shared_info, FRAME_LIST_LIST_OFFSET)?,
        })
    }

    /// Whether the guest has published a frame list list: Linux leaves it 0 until it has set the
    /// p2m up, and all ones when the toolstack asked for the virtual p2m list instead.
    pub fn is_published(&self) -> bool {
        self.frame_list_list != 0 && valid_mfn(self.frame_list_list).is_some()
    }
}

/// How many p2m pages hold `pfns` entries, and how many frame-list pages name those.
pub(super) fn pages_for(pfns: u64) -> (u64, u64) {
    let p2m_pages = pfns.div_ceil(ENTRIES_PER_PAGE);
    (p2m_pages, p2m_pages.div_ceil(ENTRIES_PER_PAGE))
}

/// The first `count` little-endian 8-byte entries of `pages` (a copy of consecutive guest pages).
/// `None` if `pages` holds fewer.
pub(super) fn entries(pages: &[u8], count: u64) -> Option<Vec<u64>> {
    let count = usize::try_from(count).ok()?;
    let bytes = pages.get(..count.checked_mul(8)?)?;
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// A frame-list entry as an MFN to map, or `None` if it cannot be a machine frame.
pub(super) fn valid_mfn(entry: u64) -> Option<u64> {
    (entry & MARKER_BITS == 0 && entry >> MFN_BITS == 0).then_some(entry)
}

/// A PV guest's pfn -> mfn map, with its inverse for page-table entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct P2m {
    /// Indexed by pfn: the MFN, or `None` for a hole (invalid, foreign or identity entry).
    mfns: Vec<Option<u64>>,
    /// `(mfn, pfn)` sorted by mfn: the inverse. An MFN listed at several pfns (a confused or
    /// hostile guest) maps back to the lowest.
    by_mfn: Vec<(u64, u64)>,
}

impl P2m {
    /// Builds the map from the p2m's raw entries, pfn 0 first.
    pub fn from_entries(raw: &[u64]) -> Self {
        let mfns: Vec<Option<u64>> = raw.iter().map(|&e| valid_mfn(e)).collect();
        let mut by_mfn: Vec<(u64, u64)> = mfns
            .iter()
            .zip(0u64..)
            .filter_map(|(mfn, pfn)| mfn.map(|m| (m, pfn)))
            .collect();
        by_mfn.sort_unstable();
        by_mfn.dedup_by_key(|(mfn, _)| *mfn);
        Self { mfns, by_mfn }
    }

    /// Number of pfns covered.
    pub fn len(&self) -> u64 {
        self.mfns.len() as u64
    }

    /// The MFN behind `pfn`, if it is a RAM frame of the guest.
    pub fn mfn(&self, pfn: u64) -> Option<u64> {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| self.mfns.get(i))
            .copied()
            .flatten()
    }

    /// The pfn the guest maps `mfn` at, if any.
    pub fn pfn(&self, mfn: u64) -> Option<u64> {
        self.by_mfn
            .binary_search_by_key(&mfn, |&(m, _)| m)
            .ok()
            .and_then(|i| self.by_mfn.get(i))
            .map(|&(_, pfn)| pfn)
    }
}

/// A little-endian `u64` at `offset` of `bytes`.
fn le_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    bytes
        .get(offset..offset.checked_add(8)?)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_read_where_xen_puts_it() {
        // struct shared_info: 32 vcpu_info of 64 bytes, two 64-entry event bitmaps, four u32s.
        assert_eq!(MAX_PFN_OFFSET, 32 * 64 + 2 * 64 * 8 + 16);
        assert_eq!(FRAME_LIST_LIST_OFFSET, MAX_PFN_OFFSET + 8);
        let mut page = vec![0u8; 4096];
        page[MAX_PFN_OFFSET..MAX_PFN_OFFSET + 8].copy_from_slice(&0x2_8000u64.to_le_bytes());
        page[FRAME_LIST_LIST_OFFSET..FRAME_LIST_LIST_OFFSET + 8]
            .copy_from_slice(&0x1234u64.to_le_bytes());
        let root = P2mRoot::parse(&page).expect("whole page");
        assert_eq!(
            root,
            P2mRoot {
                max_pfn: 0x2_8000,
                frame_list_list: 0x1234
            }
        );
        assert!(root.is_published());
        assert!(P2mRoot::parse(&page[..100]).is_none());
        assert!(!P2mRoot {
            max_pfn: 1,
            frame_list_list: 0
        }
        .is_published());
        assert!(!P2mRoot {
            max_pfn: 1,
            frame_list_list: u64::MAX
        }
        .is_published());
    }

    #[test]
    fn page_counts() {
        assert_eq!(pages_for(0), (0, 0));
        assert_eq!(pages_for(1), (1, 1));
        assert_eq!(pages_for(512), (1, 1));
        assert_eq!(pages_for(513), (2, 1));
        assert_eq!(pages_for(512 * 512 + 1), (513, 2));
        assert_eq!(
            pages_for(u64::MAX),
            (u64::MAX / 512 + 1, (u64::MAX / 512 + 1).div_ceil(512))
        );
    }

    #[test]
    fn entries_need_enough_bytes() {
        let bytes: Vec<u8> = [7u64, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(entries(&bytes, 2), Some(vec![7, 8]));
        assert_eq!(entries(&bytes, 3), Some(vec![7, 8, 9]));
        assert_eq!(entries(&bytes, 4), None);
        assert_eq!(entries(&bytes, u64::MAX), None);
    }

    #[test]
    fn markers_and_wild_frames_are_holes() {
        let raw = [
            0x100,
            u64::MAX,
            0x101,
            (1 << 63) | 0x102,
            (1 << 62) | 0x103,
            1 << 40,
            0x0f_ffff_ffff,
            0x101,
        ];
        let p2m = P2m::from_entries(&raw);
        assert_eq!(p2m.len(), 8);
        let mfns: Vec<Option<u64>> = (0..9).map(|pfn| p2m.mfn(pfn)).collect();
        assert_eq!(
            mfns,
            [
                Some(0x100),
                None,
                Some(0x101),
                None,
                None,
                None,
                Some(0x0f_ffff_ffff),
                Some(0x101),
                None
            ]
        );
        assert_eq!(p2m.pfn(0x100), Some(0));
        // Listed twice: the lowest pfn.
        assert_eq!(p2m.pfn(0x101), Some(2));
        assert_eq!(p2m.pfn(0x0f_ffff_ffff), Some(6));
        assert_eq!(p2m.pfn(0x102), None);
        assert_eq!(p2m.pfn(u64::MAX), None);
    }

    #[test]
    fn inverse_agrees_with_the_map_on_a_shuffled_guest() {
        // A fixed pseudo-random permutation of machine frames with holes, as a ballooned guest has.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let raw: Vec<u64> = (0..20_000u64)
            .map(|pfn| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state.is_multiple_of(9) {
                    u64::MAX
                } else {
                    (pfn * 7919) % 1_000_003 + 0x10_0000
                }
            })
            .collect();
        let p2m = P2m::from_entries(&raw);
        for pfn in 0..p2m.len() {
            if let Some(mfn) = p2m.mfn(pfn) {
                assert_eq!(p2m.pfn(mfn), Some(pfn), "pfn {pfn}");
            }
        }
    }
}
