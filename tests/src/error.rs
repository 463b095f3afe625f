//! The lab's one error type: every variant names the guest, file or command that failed.

use std::path::PathBuf;
use std::time::Duration;

/// Anything that can go wrong while fetching the kernel, booting, talking to or stopping a guest.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A guest specification is invalid (bad name, duplicate workload, out-of-range size).
    #[error("guest spec {guest:?}: {reason}")]
    Spec {
        /// The guest's name.
        guest: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A kernel name (`XSCHED_LAB_KERNEL`, `--kernel`, a guest's `kernel=`) names no pinned kernel.
    #[error("no pinned lab kernel {name:?} (XSCHED_LAB_KERNEL, --kernel or kernel=): the pinned kernels are {known} (tests/lab/kernels/*.env)")]
    UnknownKernel {
        /// The name given.
        name: String,
        /// The pinned kernels' names, comma-separated.
        known: String,
    },

    /// The guest kernel or a tool is missing and could not be installed.
    #[error("lab setup: {reason}")]
    Setup {
        /// What is missing, with the command that would fix it.
        reason: String,
    },

    /// The lab's libvirtd or `virsh` failed.
    #[error("lab libvirt: {action}: {reason}")]
    Libvirt {
        /// What was being done.
        action: String,
        /// What went wrong.
        reason: String,
    },

    /// A file-system or process operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation ("create guest dir", "read console", ...).
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// QEMU exited, or the guest's init reported an error, before the guest was ready.
    #[error("guest {guest}: {reason}\n--- console tail ---\n{console_tail}")]
    BootFailed {
        /// The guest's name.
        guest: String,
        /// Why the boot failed (QEMU's exit status and stderr, or the init's error line).
        reason: String,
        /// The last lines of the guest's serial console.
        console_tail: String,
    },

    /// The guest did not print its ready line in time.
    #[error("guest {guest}: not ready after {after:?}\n--- console tail ---\n{console_tail}")]
    BootTimeout {
        /// The guest's name.
        guest: String,
        /// How long the lab waited.
        after: Duration,
        /// The last lines of the guest's serial console.
        console_tail: String,
    },

    /// A command on the control channel could not be run or answered.
    #[error("guest {guest}: exec {command:?}: {reason}")]
    Exec {
        /// The guest's name.
        guest: String,
        /// The shell command.
        command: String,
        /// What went wrong (timeout, closed channel, malformed answer).
        reason: String,
    },

    /// No view of the requested kind arrived in time.
    #[error("guest {guest}: {reason} (waited {after:?})")]
    ViewTimeout {
        /// The guest's name.
        guest: String,
        /// What was awaited.
        reason: String,
        /// How long the lab waited.
        after: Duration,
    },

    /// The scheduler-state checker (`tests/lab/sched_check.py`) or its mutation tool could not
    /// run on a core (unreadable file, kernel it cannot read, tool error); not a finding.
    #[error("sched check of {}: {reason}", core.display())]
    SchedCheck {
        /// The core file.
        core: PathBuf,
        /// The tool's own one-line error, or what went wrong.
        reason: String,
    },

    /// A QMP command failed.
    #[error("guest {guest}: qmp: {source}")]
    Qmp {
        /// The guest's name.
        guest: String,
        /// The host crate's QMP error.
        source: xsched::memory::MemoryError,
    },
}

impl LabError {
    /// Shorthand for [`LabError::Io`].
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }
}
