//! Policy plugins, seen from the host: finding and loading them, and the task table in and the
//! ranking out.
//!
//! [`PolicyPlugin::load`] finds a plugin ([`resolve`]), refuses files that others could have
//! changed, checks that it is a shared library and an xsched policy built against a compatible
//! interface version, and keeps it loaded for the life of the process (plugins are never
//! unloaded: their code may still be referenced). Several plugins, or the same one several
//! times, can be loaded at once: each library's root module lives in that library.
//! [`PolicyPlugin::instantiate`] builds a [`PolicyInstance`] from a configuration file;
//! [`snapshot_of`] (or [`update_snapshot`], which rewrites the previous period's in place) and
//! [`ranking_of`] convert the host's [`TaskTable`](crate::table::TaskTable) to the plugin's
//! [`Snapshot`](xsched_plugin_api::Snapshot) and its decisions back to
//! [`Ranked`] task keys; [`Ranker`] is what the loop asks of a policy.
//! [`PolicyInstance::rank_table`] keeps the snapshot from one period to the next, rewrites only
//! the tasks that changed when it can, and hands the plugin a hint (interface 1.1: the runnable
//! tasks, and which changed; kept by `hint.rs`), so that a policy too can cost what changed.
//!
//! A panic inside a plugin never unwinds into the host: the plugin side of the interface
//! (`xsched_plugin_api::export_policy!`) catches it and returns an error, which
//! [`PolicyInstance::rank`] reports as [`PolicyError::Policy`].

mod hint;
mod load;
mod rank;
mod snapshot;

use std::path::PathBuf;

pub use load::{resolve, search_path, PolicyInstance, PolicyPlugin, PLUGIN_PATH_VAR, SYSTEM_PLUGIN_DIR};
pub use rank::{Ranked, Ranker};
pub use snapshot::{ranking_of, snapshot_of, update_snapshot, update_snapshot_changes};

/// Why a policy plugin could not be loaded or used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A bare plugin name was not found on the search path.
    #[error("policy plugin {name}: not found in {}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The name given.
        name: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The file could not be read or examined.
    #[error("policy plugin {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file, or a directory above it, could be changed by someone other than root or the
    /// current user.
    #[error("policy plugin {}: refused: {why} (xsched loads only plugins that no one but root and you can change)", path.display())]
    Insecure {
        /// The plugin file.
        path: PathBuf,
        /// Which file or directory, and why.
        why: String,
    },
    /// The file is not a shared library.
    #[error("policy plugin {}: not a shared library ({why})", path.display())]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The dynamic loader refused it (a missing dependency, another architecture, …).
    #[error("policy plugin {}: cannot be loaded: {message}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// A shared library, but not an xsched policy plugin.
    #[error("policy plugin {}: not an xsched policy plugin: {why}", path.display())]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What is missing.
        why: String,
    },
    /// Built against an incompatible interface (or `abi_stable`) version.
    #[error("policy plugin {}: incompatible interface version: built against {plugin}, this xsched has {host}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The plugin's version.
        plugin: String,
        /// The host's version.
        host: String,
    },
    /// Its types differ from what its interface version says.
    #[error("policy plugin {}: {summary}", path.display())]
    Layout {
        /// The file.
        path: PathBuf,
        /// What differs, in one line.
        summary: String,
        /// abi_stable's full report (both layouts), for debugging.
        report: String,
    },
    /// Its root module failed to initialize.
    #[error("policy plugin {}: {why}", path.display())]
    Init {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The configuration file could not be read.
    #[error("policy {policy}: config file {}: {source}", config.display())]
    ConfigFile {
        /// The policy's name.
        policy: String,
        /// The configuration file.
        config: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The policy refused its configuration (the message gives the line and the problem).
    #[error("policy {policy}: config file {}: {message}", config.display())]
    Config {
        /// The policy's name.
        policy: String,
        /// The configuration file (empty when none was given).
        config: PathBuf,
        /// The policy's message.
        message: String,
    },
    /// The policy failed (or panicked) while ranking or reloading.
    #[error("policy {policy} ({}): {message}", path.display())]
    Policy {
        /// The policy's name.
        policy: String,
        /// The plugin file.
        path: PathBuf,
        /// The policy's message ("policy panicked: …" for a panic).
        message: String,
    },
}
