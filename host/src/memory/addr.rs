//! Typed guest addresses: physical ([`Gpa`]) and kernel-virtual ([`Gva`]).
//!
//! Arithmetic on them is checked: an address that came from a guest can be anything, and an overflow
//! must become an error at the caller, never a wrap-around read somewhere else.

use std::fmt;

macro_rules! guest_address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw address value.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            pub fn checked_add(self, offset: u64) -> Option<Self> {
                self.0.checked_add(offset).map(Self)
            }

            /// `self - other` as a distance, or `None` when `other` lies above `self`.
            pub fn checked_offset_from(self, other: Self) -> Option<u64> {
                self.0.checked_sub(other.0)
            }

            /// The offset of this address inside its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (crate::memory::PAGE_SIZE - 1)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

guest_address!(
    /// A guest-physical address (for Xen PV guests: a pseudo-physical address).
    Gpa
);
guest_address!(
    /// A guest kernel-virtual address, as the guest's page tables translate it.
    Gva
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Gpa(u64::MAX).checked_add(1), None);
        assert_eq!(Gpa(0x1000).checked_add(0x10), Some(Gpa(0x1010)));
        assert_eq!(Gva(0x10).checked_offset_from(Gva(0x20)), None);
        assert_eq!(Gva(0x1234).page_offset(), 0x234);
        assert_eq!(format!("{:?}", Gpa(0x1f)), "Gpa(0x1f)");
    }
}
