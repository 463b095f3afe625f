//! Changing a guest's scheduling: writes into its runqueues, the last stage of the data path
//! ([`actuator::Actuator`] per domain; [`park`] flavour-neutral, [`fair`] per scheduler flavour).
//!
//! [`rbtree`] inserts into and erases from the guest's red-black trees the way the guest kernel
//! itself does, and checks a tree before and after every change.

pub mod actuator;
pub mod fair;
mod fields;
pub mod journal;
pub mod park;
#[cfg(test)]
mod park_tests;
pub mod rbtree;
pub mod staged;
