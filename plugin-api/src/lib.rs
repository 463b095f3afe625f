//! The interface between the xsched host and its policy plugins.
//!
//! Plugins are cdylibs loaded at run time; everything that crosses the boundary will live here as
//! `abi_stable` types (see the scheduling-loop issue). For now the crate only fixes the interface's
//! major version, which the host checks before it loads a plugin.

/// Major version of the plugin interface; a plugin built against another major version is refused.
pub const INTERFACE_MAJOR: u32 = 1;
