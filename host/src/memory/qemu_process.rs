//! The QEMU process backend: guest RAM read and written in the memory of an unmodified QEMU.
//!
//! A guest started the ordinary way (`-m 256M`, RAM anonymous memory of the QEMU process, only a
//! QMP socket) has no file to map. This backend finds the QEMU from its QMP socket
//! (`SO_PEERCRED`; or a pid given), asks QEMU where guest RAM is (`info mtree -f`, `info
//! ramblock`), finds the RAM block's mapping in `/proc/PID/maps` ([`super::qemu_layout`]), and
//! copies bytes with `process_vm_readv`/`process_vm_writev`: no mapping in this process, so a QEMU
//! that exits makes the next access fail ([`MemoryError::ProcessGone`]), never SIGBUS. Pause,
//! resume, vCPU registers and kicks go through QMP as for the file backend ([`QemuMonitor`]), or,
//! for a libvirt domain, through libvirt (`super::libvirt` attaches with its own [`Monitor`]).
//!
//! Attaching needs ptrace access to QEMU (root, or the same user with Yama's `ptrace_scope` 0).

use std::io;
use std::path::{Path, PathBuf};

use super::qemu_guest::{QemuGuest, QemuRam};
use super::qemu_layout::{self, LayoutError};
use super::qemu_monitor::{Monitor, QemuMonitor};
use super::qmp::QmpClient;
use super::segments::SegmentMap;
use super::{to_usize, Gpa, MemoryError, PhysRange};

/// A running QEMU's guest RAM, reached through its process memory.
#[derive(Debug)]
pub struct ProcessRam {
    pid: u32,
    /// The process's start time (`/proc/PID/stat`), which tells a reused pid apart.
    start_time: u64,
    /// Where the RAM block starts in QEMU's address space.
    base: u64,
    /// Guest-physical ranges and their offsets in the RAM block.
    segments: SegmentMap,
}

/// A running QEMU's guest RAM, reached through its process memory, and its monitor.
pub type QemuProcessMemory = QemuGuest<ProcessRam>;

impl QemuProcessMemory {
    /// Attaches to the QEMU whose QMP socket is `qmp_socket`; `pid`, when given, must be that QEMU
    /// (it is needed when the QEMU is in another pid namespace, where the socket cannot tell).
    pub fn open(qmp_socket: &Path, pid: Option<u32>) -> Result<Self, MemoryError> {
        let qmp = QmpClient::connect(qmp_socket)?;
        let pid = match (qmp.peer_pid()?, pid) {
            (Some(peer), Some(given)) if peer != given => {
                return Err(MemoryError::NotQemu { pid: given, reason: format!("{} is served by pid {peer}", qmp_socket.display()) })
            }
            (Some(pid), _) | (None, Some(pid)) => pid,
            (None, None) => {
                return Err(MemoryError::NotQemu {
                    pid: 0,
                    reason: format!("the QEMU behind {} is in another pid namespace: give pid=N", qmp_socket.display()),
                })
            }
        };
        Self::attach(pid, Box::new(qmp), &format!("qemu-process:{}", qmp_socket.display()))
    }

    /// Attaches to QEMU process `pid`, controlled through `monitor` (which must be that QEMU's),
    /// asking the monitor where guest RAM is; `label` starts what [`super::GuestMemory::describe`] says.
    pub(super) fn attach(pid: u32, mut monitor: Box<dyn Monitor>, label: &str) -> Result<Self, MemoryError> {
        check_is_qemu(pid)?;
        let start_time = start_time(pid)?;
        let layout = |source| MemoryError::RamLayout { pid, source };
        let ram = qemu_layout::flat_ram(&monitor.human_command("info mtree -f")?).map_err(layout)?;
        let size = qemu_layout::block_size(&monitor.human_command("info ramblock")?, &ram.block).map_err(layout)?;
        let maps = std::fs::read_to_string(proc_path(pid, "maps")).map_err(|e| proc_error(pid, "read /proc/PID/maps", e))?;
        let base = qemu_layout::anonymous_mapping(&maps, size).map_err(layout)?;
        // In bounds from here on: every segment lies inside the block, and the block's mapping
        // (`base + size`) ends where /proc said it does.
        let segments = SegmentMap::new(ram.segments, size)
            .map_err(|reason| layout(LayoutError::BadSegments { block: ram.block.clone(), size, reason }))?;
        log::info!("{label}: QEMU pid {pid}, RAM block {} ({} MiB) at {base:#x}, {} range(s)", ram.block, size >> 20, segments.ranges().len());
        let description = format!("{label} (pid {pid}, {} MiB)", size >> 20);
        Ok(QemuGuest::new(ProcessRam { pid, start_time, base, segments }, QemuMonitor::new(Some(monitor)), description))
    }

    /// The QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.ram().pid
    }
}

impl ProcessRam {
    /// Turns a failed transfer into the error it means: the process gone, or another failure.
    fn transfer_error(&self, action: &str, gpa: Gpa, error: io::Error) -> MemoryError {
        if error.raw_os_error() == Some(libc::ESRCH) || self.check_backing().is_err() {
            return MemoryError::ProcessGone { pid: self.pid };
        }
        proc_error(self.pid, &format!("{action} at {gpa}"), error)
    }

    /// Copies between `local` and the RAM block at `offset` (`write`: to QEMU), all or nothing.
    fn transfer(&self, offset: u64, local: libc::iovec, write: bool) -> io::Result<()> {
        let remote = libc::iovec { iov_base: to_usize(self.base + offset) as *mut libc::c_void, iov_len: local.iov_len };
        let pid = libc::pid_t::try_from(self.pid).map_err(io::Error::other)?;
        // SAFETY: `local` describes memory of this process that the caller borrows for the call
        // (writable when reading into it); `remote` is an address in QEMU's address space, which
        // the kernel checks and never dereferences here.
        let done = unsafe {
            if write {
                libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
            } else {
                libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
            }
        };
        match usize::try_from(done) {
            Err(_) => Err(io::Error::last_os_error()),
            Ok(n) if n == local.iov_len => Ok(()),
            Ok(n) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{n} of {} bytes transferred", local.iov_len))),
        }
    }
}

impl QemuRam for ProcessRam {
    fn ranges(&self) -> &[PhysRange] {
        self.segments.ranges()
    }

    /// The process is still the one attached: running (not a zombie), with the same start time.
    fn check_backing(&self) -> Result<(), MemoryError> {
        match start_time(self.pid) {
            Ok(t) if t == self.start_time => Ok(()),
            _ => Err(MemoryError::ProcessGone { pid: self.pid }),
        }
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let mut failed = None;
        self.segments.for_each_piece(gpa, buf.len(), |offset, start, end| {
            if failed.is_none() {
                let piece = &mut buf[start..end];
                let local = libc::iovec { iov_base: piece.as_mut_ptr().cast(), iov_len: piece.len() };
                failed = self.transfer(offset, local, false).err();
            }
        })?;
        failed.map_or(Ok(()), |e| Err(self.transfer_error("read", gpa, e)))
    }

    /// Writes piece by piece: a failure part way (the process exiting) leaves the earlier pieces
    /// written, as a guest that is gone no longer cares.
    fn write_phys(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), MemoryError> {
        let mut failed = None;
        self.segments.for_each_piece(gpa, data.len(), |offset, start, end| {
            if failed.is_none() {
                let piece = &data[start..end];
                // process_vm_writev only reads the local buffer, despite the `*mut` in `iovec`.
                let local = libc::iovec { iov_base: piece.as_ptr().cast_mut().cast(), iov_len: piece.len() };
                failed = self.transfer(offset, local, true).err();
            }
        })?;
        failed.map_or(Ok(()), |e| Err(self.transfer_error("write", gpa, e)))
    }
}

/// `/proc/PID/NAME`.
fn proc_path(pid: u32, name: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(name)
}

fn proc_error(pid: u32, action: &str, source: io::Error) -> MemoryError {
    if source.kind() == io::ErrorKind::NotFound {
        return MemoryError::ProcessGone { pid };
    }
    MemoryError::Process { pid, action: action.to_owned(), source }
}

/// Refuses a process whose executable is no `qemu-system-*`.
fn check_is_qemu(pid: u32) -> Result<(), MemoryError> {
    let exe = std::fs::read_link(proc_path(pid, "exe")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MemoryError::NotQemu { pid, reason: "no such process".into() },
        _ => proc_error(pid, "read /proc/PID/exe", e),
    })?;
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.starts_with("qemu-system-") {
        return Err(MemoryError::NotQemu { pid, reason: format!("its executable is {}", exe.display()) });
    }
    Ok(())
}

/// The start time of a live (not zombie) process, from `/proc/PID/stat` (field 22, after the
/// parenthesised command name, which may itself hold spaces and parentheses).
fn start_time(pid: u32) -> Result<u64, MemoryError> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).map_err(|e| proc_error(pid, "read /proc/PID/stat", e))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    match (fields.first(), fields.get(19).and_then(|t| t.parse().ok())) {
        (Some(&"Z" | &"X"), _) => Err(MemoryError::ProcessGone { pid }),
        (Some(_), Some(time)) => Ok(time),
        _ => Err(MemoryError::NotQemu { pid, reason: "unreadable /proc/PID/stat".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_no_qemu() {
        let me = std::process::id();
        assert!(start_time(me).is_ok());
        let error = check_is_qemu(me).expect_err("not a QEMU");
        assert!(matches!(error, MemoryError::NotQemu { .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("pid {me} is not a QEMU to attach to: its executable is ")), "{error}");
    }

    #[test]
    fn a_pid_that_names_nothing_is_gone() {
        // Above the kernel's pid_max limit (4194304): never a process.
        assert!(matches!(start_time(5_000_000), Err(MemoryError::ProcessGone { pid: 5_000_000 })));
        assert!(matches!(check_is_qemu(5_000_000), Err(MemoryError::NotQemu { .. })));
    }
}
