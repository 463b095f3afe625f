//! Architecture knowledge: how guest kernel-virtual addresses translate to guest-physical ones.

pub mod x86_64;
