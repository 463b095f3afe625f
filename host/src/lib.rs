//! xsched: a system-wide process scheduler that spans virtual machines.
//!
//! The data path, one module per stage: a domain's guest-physical [`memory`] → the [`arch`] page-table
//! walk → the kernel layout [`profile`] → the [`linux`] kernel reader.

pub mod actuate;
pub mod arch;
pub mod domain;
pub mod linux;
pub mod memory;
pub mod profile;
pub mod run;
pub mod table;
