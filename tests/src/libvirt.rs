//! A private libvirt for lab guests: a real `libvirtd` (Debian's `libvirt-daemon-system`)
//! started by the lab, and guests booted as its domains.
//!
//! The daemon runs as root, without systemd, in a mount namespace of its own (`unshare -m`)
//! where its fixed paths (`/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`,
//! `/var/cache/libvirt`, `/var/log/libvirt`) are bind mounts of directories in a lab directory:
//! the host's own libvirt configuration and state are never touched, and its socket is reached
//! from outside as `DIR/run/libvirt-sock` ([`Libvirtd::uri`]). Its QEMU driver runs guests as
//! root, with no security driver, cgroups or private namespaces (none of which a container
//! without systemd offers) and their output in plain files.
//!
//! A guest booted through it ([`crate::Lab::boot_libvirt`]) is the same guest as a lab QEMU's
//! (kernel, initramfs, console file, control channel: [`domain_xml`]), defined and started with
//! `virsh create` as a transient TCG domain (`type='qemu'`) with anonymous RAM; libvirt holds
//! its monitor, and a second QMP socket (`qmp.sock`, through `<qemu:commandline>`) gives tests
//! the same guest as `qemu-process:` to compare with. Stopping it is `virsh destroy`.
//!
//! Cleanup follows [`crate::cleanup`]: the daemon is a registered child of the lab (killed with
//! it), each domain's QEMU an adopted process (killed at exit if it is still the same process);
//! both command lines name the lab directory, so a later lab's sweep kills what a killed
//! owner left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kernel::{KernelFiles, QEMU};
use crate::{cleanup, GuestSpec, LabError, KERNEL_CMDLINE};

/// How long the daemon may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's directories in the lab directory, and where its namespace mounts each.
const MOUNTS: [(&str, &str); 5] = [
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
];

/// A running private `libvirtd`. Dropping it stops the daemon and removes its directory.
#[derive(Debug)]
pub struct Libvirtd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Libvirtd {
    /// Starts a daemon in a fresh lab directory and waits until it answers.
    pub fn start() -> Result<Self, LabError> {
        cleanup::init();
        let dir = cleanup::new_guest_dir()?;
        let daemon = Self::launch(&dir).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        while daemon.virsh(&["version"]).is_err() {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(dir.join("libvirtd.log")).unwrap_or_default();
                return Err(daemon.error("start libvirtd", format!("no answer within {START_TIMEOUT:?}; its log: {}", log.trim())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log::info!("lab: libvirtd pid {} at {}", daemon.child.as_ref().map_or(0, Child::id), daemon.uri());
        Ok(daemon)
    }

    fn launch(dir: &Path) -> Result<Self, LabError> {
        for (name, _) in MOUNTS {
            let path = dir.join(name);
            std::fs::create_dir(&path).map_err(|e| LabError::io("create libvirt dir", &path, e))?;
        }
        let d = dir.display();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| LabError::io("write", &path, e))
        };
        write(
            "etc/libvirtd.conf",
            format!("unix_sock_group = \"root\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\nlog_outputs = \"3:file:{d}/libvirtd.log\"\n"),
        )?;
        write(
            "etc/qemu.conf",
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = \"file\"\n".into(),
        )?;
        let mounts: String = MOUNTS.iter().map(|(name, target)| format!("mkdir -p {target} && mount --bind {d}/{name} {target} && ")).collect();
        let script = format!("{mounts}exec libvirtd --config {d}/etc/libvirtd.conf");
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c", &script]).stdin(Stdio::null());
        let log = dir.join("libvirtd.out");
        let out = std::fs::File::create(&log).map_err(|e| LabError::io("create", &log, e))?;
        let err = out.try_clone().map_err(|e| LabError::io("dup", &log, e))?;
        command.stdout(out).stderr(err);
        let child = cleanup::spawn(command, dir).map_err(|e| LabError::io("spawn unshare/libvirtd for", dir, e))?;
        Ok(Self { dir: dir.to_path_buf(), child: Some(child) })
    }

    /// The URI that reaches this daemon's QEMU driver from outside its namespace.
    pub fn uri(&self) -> String {
        format!("qemu:///system?socket={}/run/libvirt-sock", self.dir.display())
    }

    /// The daemon's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `virsh ARGS` on this daemon ([`virsh`]).
    pub fn virsh(&self, args: &[&str]) -> Result<String, LabError> {
        virsh(&self.uri(), args)
    }

    /// Defines a persistent domain from `xml` without starting it.
    pub fn define(&self, name: &str, xml: &str) -> Result<(), LabError> {
        let path = self.dir.join(format!("{name}.xml"));
        std::fs::write(&path, xml).map_err(|e| LabError::io("write", &path, e))?;
        self.virsh(&["define", &path.display().to_string()]).map(drop)
    }

    /// The state `virsh domstate` reports for domain `name` ("running", "paused", "shut off"…).
    pub fn domstate(&self, name: &str) -> Result<String, LabError> {
        Ok(self.virsh(&["domstate", name])?.trim().to_owned())
    }

    /// Starts the transient domain `xml` (for guest `name`, in guest directory `guest_dir`) and
    /// returns its QEMU's pid, from libvirt's own pid file.
    pub(crate) fn create(&self, name: &str, xml: &str, guest_dir: &Path) -> Result<u32, LabError> {
        let path = guest_dir.join("domain.xml");
        std::fs::write(&path, xml).map_err(|e| LabError::io("write", &path, e))?;
        self.virsh(&["create", &path.display().to_string()])?;
        let pid_file = self.dir.join("run/qemu").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&pid_file).map_err(|e| LabError::io("read libvirt's pid file", &pid_file, e))?;
        let pid = text.trim().parse::<u32>().map_err(|_| self.error(&format!("read {}", pid_file.display()), format!("not a pid: {text:?}")))?;
        cleanup::adopt(pid, guest_dir);
        Ok(pid)
    }

    fn error(&self, action: &str, reason: String) -> LabError {
        error(action, reason)
    }
}

fn error(action: &str, reason: String) -> LabError {
    LabError::Libvirt { action: action.to_owned(), reason }
}

/// Runs `virsh -c URI ARGS` and returns its standard output; a failure is an error with
/// virsh's standard error.
pub fn virsh(uri: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("virsh").arg("-c").arg(uri).args(args).stdin(Stdio::null()).output().map_err(|e| LabError::io("run virsh", Path::new("virsh"), e))?;
    if !out.status.success() {
        return Err(error(&format!("virsh {}", args.join(" ")), String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops domain `name` (QEMU `pid`) of the libvirt at `uri` at once and waits for its QEMU to
/// be gone.
pub(crate) fn destroy(uri: &str, name: &str, pid: u32) -> Result<(), LabError> {
    let destroyed = virsh(uri, &["destroy", name]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    cleanup::forget(pid);
    if process_alive(pid) {
        return Err(error(&format!("destroy {name}"), format!("QEMU pid {pid} still runs")));
    }
    destroyed.map(drop)
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cleanup::has_exited(child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        if let Err(e) = cleanup::reap_and_remove(&mut child, &self.dir) {
            log::warn!("lab: stopping libvirtd: {e}");
        }
    }
}

/// Whether `pid` names a live (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')))
        .unwrap_or(false)
}

/// The libvirt domain for `spec`: the lab QEMU's guest (see `guest::qemu_args`) as libvirt
/// XML, its files in `dir`. libvirt adds its own monitor; a second one, `dir/qmp.sock`, is the
/// lab's (as the README tells operators who cannot reach libvirtd), for tests that compare the
/// two ways; the guest has anonymous RAM.
pub fn domain_xml(spec: &GuestSpec, kernel: &KernelFiles, dir: &Path) -> String {
    let mut cmdline = KERNEL_CMDLINE.to_owned();
    for arg in &spec.kernel_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    let d = escape(&dir.display().to_string());
    format!(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n  <name>{name}</name>\n  <memory unit='MiB'>{mib}</memory>\n  <vcpu>{vcpus}</vcpu>\n  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n    <kernel>{kernel}</kernel>\n    <initrd>{d}/initrd.cpio</initrd>\n    <cmdline>{cmdline}</cmdline>\n  </os>\n  <features><acpi/><vmcoreinfo state='on'/></features>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    <emulator>/usr/bin/{QEMU}</emulator>\n    <serial type='file'><source path='{d}/console.log'/><target type='isa-serial' port='0'/></serial>\n    <serial type='unix'><source mode='bind' path='{d}/control.sock'/><target type='isa-serial' port='1'/></serial>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n  </devices>\n  <qemu:commandline><qemu:arg value='-qmp'/><qemu:arg value='unix:{d}/qmp.sock,server=on,wait=off'/></qemu:commandline>\n</domain>\n",
        name = escape(&spec.name),
        mib = spec.memory_mib,
        vcpus = spec.vcpus,
        kernel = escape(&kernel.vmlinuz.display().to_string()),
        cmdline = escape(&cmdline),
    )
}

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }

    #[test]
    fn this_process_is_alive_and_a_pid_above_pid_max_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(5_000_000));
    }
}
