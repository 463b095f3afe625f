//! A small guest image for the flavour modules' unit tests: a runqueue (or two) at the start of
//! the direct map, entities from 0x1000 on, 0x200 apart.

use crate::linux::layout::Field;
use crate::linux::virt::DirectMapped;
use crate::memory::{Gva, ImageMemory};

use super::set;

/// Where the image's direct map starts: its physical 0.
pub const BASE: Gva = Gva(0xffff_8880_0000_0000);

/// The `i`th entity (0 to 7).
pub fn entity(i: u64) -> Gva {
    Gva(BASE.raw() + 0x1000 + 0x200 * i)
}

/// A zeroed image holding the runqueue area and eight entities.
pub fn memory() -> DirectMapped<ImageMemory> {
    DirectMapped::new(ImageMemory::zeroed(0x1000 + 0x200 * 8), BASE)
}

/// Writes `value` into field `f` of the struct at `base`.
pub fn put(mem: &mut DirectMapped<ImageMemory>, base: Gva, f: Field, value: u64) {
    set(mem, base, f, value).expect("write");
}
