//! The kernel's fixed-point weight arithmetic (kernel/sched/fair.c), shared by the EEVDF
//! flavours: `scale_load_down` and `__calc_delta` with its cached inverse weight.

use crate::linux::layout::Field;
use crate::linux::virt::KernelMemoryMut;
use crate::linux::LinuxError;
use crate::memory::Gva;

use super::super::fields::{get, set};

/// `WMULT_SHIFT`: the fixed-point shift of inverse weights.
const WMULT_SHIFT: u32 = 32;
/// `WMULT_CONST`: `~0U`.
const WMULT_CONST: u64 = 0xffff_ffff;

/// A `struct load_weight` inside an entity: its `weight` and cached `inv_weight`.
#[derive(Clone, Copy, Debug)]
pub struct LoadWeight {
    /// `load_weight.weight`, relative to the entity.
    pub weight: Field,
    /// `load_weight.inv_weight`, relative to the entity.
    pub inv_weight: Field,
}

/// `scale_load_down(weight)` on 64-bit: the weight without its `shift` fixed-point bits, at
/// least 2 when not zero.
pub fn scale_load_down(weight: u64, shift: u32) -> u64 {
    if weight == 0 {
        0
    } else {
        (weight >> shift).max(2)
    }
}

/// `__calc_delta(delta_exec, weight, lw)` for the load weight `lw` of the entity at `se`:
/// `delta_exec * weight / lw.weight` in the kernel's 32-bit fixed point, computing (and storing)
/// the cached inverse weight first, as `__update_inv_weight` does.
pub fn calc_delta<K: KernelMemoryMut + ?Sized>(mem: &mut K, delta_exec: u64, weight: u64, se: Gva, lw: LoadWeight, shift: u32) -> Result<u64, LinuxError> {
    let mut inv_weight = get(mem, se, lw.inv_weight)?;
    if inv_weight == 0 {
        let w = scale_load_down(get(mem, se, lw.weight)?, shift);
        inv_weight = if w >= WMULT_CONST { 1 } else { WMULT_CONST.checked_div(w).unwrap_or(WMULT_CONST) };
        set(mem, se, lw.inv_weight, inv_weight)?;
    }
    let mut fact = scale_load_down(weight, shift);
    let mut shift = WMULT_SHIFT;
    let fact_hi = fact >> 32;
    if fact_hi != 0 {
        let fs = u64::BITS - fact_hi.leading_zeros();
        shift -= fs.min(shift);
        fact >>= fs;
    }
    fact = (fact & WMULT_CONST) * (inv_weight & WMULT_CONST);
    let fact_hi = fact >> 32;
    if fact_hi != 0 {
        let fs = u64::BITS - fact_hi.leading_zeros();
        shift -= fs.min(shift);
        fact >>= fs;
    }
    // mul_u64_u32_shr
    let product = u128::from(delta_exec) * u128::from(fact & WMULT_CONST);
    Ok(u64::try_from(product >> shift).unwrap_or(u64::MAX))
}

/// `calc_delta_fair(delta, se)` against the load weight `lw`: `delta` scaled by
/// NICE_0_LOAD / its weight, unchanged at nice 0.
pub fn calc_delta_fair<K: KernelMemoryMut + ?Sized>(mem: &mut K, delta: u64, se: Gva, lw: LoadWeight, nice_0_load: u64, shift: u32) -> Result<u64, LinuxError> {
    if get(mem, se, lw.weight)? == nice_0_load {
        return Ok(delta);
    }
    calc_delta(mem, delta, nice_0_load, se, lw, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_load_down_keeps_at_least_two() {
        assert_eq!(scale_load_down(0, 10), 0);
        assert_eq!(scale_load_down(15 << 10, 10), 15);
        assert_eq!(scale_load_down(1, 10), 2);
    }
}
