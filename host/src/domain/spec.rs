//! Domain specs as the command line gives them: `NAME=KIND:ARGS`.
//!
//! - `u1=qemu:/dev/shm/u1.ram,qmp=/run/u1.qmp[,machine=q35|pc]`: a QEMU guest's shared RAM file and
//!   its QMP socket (without `qmp=` the guest can be read but not paused);
//! - `u3=qemu-process:/run/u3.qmp[,pid=1234]`: an unmodified QEMU guest (anonymous RAM, only a QMP
//!   socket): RAM is read and written in the QEMU process's memory, found from the socket's peer
//!   (`pid=` when the QEMU is in another pid namespace, or to check it is the one meant);
//! - `web=libvirt:web01[,uri=qemu:///system]`: a libvirt domain by its name, on the libvirt at
//!   `uri` (the system QEMU driver unless given): its QEMU found through libvirt, RAM read and
//!   written in that process, pause, resume and monitor queries through libvirt (needs the
//!   `libvirt` feature, on by default);
//! - `old=core:/var/crash/u1.core`: an ELF core dump (read-only);
//! - `u2=xen:12`: Xen domain 12 (needs the `xen` feature).
//!
//! Any kind also takes `floor=P%` and `cap=P%`: the share of the host CPU budget the scheduling
//! loop guarantees the domain when it wants it, and the most it lets it have ([`Share`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The libvirt URI of a `libvirt:` spec without `uri=`: the host's system QEMU driver.
pub const DEFAULT_URI: &str = "qemu:///system";

use crate::memory::core::CoreMemory;
use crate::memory::qemu::{MachineType, QemuMemory};
use crate::memory::qemu_process::QemuProcessMemory;
use crate::memory::{GuestMemory, MemoryError};

/// Where a domain's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A QEMU guest.
    Qemu {
        /// The shared RAM file.
        ram_file: PathBuf,
        /// The QMP socket, for pause/resume.
        qmp: Option<PathBuf>,
        /// The machine type (RAM layout around the PCI hole).
        machine: MachineType,
    },
    /// An unmodified QEMU guest, reached through its process's memory.
    QemuProcess {
        /// The QMP socket.
        qmp: PathBuf,
        /// The QEMU's pid, when given.
        pid: Option<u32>,
    },
    /// A libvirt domain.
    Libvirt {
        /// The domain's name in libvirt.
        domain: String,
        /// The libvirt URI to connect to.
        uri: String,
    },
    /// An ELF core dump.
    Core {
        /// The core file.
        path: PathBuf,
    },
    /// A Xen domain.
    Xen {
        /// The Xen domain id.
        domid: u32,
    },
}

/// A domain's share of the host CPU budget, set by the host and never by what its guests say:
/// a floor it gets whenever it wants it, a cap it never exceeds (percent of the budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// At least this much when the domain has tasks that want to run.
    pub floor_percent: u8,
    /// At most this much.
    pub cap_percent: u8,
}

impl Default for Share {
    fn default() -> Self {
        Self { floor_percent: 0, cap_percent: 100 }
    }
}

/// A named domain as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    /// The user's name for the domain.
    pub name: String,
    /// Where its memory comes from.
    pub backend: Backend,
    /// Its share of the host CPU budget.
    pub share: Share,
}

/// `P%` with P from 0 to 100.
fn percent(spec: &str, key: &str, value: &str) -> Result<u8, String> {
    value
        .strip_suffix('%')
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("domain {spec:?}: {key}={value}: expected a percentage from 0% to 100%"))
}

impl FromStr for DomainSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("domain {s:?}: expected NAME=KIND:ARGS"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("domain {s:?}: the name must be letters, digits, '-' or '_'"));
        }
        let (kind, args) = rest.split_once(':').ok_or_else(|| format!("domain {s:?}: expected KIND:ARGS after '='"))?;
        let mut parts = args.split(',');
        let target = parts.next().filter(|t| !t.is_empty()).ok_or_else(|| format!("domain {s:?}: missing {kind} target"))?;
        let mut options: Vec<(&str, &str)> = parts
            .map(|p| p.split_once('=').ok_or_else(|| format!("domain {s:?}: option {p:?} is not KEY=VALUE")))
            .collect::<Result<_, _>>()?;
        let mut share = Share::default();
        for (key, value) in &options {
            match *key {
                "floor" => share.floor_percent = percent(s, key, value)?,
                "cap" => share.cap_percent = percent(s, key, value)?,
                _ => {}
            }
        }
        if share.floor_percent > share.cap_percent {
            return Err(format!("domain {s:?}: its floor ({}%) is above its cap ({}%)", share.floor_percent, share.cap_percent));
        }
        options.retain(|(key, _)| !matches!(*key, "floor" | "cap"));
        let backend = match kind {
            "qemu" => {
                let mut qmp = None;
                let mut machine = MachineType::default();
                for (key, value) in options {
                    match key {
                        "qmp" => qmp = Some(PathBuf::from(value)),
                        "machine" => machine = value.parse().map_err(|e| format!("domain {s:?}: {e}"))?,
                        _ => return Err(format!("domain {s:?}: unknown qemu option {key:?} (known: qmp, machine)")),
                    }
                }
                Backend::Qemu { ram_file: PathBuf::from(target), qmp, machine }
            }
            "qemu-process" => {
                let mut pid = None;
                for (key, value) in options {
                    match key {
                        "pid" => pid = Some(value.parse().map_err(|_| format!("domain {s:?}: pid {value:?} is not a process id"))?),
                        _ => return Err(format!("domain {s:?}: unknown qemu-process option {key:?} (known: pid)")),
                    }
                }
                Backend::QemuProcess { qmp: PathBuf::from(target), pid }
            }
            "libvirt" => {
                let mut uri = DEFAULT_URI.to_owned();
                for (key, value) in options {
                    match key {
                        "uri" if !value.is_empty() => uri = value.to_owned(),
                        "uri" => return Err(format!("domain {s:?}: uri= needs a libvirt URI")),
                        _ => return Err(format!("domain {s:?}: unknown libvirt option {key:?} (known: uri)")),
                    }
                }
                Backend::Libvirt { domain: target.to_owned(), uri }
            }
            "core" | "xen" if !options.is_empty() => return Err(format!("domain {s:?}: {kind} takes no options")),
            "core" => Backend::Core { path: PathBuf::from(target) },
            "xen" => Backend::Xen { domid: target.parse().map_err(|_| format!("domain {s:?}: {target:?} is not a Xen domain id"))? },
            other => return Err(format!("domain {s:?}: unknown kind {other:?} (known: qemu, qemu-process, libvirt, core, xen)")),
        };
        Ok(Self { name: name.to_string(), backend, share })
    }
}

impl fmt::Display for DomainSpec {
    /// The spec in the form it is parsed from, `NAME=KIND:ARGS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.name)?;
        match &self.backend {
            Backend::Qemu { ram_file, qmp, machine } => {
                write!(f, "qemu:{}", ram_file.display())?;
                if let Some(qmp) = qmp {
                    write!(f, ",qmp={}", qmp.display())?;
                }
                if *machine != MachineType::default() {
                    write!(f, ",machine=pc")?;
                }
                Ok(())
            }
            Backend::QemuProcess { qmp, pid } => {
                write!(f, "qemu-process:{}", qmp.display())?;
                match pid {
                    Some(pid) => write!(f, ",pid={pid}"),
                    None => Ok(()),
                }
            }
            Backend::Libvirt { domain, uri } => {
                write!(f, "libvirt:{domain}")?;
                if uri != DEFAULT_URI {
                    write!(f, ",uri={uri}")?;
                }
                Ok(())
            }
            Backend::Core { path } => write!(f, "core:{}", path.display()),
            Backend::Xen { domid } => write!(f, "xen:{domid}"),
        }?;
        if self.share.floor_percent != Share::default().floor_percent {
            write!(f, ",floor={}%", self.share.floor_percent)?;
        }
        if self.share.cap_percent != Share::default().cap_percent {
            write!(f, ",cap={}%", self.share.cap_percent)?;
        }
        Ok(())
    }
}

impl DomainSpec {
    /// Refuses a list of domains in which a name, or a guest (the same backend), appears twice.
    pub fn check_distinct(specs: &[DomainSpec]) -> Result<(), String> {
        for (i, spec) in specs.iter().enumerate() {
            if let Some(first) = specs[..i].iter().find(|s| s.name == spec.name) {
                return Err(format!("--domain: the name {} is given twice ({first} and {spec})", spec.name));
            }
            if let Some(first) = specs[..i].iter().find(|s| s.backend == spec.backend) {
                return Err(format!("--domain: {} and {} are the same guest", first.name, spec.name));
            }
        }
        Ok(())
    }

    /// Opens the domain's memory.
    pub fn open(&self) -> Result<Box<dyn GuestMemory>, MemoryError> {
        Ok(match &self.backend {
            Backend::Qemu { ram_file, qmp, machine } => Box::new(QemuMemory::open(ram_file, qmp.as_deref(), *machine)?),
            Backend::QemuProcess { qmp, pid } => Box::new(QemuProcessMemory::open(qmp, *pid)?),
            #[cfg(feature = "libvirt")]
            Backend::Libvirt { domain, uri } => Box::new(crate::memory::libvirt::open(domain, uri)?),
            #[cfg(not(feature = "libvirt"))]
            Backend::Libvirt { .. } => {
                return Err(MemoryError::Unsupported { backend: format!("domain {}", self.name), action: "use libvirt: this xsched was built without the `libvirt` feature" })
            }
            Backend::Core { path } => Box::new(CoreMemory::open(path)?),
            #[cfg(feature = "xen")]
            Backend::Xen { domid } => Box::new(crate::memory::xen::XenMemory::open(*domid)?),
            #[cfg(not(feature = "xen"))]
            Backend::Xen { .. } => {
                return Err(MemoryError::Unsupported { backend: format!("domain {}", self.name), action: "use Xen: this xsched was built without the `xen` feature" })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let spec: DomainSpec = "u1=qemu:/dev/shm/r,qmp=/tmp/q,machine=pc".parse().expect("qemu");
        assert_eq!(
            spec,
            DomainSpec {
                name: "u1".into(),
                backend: Backend::Qemu { ram_file: "/dev/shm/r".into(), qmp: Some("/tmp/q".into()), machine: MachineType::Pc },
                share: Share::default(),
            }
        );
        let shared: DomainSpec = "u2=xen:3,floor=25%,cap=75%".parse().expect("xen with a share");
        assert_eq!(shared.share, Share { floor_percent: 25, cap_percent: 75 });
        assert_eq!("old=core:/x".parse::<DomainSpec>().expect("core").backend, Backend::Core { path: "/x".into() });
        assert_eq!("u2=xen:12".parse::<DomainSpec>().expect("xen").backend, Backend::Xen { domid: 12 });
        assert_eq!(
            "u3=qemu-process:/run/q,pid=77".parse::<DomainSpec>().expect("qemu-process").backend,
            Backend::QemuProcess { qmp: "/run/q".into(), pid: Some(77) }
        );
        assert_eq!(
            "w=libvirt:web01".parse::<DomainSpec>().expect("libvirt").backend,
            Backend::Libvirt { domain: "web01".into(), uri: DEFAULT_URI.into() }
        );
        assert_eq!(
            "w=libvirt:web01,uri=qemu:///system?socket=/run/l.sock,floor=10%".parse::<DomainSpec>().expect("libvirt with a URI").backend,
            Backend::Libvirt { domain: "web01".into(), uri: "qemu:///system?socket=/run/l.sock".into() }
        );
        for text in ["w=libvirt:web01", "w=libvirt:web01,uri=qemu+ssh://h/system", "w=libvirt:web01,cap=50%", "u1=qemu:/dev/shm/r,qmp=/tmp/q,machine=pc", "u1=qemu:/r", "u3=qemu-process:/q", "u3=qemu-process:/q,pid=9", "old=core:/x", "u2=xen:12", "u2=xen:12,floor=10%", "u1=qemu:/r,qmp=/q,floor=20%,cap=50%", "u3=qemu-process:/q,cap=40%"] {
            assert_eq!(text.parse::<DomainSpec>().expect("parse").to_string(), text);
        }
    }

    #[test]
    fn a_name_or_a_guest_given_twice_is_refused() {
        let specs = |texts: &[&str]| texts.iter().map(|t| t.parse::<DomainSpec>().expect("spec")).collect::<Vec<_>>();
        assert_eq!(DomainSpec::check_distinct(&specs(&["u1=core:/a", "u2=core:/b", "u3=xen:1"])), Ok(()));
        let err = DomainSpec::check_distinct(&specs(&["u1=core:/a", "u1=core:/b"])).expect_err("name twice");
        assert_eq!(err, "--domain: the name u1 is given twice (u1=core:/a and u1=core:/b)");
        let err = DomainSpec::check_distinct(&specs(&["u1=qemu:/r,qmp=/q", "u2=qemu:/r,qmp=/q"])).expect_err("guest twice");
        assert_eq!(err, "--domain: u1 and u2 are the same guest");
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("u1", "NAME=KIND"),
            ("u 1=qemu:/r", "name must be"),
            ("u1=qemu", "KIND:ARGS"),
            ("u1=qemu:", "missing qemu target"),
            ("u1=qemu:/r,bogus=1", "unknown qemu option"),
            ("u1=qemu:/r,machine=virt", "unknown QEMU machine"),
            ("u1=xen:abc", "not a Xen domain id"),
            ("u1=qemu-process:/q,pid=x", "not a process id"),
            ("u1=qemu-process:/q,qmp=/q", "unknown qemu-process option"),
            ("u1=vmware:/r", "unknown kind"),
            ("w=libvirt:", "missing libvirt target"),
            ("w=libvirt:web01,pid=3", "unknown libvirt option"),
            ("w=libvirt:web01,uri=", "uri= needs a libvirt URI"),
            ("u1=xen:1,floor=25", "floor=25: expected a percentage"),
            ("u1=xen:1,cap=101%", "cap=101%"),
            ("u1=xen:1,floor=60%,cap=50%", "above its cap"),
        ] {
            let err = spec.parse::<DomainSpec>().expect_err(spec);
            assert!(err.contains(why), "{spec}: {err}");
        }
    }
}
