//! The libvirt backend: a QEMU domain that libvirt manages, named as libvirt names it.
//!
//! libvirt holds the QEMU's own monitor (QEMU serves one QMP client at a time), so everything
//! xsched asks of the monitor goes through libvirt, over the libvirt project's own binding (the
//! `virt` crate, linking Debian's `libvirt0`):
//!
//! - the domain is looked up by name on a connection to a libvirt URI (the spec's `uri=`, else
//!   `qemu:///system`), and must be running or paused;
//! - pause and resume are `virDomainSuspend` and `virDomainResume`; a domain libvirt reports
//!   paused before xsched suspends it is someone else's pause ([`Monitor::stop`] says so), which
//!   xsched never undoes. An operator's suspend that lands between that look and xsched's own
//!   cannot be told apart, as on a QMP socket: libvirt's run state is one flag;
//! - the monitor queries the QEMU backends need (`info mtree -f`, `info ramblock`, `info
//!   registers`) and the NMI that kicks an idle vCPU go through `virDomainQemuMonitorCommand`,
//!   libvirt's QMP passthrough (libvirt notes "custom-monitor" in the domain's log once);
//! - the QEMU process is found from its vCPU threads: QMP's `query-cpus-fast` gives their
//!   thread ids, `/proc/TID/status` the process they belong to, and that process's command line
//!   must be libvirt's QEMU for this domain (`-name guest=NAME,…`). Guest RAM is then read and
//!   written in that process as [`super::qemu_process`] does (root, or ptrace rights over it).
//!
//! A connection inherited across `fork` (the supervisor's copy of the loop's) is left alone
//! when dropped: closing it would send libvirtd a close on the socket the loop still uses.

use std::sync::Once;

use serde_json::Value;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::qemu_monitor::Monitor;
use super::qemu_process::QemuProcessMemory;
use super::MemoryError;

/// The most vCPU threads a reply may list: far above any real guest.
const MAX_VCPUS: usize = 4096;

/// Why a libvirt domain could not be reached, attached or controlled.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// No connection to libvirt could be made.
    #[error("cannot connect to libvirt at {uri}: {message} (is libvirtd running?)")]
    Unreachable {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// The connection has no domain of that name.
    #[error("libvirt at {uri} has no domain named {domain:?}")]
    NoDomain {
        /// The URI.
        uri: String,
        /// The name looked up.
        domain: String,
    },
    /// The domain exists but its QEMU does not run.
    #[error("libvirt domain {domain:?} is {state}: it has no QEMU to attach to (start it: virsh start {domain})")]
    NotRunning {
        /// The domain's name.
        domain: String,
        /// Its state in libvirt's words.
        state: &'static str,
    },
    /// A libvirt call failed.
    #[error("libvirt domain {domain:?}: {call}: {message}")]
    Call {
        /// The domain's name.
        domain: String,
        /// The libvirt function.
        call: &'static str,
        /// libvirt's message.
        message: String,
    },
    /// The domain's QEMU process could not be found.
    #[error("libvirt domain {domain:?}: cannot find its QEMU process: {reason}")]
    NoProcess {
        /// The domain's name.
        domain: String,
        /// Why not.
        reason: String,
    },
}

/// Attaches to libvirt domain `domain` on the libvirt at `uri`: its QEMU's RAM through the
/// process's memory, everything else through libvirt.
pub fn open(domain: &str, uri: &str) -> Result<QemuProcessMemory, MemoryError> {
    let mut monitor = LibvirtMonitor::connect(domain, uri)?;
    let pid = monitor.qemu_pid()?;
    QemuProcessMemory::attach(pid, Box::new(monitor), &format!("libvirt:{domain} ({uri})"))
}

/// A libvirt domain's QEMU, controlled through libvirt.
#[derive(Debug)]
struct LibvirtMonitor {
    name: String,
    conn: Connect,
    /// `None` only while being dropped.
    domain: Option<Domain>,
    /// The process that opened the connection: only it may close it.
    opened_by: u32,
}

impl LibvirtMonitor {
    /// Connects to `uri` and looks `name` up; refuses a domain that does not run.
    fn connect(name: &str, uri: &str) -> Result<Self, LibvirtError> {
        static QUIET: Once = Once::new();
        // libvirt prints every error on standard error unless told otherwise; xsched reports them.
        QUIET.call_once(virt::error::clear_error_callback);
        let mut conn = Connect::open(Some(uri)).map_err(|e| LibvirtError::Unreachable { uri: uri.to_owned(), message: e.message().to_owned() })?;
        let domain = match Domain::lookup_by_name(&conn, name) {
            Ok(domain) => domain,
            Err(e) => {
                let _ = conn.close();
                return Err(match e.code() {
                    ErrorNumber::NoDomain => LibvirtError::NoDomain { uri: uri.to_owned(), domain: name.to_owned() },
                    _ => LibvirtError::Call { domain: name.to_owned(), call: "virDomainLookupByName", message: e.message().to_owned() },
                });
            }
        };
        let monitor = Self { name: name.to_owned(), conn, domain: Some(domain), opened_by: std::process::id() };
        match monitor.state()? {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED | sys::VIR_DOMAIN_PAUSED => Ok(monitor),
            state => Err(LibvirtError::NotRunning { domain: name.to_owned(), state: state_name(state) }),
        }
    }

    fn domain(&self) -> Result<&Domain, LibvirtError> {
        self.domain.as_ref().ok_or_else(|| self.failed("virDomainPtr", "the domain handle is gone"))
    }

    fn failed(&self, call: &'static str, message: &str) -> LibvirtError {
        LibvirtError::Call { domain: self.name.clone(), call, message: message.to_owned() }
    }

    /// The domain's state (`virDomainGetState`).
    fn state(&self) -> Result<sys::virDomainState, LibvirtError> {
        self.domain()?.get_state().map(|(state, _reason)| state).map_err(|e| self.failed("virDomainGetState", e.message()))
    }

    /// Runs `command` on the QEMU monitor through libvirt: QMP JSON, or an HMP command line.
    fn passthrough(&self, command: &str, hmp: bool) -> Result<String, LibvirtError> {
        let flags = if hmp { sys::VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP } else { sys::VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT };
        self.domain()?.qemu_monitor_command(command, flags).map_err(|e| self.failed("virDomainQemuMonitorCommand", e.message()))
    }

    /// The pid of the domain's QEMU, from its vCPU threads.
    fn qemu_pid(&mut self) -> Result<u32, LibvirtError> {
        let no_process = |reason: String| LibvirtError::NoProcess { domain: self.name.clone(), reason };
        let reply = self.passthrough(r#"{"execute":"query-cpus-fast"}"#, false)?;
        let threads = vcpu_threads(&reply).map_err(no_process)?;
        let first = threads.first().copied().ok_or_else(|| no_process("no vCPU threads".into()))?;
        let pid = thread_group(first).map_err(no_process)?;
        if let Some(stray) = threads.iter().find(|&&tid| !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()) {
            return Err(no_process(format!("vCPU thread {stray} is not a thread of process {pid} (is xsched in another pid namespace than libvirtd?)")));
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| no_process(format!("/proc/{pid}/cmdline: {e}")))?;
        if !names_guest(&cmdline, &self.name) {
            return Err(no_process(format!("process {pid} (the vCPU threads' process) is not libvirt's QEMU for this domain (no `-name guest={},…`): is xsched in another pid namespace than libvirtd?", self.name)));
        }
        Ok(pid)
    }
}

impl Monitor for LibvirtMonitor {
    fn stop(&mut self) -> Result<bool, MemoryError> {
        if self.state()? == sys::VIR_DOMAIN_PAUSED {
            return Ok(false);
        }
        self.domain()?.suspend().map_err(|e| self.failed("virDomainSuspend", e.message()))?;
        Ok(true)
    }

    fn cont(&mut self) -> Result<(), MemoryError> {
        self.domain()?.resume().map(drop).map_err(|e| self.failed("virDomainResume", e.message()).into())
    }

    fn is_paused(&mut self) -> Result<bool, MemoryError> {
        Ok(self.state()? == sys::VIR_DOMAIN_PAUSED)
    }

    fn human_command(&mut self, command_line: &str) -> Result<String, MemoryError> {
        Ok(self.passthrough(command_line, true)?)
    }

    fn inject_nmi(&mut self) -> Result<(), MemoryError> {
        self.passthrough(r#"{"execute":"inject-nmi"}"#, false).map(drop).map_err(Into::into)
    }
}

impl Drop for LibvirtMonitor {
    fn drop(&mut self) {
        let domain = self.domain.take();
        if std::process::id() != self.opened_by {
            // A copy made by fork: the connection's socket is the opener's too.
            std::mem::forget(domain);
            return;
        }
        drop(domain);
        if let Err(e) = self.conn.close() {
            log::debug!("libvirt domain {}: closing the connection: {}", self.name, e.message());
        }
    }
}

/// libvirt's word for a domain state.
fn state_name(state: sys::virDomainState) -> &'static str {
    match state {
        sys::VIR_DOMAIN_RUNNING => "running",
        sys::VIR_DOMAIN_BLOCKED => "blocked",
        sys::VIR_DOMAIN_PAUSED => "paused",
        sys::VIR_DOMAIN_SHUTDOWN => "being shut down",
        sys::VIR_DOMAIN_SHUTOFF => "shut off",
        sys::VIR_DOMAIN_CRASHED => "crashed",
        sys::VIR_DOMAIN_PMSUSPENDED => "suspended by guest power management",
        _ => "in no known state",
    }
}

/// The vCPU thread ids in a reply to `query-cpus-fast` (`{"return": [{"thread-id": N, …}, …]}`):
/// at least one, at most [`MAX_VCPUS`].
fn vcpu_threads(reply: &str) -> Result<Vec<u32>, String> {
    let value: Value = serde_json::from_str(reply).map_err(|e| format!("query-cpus-fast: the reply is not JSON: {e}"))?;
    let cpus = value.get("return").and_then(Value::as_array).ok_or("query-cpus-fast: no list of vCPUs in the reply")?;
    if cpus.is_empty() || cpus.len() > MAX_VCPUS {
        return Err(format!("query-cpus-fast: {} vCPUs", cpus.len()));
    }
    cpus.iter()
        .map(|cpu| {
            cpu.get("thread-id")
                .and_then(Value::as_u64)
                .and_then(|tid| u32::try_from(tid).ok())
                .filter(|&tid| tid > 0)
                .ok_or_else(|| format!("query-cpus-fast: a vCPU without a thread id: {cpu}"))
        })
        .collect()
}

/// The process (thread group) thread `tid` belongs to, from `/proc/TID/status`.
fn thread_group(tid: u32) -> Result<u32, String> {
    let path = format!("/proc/{tid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e} (is xsched in another pid namespace than libvirtd?)"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
        .ok_or_else(|| format!("{path} has no Tgid line"))
}

/// Whether a NUL-separated command line has libvirt's `-name guest=NAME[,…]` for domain `name`
/// (libvirt doubles a comma inside a QEMU option value).
fn names_guest(cmdline: &[u8], name: &str) -> bool {
    let wanted = format!("guest={}", name.replace(',', ",,"));
    let mut args = cmdline.split(|&b| b == 0);
    while let Some(arg) = args.next() {
        if arg == b"-name" {
            return args.next().is_some_and(|value| {
                value.strip_prefix(wanted.as_bytes()).is_some_and(|rest| rest.is_empty() || (rest.first() == Some(&b',') && rest.get(1) != Some(&b',')))
            });
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_come_from_query_cpus_fast() {
        // Captured from libvirt 9.0's passthrough to QEMU 7.2 (q35, TCG, 2 vCPUs).
        let reply = r#"{"return":[{"thread-id":21356,"props":{"core-id":0,"thread-id":0,"socket-id":0},"qom-path":"/machine/unattached/device[0]","cpu-index":0,"target":"x86_64"},{"thread-id":21357,"props":{"core-id":0,"thread-id":0,"socket-id":1},"qom-path":"/machine/unattached/device[2]","cpu-index":1,"target":"x86_64"}],"id":"libvirt-413"}"#;
        assert_eq!(vcpu_threads(reply), Ok(vec![21356, 21357]));
        for bad in ["", "{}", r#"{"return":[]}"#, r#"{"return":[{"cpu-index":0}]}"#, r#"{"return":[{"thread-id":-1}]}"#, r#"{"return":[{"thread-id":0}]}"#, r#"{"return":[{"thread-id":99999999999}]}"#] {
            assert!(vcpu_threads(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_thread_belongs_to_its_process() {
        assert_eq!(thread_group(std::process::id()), Ok(std::process::id()));
        assert!(thread_group(5_000_000).is_err(), "above pid_max: no such thread");
    }

    #[test]
    fn the_command_line_must_name_the_domain() {
        let cmdline = b"/usr/bin/qemu-system-x86_64\0-name\0guest=u1,debug-threads=on\0-S\0";
        assert!(names_guest(cmdline, "u1"));
        assert!(!names_guest(cmdline, "u"), "a prefix is another domain");
        assert!(!names_guest(b"qemu\0-name\0guest=u1x\0", "u1"));
        assert!(names_guest(b"qemu\0-name\0guest=a,,b,debug-threads=on\0", "a,b"));
        assert!(!names_guest(b"qemu\0-name\0guest=a,,b\0", "a"));
        assert!(!names_guest(b"qemu\0guest=u1\0", "u1"), "no -name");
        assert!(names_guest(b"qemu\0-name\0guest=u1\0", "u1"));
    }

    #[test]
    fn a_libvirt_that_does_not_listen_is_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = format!("qemu:///system?socket={}/none.sock", dir.path().display());
        let error = LibvirtMonitor::connect("u1", &uri).expect_err("nobody listens");
        assert!(matches!(error, LibvirtError::Unreachable { .. }), "{error}");
        let text = error.to_string();
        assert!(text.starts_with(&format!("cannot connect to libvirt at {uri}: ")) && text.ends_with("(is libvirtd running?)"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
