//! Where guest-physical ranges live inside a backing file (the QEMU RAM file, a core dump).

use super::{check_access, Gpa, MemoryError, PhysRange};

/// One guest-physical range stored contiguously at `file_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The guest-physical range.
    pub range: PhysRange,
    /// Where its first byte sits in the backing file.
    pub file_offset: u64,
}

/// A sorted, disjoint set of segments, with the RAM ranges they cover.
#[derive(Clone, Debug)]
pub struct SegmentMap {
    segments: Vec<Segment>,
    /// Guest-physical RAM ranges: GPA-adjacent segments merged, so an access may span them.
    ranges: Vec<PhysRange>,
}

impl SegmentMap {
    /// Builds the map from segments in any order; fails on empty or overlapping segments, or
    /// segments that lie outside a backing file of `file_len` bytes.
    pub fn new(mut segments: Vec<Segment>, file_len: u64) -> Result<Self, String> {
        segments.retain(|s| s.range.len > 0);
        segments.sort_by_key(|s| s.range.start);
        let mut ranges: Vec<PhysRange> = Vec::new();
        for s in &segments {
            let file_end = s.file_offset.checked_add(s.range.len);
            if file_end.is_none_or(|end| end > file_len) {
                return Err(format!("segment at {} ({:#x} bytes) lies beyond the end of the file", s.range.start, s.range.len));
            }
            if s.range.start.checked_add(s.range.len).is_none() {
                return Err(format!("segment at {} overflows the address space", s.range.start));
            }
            match ranges.last_mut() {
                Some(last) if last.end() > s.range.start.raw() => {
                    return Err(format!("segments overlap at {}", s.range.start));
                }
                Some(last) if last.end() == s.range.start.raw() => last.len += s.range.len,
                _ => ranges.push(s.range),
            }
        }
        if ranges.is_empty() {
            return Err("no guest RAM in it".into());
        }
        Ok(Self { segments, ranges })
    }

    /// The guest-physical RAM ranges.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// Calls `copy(file_offset, start, end)` for each piece of `[gpa, gpa + len)`: the piece's
    /// position in the file and its `start..end` position within the access. Checks the whole
    /// access first, so either every piece is visited or none is.
    pub fn for_each_piece(
        &self,
        gpa: Gpa,
        len: usize,
        mut copy: impl FnMut(u64, usize, usize),
    ) -> Result<(), MemoryError> {
        check_access(&self.ranges, gpa, len)?;
        let first = self.segments.partition_point(|s| s.range.end() <= gpa.raw());
        let mut done = 0usize;
        for s in &self.segments[first..] {
            if done == len {
                break;
            }
            // The access is inside one merged range, so segments are contiguous from here on.
            let at = gpa.raw() + done as u64;
            let inside = at - s.range.start.raw();
            let n = usize::try_from(s.range.len - inside).map_or(len - done, |avail| avail.min(len - done));
            copy(s.file_offset + inside, done, done + n);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, len: u64, file_offset: u64) -> Segment {
        Segment { range: PhysRange { start: Gpa(start), len }, file_offset }
    }

    #[test]
    fn adjacent_segments_merge_and_split_accesses() {
        let map = SegmentMap::new(vec![seg(0x2000, 0x1000, 0), seg(0x1000, 0x1000, 0x5000)], 0x6000).expect("valid");
        assert_eq!(map.ranges(), &[PhysRange { start: Gpa(0x1000), len: 0x2000 }]);
        let mut pieces = Vec::new();
        map.for_each_piece(Gpa(0x1ff0), 0x20, |off, a, b| pieces.push((off, a, b))).expect("inside");
        assert_eq!(pieces, vec![(0x5ff0, 0, 0x10), (0, 0x10, 0x20)]);
    }

    #[test]
    fn bad_segments_are_refused() {
        assert!(SegmentMap::new(vec![seg(0, 0x2000, 0), seg(0x1000, 0x1000, 0)], 0x2000).is_err());
        assert!(SegmentMap::new(vec![seg(0, 0x2000, 0x1000)], 0x2000).is_err());
        assert!(SegmentMap::new(vec![], 0).is_err());
        assert!(SegmentMap::new(vec![seg(u64::MAX - 1, 0x10, 0)], 0x10).is_err());
    }

    #[test]
    fn accesses_outside_ram_touch_nothing() {
        let map = SegmentMap::new(vec![seg(0, 0x1000, 0), seg(0x3000, 0x1000, 0x1000)], 0x2000).expect("valid");
        let mut calls = 0;
        assert!(map.for_each_piece(Gpa(0xff0), 0x20, |_, _, _| calls += 1).is_err());
        assert_eq!(calls, 0);
    }
}
