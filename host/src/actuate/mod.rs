//! Changing a guest's scheduling: writes into its runqueues.
//!
//! [`rbtree`] inserts into and erases from the guest's red-black trees the way the guest kernel
//! itself does, and checks a tree before and after every change.

pub mod fair;
mod fields;
pub mod journal;
pub mod park;
pub mod rbtree;
pub mod staged;
