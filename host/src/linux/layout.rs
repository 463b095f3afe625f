//! Typed field offsets of the kernel structs xsched reads, resolved from a profile once.
//!
//! Hot paths decode fields from one copy of a struct ([`StructBuf`]) instead of looking names up
//! in the profile or reading field by field; for big structs, a copy of only the parts that hold
//! the fields decoded ([`Extents`]).

use crate::memory::Gva;
use crate::profile::Profile;

use super::virt::KernelMemory;
use super::LinuxError;

/// Where a field sits in its struct, and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset inside the struct.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Field {
    /// Looks `strukt.field` up in `profile`.
    pub fn of(profile: &Profile, strukt: &str, field: &str) -> Result<Self, LinuxError> {
        let f = profile.field(strukt, field)?;
        Ok(Self { offset: f.offset, size: f.size })
    }

    /// Looks up a numeric field, which must be 1, 2, 4 or 8 bytes wide.
    pub fn scalar(profile: &Profile, strukt: &str, field: &str) -> Result<Self, LinuxError> {
        let f = Self::of(profile, strukt, field)?;
        if !matches!(f.size, 1 | 2 | 4 | 8) {
            return Err(LinuxError::Inconsistent {
                release: profile.release.clone(),
                what: format!("{strukt}.{field} is {} bytes wide, not a scalar", f.size),
            });
        }
        Ok(f)
    }

    /// The address of this field in the struct at `base`.
    #[inline]
    pub fn at(self, base: Gva) -> Result<Gva, LinuxError> {
        super::walk::add(base, self.offset)
    }

    /// One past this field's last byte.
    pub const fn end(self) -> u64 {
        self.offset + self.size
    }
}

/// Fields closer than this (in bytes) are copied in one piece: one more guest read costs about
/// as much as copying a few hundred bytes (measured on QEMU RAM: ~230 instructions a read).
const MERGE_GAP: u64 = 512;

/// The parts of a struct that hold a set of fields: byte ranges, sorted, those less than
/// [`MERGE_GAP`] apart merged. Copying these instead of the whole span skips the big holes (the
/// `task_struct` fields xsched decodes come in two pieces of 2.3 KB out of its first 3.6 KB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extents {
    ranges: Vec<(u64, u64)>,
}

impl Extents {
    /// The extents covering `fields`, those less than [`MERGE_GAP`] apart merged.
    pub fn of(fields: &[Field]) -> Self {
        Self::merged(fields, MERGE_GAP)
    }

    /// The extents covering `fields`, those less than `gap` bytes apart merged.
    pub fn merged(fields: &[Field], gap: u64) -> Self {
        let mut sorted: Vec<(u64, u64)> = fields.iter().map(|f| (f.offset, f.end())).collect();
        sorted.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (start, end) in sorted {
            match ranges.last_mut() {
                Some(last) if start <= last.1.saturating_add(gap) => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
        }
        Self { ranges }
    }

    /// One past the last byte covered.
    pub fn span(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    /// The `(start, end)` byte ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// A copy of (the first `len` bytes of) a guest struct, to decode fields from.
#[derive(Clone, Debug)]
pub struct StructBuf {
    base: Gva,
    bytes: Vec<u8>,
}

impl StructBuf {
    /// Reads `len` bytes of the struct at `base`.
    pub fn read<K: KernelMemory + ?Sized>(mem: &K, base: Gva, len: u64) -> Result<Self, LinuxError> {
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        mem.read_virt(base, &mut bytes)?;
        Ok(Self { base, bytes })
    }

    /// A zeroed buffer for `len` bytes of a struct, not read yet (its address is null).
    pub fn zeroed(len: u64) -> Self {
        Self { base: Gva(0), bytes: vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)] }
    }

    /// Reads only `extents` of the struct at `base` into this buffer, reusing its allocation.
    /// The bytes between the extents keep what they held: decode only fields the extents cover.
    pub fn refill_extents<K: KernelMemory + ?Sized>(&mut self, mem: &K, base: Gva, extents: &Extents) -> Result<(), LinuxError> {
        self.base = base;
        let len = self.bytes.len();
        for &(start, end) in &extents.ranges {
            let range = usize::try_from(start).ok().zip(usize::try_from(end).ok()).and_then(|(s, e)| self.bytes.get_mut(s..e));
            let bytes = range.ok_or(LinuxError::ExtentBeyond { start, end, len })?;
            mem.read_virt(super::walk::add(base, start)?, bytes)?;
        }
        Ok(())
    }

    /// Reads into an existing buffer, reusing its allocation.
    pub fn refill<K: KernelMemory + ?Sized>(&mut self, mem: &K, base: Gva) -> Result<(), LinuxError> {
        self.base = base;
        mem.read_virt(base, &mut self.bytes)
    }

    /// The struct's address.
    pub fn base(&self) -> Gva {
        self.base
    }

    /// The raw bytes of `field`.
    pub fn bytes(&self, field: Field) -> Result<&[u8], LinuxError> {
        usize::try_from(field.offset)
            .ok()
            .and_then(|start| self.bytes.get(start..start.checked_add(usize::try_from(field.size).ok()?)?))
            .ok_or(LinuxError::FieldBeyond { base: self.base, offset: field.offset, len: self.bytes.len() })
    }

    /// The little-endian unsigned value of a scalar `field`.
    #[inline]
    pub fn uint(&self, field: Field) -> Result<u64, LinuxError> {
        // Fixed widths first: a copy of unknown length is a libc call, dearer than the decode.
        Ok(match *self.bytes(field)? {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            ref bytes => {
                let mut le = [0u8; 8];
                let n = bytes.len().min(8);
                le[..n].copy_from_slice(&bytes[..n]);
                u64::from_le_bytes(le)
            }
        })
    }

    /// Whether the copy holds the first `len` bytes of the struct: then every field ending
    /// there decodes with [`Self::uint_or_zero`] and [`Self::int_or_zero`], one check for all.
    pub fn covers(&self, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| len <= self.bytes.len())
    }

    /// The little-endian value of a scalar `field`, 0 when the copy does not hold it: for
    /// decoders that checked [`Self::covers`] once for all their fields (no `Result` per field).
    #[inline]
    pub fn uint_or_zero(&self, field: Field) -> u64 {
        let start = usize::try_from(field.offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(field.size).unwrap_or(usize::MAX));
        match self.bytes.get(start..end) {
            Some(&[a]) => u64::from(a),
            Some(&[a, b]) => u64::from(u16::from_le_bytes([a, b])),
            Some(&[a, b, c, d]) => u64::from(u32::from_le_bytes([a, b, c, d])),
            Some(&[a, b, c, d, e, f, g, h]) => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            _ => 0,
        }
    }

    /// The sign-extended value of a scalar `field`, 0 when the copy does not hold it (see
    /// [`Self::uint_or_zero`]).
    #[inline]
    pub fn int_or_zero(&self, field: Field) -> i64 {
        let shift = 64 - 8 * field.size.clamp(1, 8);
        ((self.uint_or_zero(field) << shift) as i64) >> shift
    }

    /// A 32-bit unsigned field (`unsigned int`); a wider field whose value does not fit reads as
    /// `u32::MAX` rather than being truncated.
    pub fn u32_or_zero(&self, field: Field) -> u32 {
        u32::try_from(self.uint_or_zero(field)).unwrap_or(u32::MAX)
    }

    /// A 32-bit signed field (`int`, `pid_t`); a wider field whose value does not fit reads as
    /// `i32::MIN` rather than being truncated.
    pub fn i32_or_zero(&self, field: Field) -> i32 {
        i32::try_from(self.int_or_zero(field)).unwrap_or(i32::MIN)
    }

    /// [`Self::uint`] of a 32-bit unsigned field, refusing a value that does not fit.
    pub fn u32(&self, field: Field) -> Result<u32, LinuxError> {
        let value = self.uint(field)?;
        u32::try_from(value).map_err(|_| LinuxError::Not32Bits { base: self.base, offset: field.offset, value })
    }

    /// The signed value of a scalar `field` (sign-extended from its width).
    #[inline]
    pub fn int(&self, field: Field) -> Result<i64, LinuxError> {
        let shift = 64 - 8 * field.size.min(8);
        Ok(((self.uint(field)? << shift) as i64) >> shift)
    }

    /// A pointer-valued `field`.
    #[inline]
    pub fn ptr(&self, field: Field) -> Result<Gva, LinuxError> {
        self.uint(field).map(Gva)
    }
}
