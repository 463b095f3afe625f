//! Errors of the guest-memory layer.

use std::path::PathBuf;

#[cfg(feature = "libvirt")]
use super::libvirt::LibvirtError;
use super::qemu_layout::LayoutError;
use super::qmp::QmpError;
use super::Gpa;

/// What went wrong while reading, writing, pausing or resuming a domain's memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The access touches bytes that are not guest RAM.
    #[error("guest-physical access {gpa}+{len:#x} is outside guest RAM")]
    OutOfRange {
        /// First address of the access.
        gpa: Gpa,
        /// Length of the access in bytes.
        len: u64,
    },
    /// The backend cannot be written (a core dump).
    #[error("{backend} is read-only: writes are refused")]
    ReadOnly {
        /// The backend's description.
        backend: String,
    },
    /// The backend cannot pause or resume (a core dump is always still).
    #[error("{backend} cannot {action}")]
    Unsupported {
        /// The backend's description.
        backend: String,
        /// What was asked: "pause", "resume".
        action: &'static str,
    },
    /// A file could not be opened, mapped or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not what the backend expects.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A mapped file shrank under xsched: the pages past its new end read as zeros and writes to
    /// them reached nothing, so the access that met them, and every later one, fails.
    #[error("{path} shrank while mapped (now {now} bytes, was {was})")]
    Shrunk {
        /// The file.
        path: PathBuf,
        /// Its size now.
        now: u64,
        /// Its size when it was mapped.
        was: u64,
    },
    /// A mapped file's path now names another file: what xsched reads is the old one.
    #[error("{path} was replaced while mapped (inode {mapped}, now {now}): still reading the old file; attach again")]
    Replaced {
        /// The file's path.
        path: PathBuf,
        /// The inode mapped.
        mapped: u64,
        /// The inode the path names now.
        now: u64,
    },
    /// The QEMU monitor could not be reached, did not answer in time, or refused a command.
    #[error("QMP {socket}: {source}")]
    Qmp {
        /// The QMP socket path.
        socket: PathBuf,
        /// What happened.
        source: QmpError,
    },
    /// The process behind a QMP socket, or given by pid, is not a QEMU xsched can attach to.
    #[error("pid {pid} is not a QEMU to attach to: {reason}")]
    NotQemu {
        /// The process id.
        pid: u32,
        /// Why not.
        reason: String,
    },
    /// The QEMU process exited (or its pid now names another process).
    #[error("QEMU process {pid} has exited")]
    ProcessGone {
        /// The process id.
        pid: u32,
    },
    /// Reading or writing the QEMU process's memory, or its `/proc` files, failed.
    #[error("QEMU process {pid}: {action}: {source}")]
    Process {
        /// The process id.
        pid: u32,
        /// What was being done.
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Where the QEMU process keeps guest RAM could not be worked out.
    #[error("QEMU process {pid}: {source}")]
    RamLayout {
        /// The process id.
        pid: u32,
        /// What is wrong.
        source: LayoutError,
    },
    /// A libvirt domain could not be reached, attached or controlled.
    #[cfg(feature = "libvirt")]
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    /// A Xen control call failed.
    #[error("Xen domain {domid}: {call} failed: {source}")]
    Xen {
        /// The Xen domain id.
        domid: u32,
        /// The library call that failed.
        call: &'static str,
        /// The error it set.
        source: std::io::Error,
    },
}
