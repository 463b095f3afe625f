//! Reading a guest Linux kernel: finding it in guest memory and translating its addresses.
//!
//! [`locate`] matches a guest against the layout profiles (banner, KASLR shifts, page tables,
//! per-CPU areas); [`kernel::Kernel`] then reads kernel-virtual memory through that location.

mod error;
pub mod cgroup;
pub mod discover;
pub mod flavour;
pub mod incremental;
pub mod kernel;
pub mod layout;
pub mod locate;
pub mod redo;
pub mod runqueue;
pub mod snapshot;
pub mod state;
#[cfg(any(test, feature = "synthetic"))]
pub mod synthetic;
pub mod tasks;
pub mod virt;
pub mod walk;

pub use error::LinuxError;
pub use kernel::Kernel;
