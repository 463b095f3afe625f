//! xsched: a system-wide process scheduler that spans virtual machines.
//!
//! The data path, one module per stage: a domain's guest-physical [`memory`] → the [`arch`] page-table
//! walk → the kernel layout [`profile`] → the [`linux`] kernel reader.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("xsched runs on 64-bit hosts: guest addresses and file offsets are used as `usize`");

pub mod actuate;
pub mod arch;
pub mod domain;
pub mod interrupt;
pub mod linux;
pub mod memory;
pub mod policy;
pub mod profile;
pub mod run;
pub mod supervise;
pub mod table;
pub mod timeline;
