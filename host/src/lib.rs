//! xsched: a system-wide process scheduler that spans virtual machines.
//!
//! The data path, one module per stage: a [`domain`] (its spec, its id, the attached guest) →
//! its guest-physical [`memory`] → the [`arch`] page-table walk → the kernel layout [`profile`]
//! → the [`linux`] kernel reader → the cross-domain task [`table`] → the [`policy`] plugin's
//! ranking → the [`run`] loop's admission → [`actuate`], which parks and unparks. Small modules
//! serve every stage and use none: [`files`] opens what an operator names (regular files only),
//! [`text`] makes what a guest wrote safe to show, and [`interrupt`] defers a stop signal while
//! a guest is held. [`supervise`] keeps the loop, and [`timeline`] draws its trace.
//!
//! Imports follow the stages: `arch` uses `memory`; `profile` uses `memory`; `linux` uses
//! `memory`, `arch` and `profile`; the attached [`domain::Domain`] puts a guest's memory and its
//! located kernel together; `table`, `policy` and `actuate` use what comes before them, and
//! `run`, the loop, drives `policy` and `actuate`.

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
