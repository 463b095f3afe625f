//! Typed field offsets of the kernel structs xsched reads, resolved from a profile once.
//!
//! Hot paths decode fields from one copy of a struct ([`StructBuf`]) instead of looking names up
//! in the profile or reading field by field.

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
    pub fn at(self, base: Gva) -> Result<Gva, LinuxError> {
        super::walk::add(base, self.offset)
    }

    /// One past this field's last byte.
    pub const fn end(self) -> u64 {
        self.offset + self.size
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
            .ok_or_else(|| LinuxError::Walk(format!("field at +{:#x} lies beyond the {} bytes read at {}", field.offset, self.bytes.len(), self.base)))
    }

    /// The little-endian unsigned value of a scalar `field`.
    pub fn uint(&self, field: Field) -> Result<u64, LinuxError> {
        let bytes = self.bytes(field)?;
        let mut le = [0u8; 8];
        le[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        Ok(u64::from_le_bytes(le))
    }

    /// The signed value of a scalar `field` (sign-extended from its width).
    pub fn int(&self, field: Field) -> Result<i64, LinuxError> {
        let shift = 64 - 8 * field.size.min(8);
        Ok(((self.uint(field)? << shift) as i64) >> shift)
    }

    /// A pointer-valued `field`.
    pub fn ptr(&self, field: Field) -> Result<Gva, LinuxError> {
        self.uint(field).map(Gva)
    }
}
