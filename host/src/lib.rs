//! xsched: a system-wide process scheduler that spans virtual machines.
//!
//! The data path, one module per stage: a domain's guest-physical [`memory`] → the [`arch`] page-table
//! walk → the kernel layout [`profile`] → the [`linux`] kernel reader. Small modules serve
//! every stage and use none: [`files`] opens what an operator names (regular files only),
//! [`text`] makes what a guest wrote safe to show, and [`interrupt`] defers a stop signal while
//! a guest is held. Above the data path, [`run`] is the loop and [`supervise`] its keeper.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("xsched runs on 64-bit hosts: guest addresses and file offsets are used as `usize`");

pub mod actuate;
pub mod arch;
pub mod domain;
pub mod files;
pub mod interrupt;
pub mod linux;
pub mod memory;
pub mod policy;
pub mod profile;
pub mod run;
pub mod supervise;
pub mod table;
pub mod text;
pub mod timeline;
