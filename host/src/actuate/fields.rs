//! Reading and writing single fields and list links of guest kernel structs: the write side's
//! small vocabulary, shared by the flavour-neutral part (`park`) and each flavour (`fair`).

use crate::linux::layout::Field;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::walk::{add, ListHeadLayout};
use crate::linux::LinuxError;
use crate::memory::Gva;

/// Reads a scalar field of the struct at `base`.
pub(super) fn get<K: KernelMemory + ?Sized>(mem: &K, base: Gva, f: Field) -> Result<u64, LinuxError> {
    let mut b = [0u8; 8];
    let n = crate::memory::to_usize(f.size.min(8));
    mem.read_virt(f.at(base)?, &mut b[..n])?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a scalar field that must fit 32 bits (`int`, `unsigned int`, `pid_t`).
pub(super) fn get_u32<K: KernelMemory + ?Sized>(mem: &K, base: Gva, f: Field) -> Result<u32, LinuxError> {
    let value = get(mem, base, f)?;
    u32::try_from(value).map_err(|_| LinuxError::Not32Bits { base, offset: f.offset, value })
}

/// Reads a signed 32-bit field (`int`), sign-extending it.
pub(super) fn get_i32<K: KernelMemory + ?Sized>(mem: &K, base: Gva, f: Field) -> Result<i32, LinuxError> {
    // Two's complement reinterpretation of the field's 32 bits, as C reads an `int`.
    get_u32(mem, base, f).map(|v| v as i32)
}

/// Writes a scalar field of the struct at `base`.
pub(super) fn set<K: KernelMemoryMut + ?Sized>(mem: &mut K, base: Gva, f: Field, value: u64) -> Result<(), LinuxError> {
    let n = crate::memory::to_usize(f.size.min(8));
    mem.write_virt(f.at(base)?, &value.to_le_bytes()[..n])
}

/// Adds `delta` to a scalar counter field.
pub(super) fn bump<K: KernelMemoryMut + ?Sized>(mem: &mut K, base: Gva, f: Field, delta: u64) -> Result<(), LinuxError> {
    let value = get(mem, base, f)?;
    set(mem, base, f, value.wrapping_add(delta))
}

/// Whether a lock word (spinlock, `raw_spinlock_t`) is held: any byte non-zero.
pub(super) fn locked<K: KernelMemory + ?Sized>(mem: &K, base: Gva, f: Field) -> Result<bool, LinuxError> {
    let mut b = vec![0u8; crate::memory::to_usize(f.size.min(64))];
    mem.read_virt(f.at(base)?, &mut b)?;
    Ok(b.iter().any(|&x| x != 0))
}

/// `list_add(new, head)`: inserts `new` right after `head`.
pub(super) fn list_add<K: KernelMemoryMut + ?Sized>(mem: &mut K, list: ListHeadLayout, new: Gva, head: Gva) -> Result<(), LinuxError> {
    let next = mem.read_ptr(add(head, list.next)?)?;
    list_insert(mem, list, new, head, next)
}

/// `list_add_tail(new, head)`: inserts `new` right before `head`.
pub(super) fn list_add_tail<K: KernelMemoryMut + ?Sized>(mem: &mut K, list: ListHeadLayout, new: Gva, head: Gva) -> Result<(), LinuxError> {
    let prev = mem.read_ptr(add(head, list.prev)?)?;
    list_insert(mem, list, new, prev, head)
}

/// Links `new` between `prev` and `next`, which must be adjacent (the check `DEBUG_LIST` makes).
fn list_insert<K: KernelMemoryMut + ?Sized>(mem: &mut K, list: ListHeadLayout, new: Gva, prev: Gva, next: Gva) -> Result<(), LinuxError> {
    if mem.read_ptr(add(prev, list.next)?)? != next || mem.read_ptr(add(next, list.prev)?)? != prev {
        return Err(LinuxError::ListCorrupted { prev, next });
    }
    if new == prev || new == next {
        return Err(LinuxError::AlreadyListed { node: new });
    }
    mem.write_u64(add(next, list.prev)?, new.raw())?;
    mem.write_u64(add(new, list.next)?, next.raw())?;
    mem.write_u64(add(new, list.prev)?, prev.raw())?;
    mem.write_u64(add(prev, list.next)?, new.raw())
}

