//! One running lab guest: its QEMU process, directory, console, control channel and QMP socket.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use xsched::memory::qmp::{QmpClient, QmpTimeouts};

use crate::cleanup;
use crate::console::ConsoleState;
use crate::control::Control;
use crate::kernel::{KernelFiles, QEMU};
use crate::libvirt::{self, Libvirtd};
use crate::spec::validate_cgroup;
use crate::{initramfs, GuestSpec, LabError, ProcView, Workload};

/// Default time limit for [`Guest::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a lab client waits for a QMP monitor another client holds (QEMU serves one at a
/// time and tests share guests): xsched's whole command budget before QMP had timeouts, so
/// tests queue as they did. The `xsched` runs of the tests get it through `XSCHED_QMP_WAIT`.
pub const QMP_WAIT: Duration = Duration::from_secs(120);

/// How often waits re-read the console.
const POLL: Duration = Duration::from_millis(50);

/// How long [`Guest::stop`] lets QEMU exit after `SIGTERM` before `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a guest's QEMU runs, and so how it is watched and stopped.
#[derive(Debug)]
enum Qemu {
    /// A child of the lab.
    Child(Child),
    /// A domain of a lab libvirtd ([`Libvirtd`]): libvirt's child, not ours.
    Domain {
        /// The daemon's URI.
        uri: String,
        /// The domain's name.
        name: String,
        /// Its QEMU's pid.
        pid: u32,
    },
}

impl Qemu {
    fn pid(&self) -> u32 {
        match self {
            Self::Child(child) => child.id(),
            Self::Domain { pid, .. } => *pid,
        }
    }

    fn has_exited(&self) -> bool {
        match self {
            Self::Child(child) => cleanup::has_exited(child.id()),
            Self::Domain { pid, .. } => !libvirt::process_alive(*pid),
        }
    }
}

/// A running guest. Dropping it stops QEMU and removes the guest's directory.
///
/// All methods take `&self` and are safe to call from several threads (a guest can be shared by
/// the tests of a test binary, see [`crate::shared_lab`]).
#[derive(Debug)]
pub struct Guest {
    spec: GuestSpec,
    kernel: KernelFiles,
    dir: PathBuf,
    ram_file: PathBuf,
    qmp_socket: PathBuf,
    control_socket: PathBuf,
    console_path: PathBuf,
    qemu_log: PathBuf,
    pid: u32,
    child: Mutex<Option<Qemu>>,
    console: Mutex<ConsoleState>,
    control: Mutex<Option<Control>>,
    started: Instant,
    boot_time: Mutex<Option<Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Guest {
    /// Creates the guest directory and initramfs and starts QEMU — as the lab's child, or as a
    /// domain of `libvirtd` — without waiting for the guest.
    pub(crate) fn launch(spec: GuestSpec, kernel: &KernelFiles, libvirtd: Option<&Libvirtd>) -> Result<Self, LabError> {
        spec.validate()?;
        if libvirtd.is_some() && (!spec.anonymous_ram || spec.la57) {
            return Err(LabError::Spec { guest: spec.name.clone(), reason: "a libvirt guest has anonymous RAM and no la57: set anonymous_ram, not la57".into() });
        }
        cleanup::init();
        let dir = cleanup::new_guest_dir()?;
        let ram_file = dir.join("ram");
        let qmp_socket = dir.join("qmp.sock");
        let control_socket = dir.join("control.sock");
        let console_path = dir.join("console.log");
        let qemu_log = dir.join("qemu.log");
        let initrd = dir.join("initrd.cpio");

        let remove_dir = |e: LabError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let image = initramfs::build(&spec, kernel).map_err(remove_dir)?;
        std::fs::write(&initrd, image).map_err(|e| remove_dir(LabError::io("write initramfs", &initrd, e)))?;
        let qemu = match libvirtd {
            Some(daemon) => {
                let pid = daemon.create(&spec.name, &libvirt::domain_xml(&spec, kernel, &dir), &dir).map_err(remove_dir)?;
                Qemu::Domain { uri: daemon.uri(), name: spec.name.clone(), pid }
            }
            None => {
                let log = File::create(&qemu_log).map_err(|e| remove_dir(LabError::io("create", &qemu_log, e)))?;
                let log2 = log.try_clone().map_err(|e| remove_dir(LabError::io("dup", &qemu_log, e)))?;
                let mut command = Command::new(QEMU);
                command.args(qemu_args(&spec, kernel, &dir)).stdin(Stdio::null()).stdout(log).stderr(log2);
                Qemu::Child(cleanup::spawn(command, &dir).map_err(|e| remove_dir(LabError::io("spawn qemu for", &dir, e)))?)
            }
        };
        let pid = qemu.pid();
        log::info!("lab: guest {} started on kernel {}: qemu pid {pid} in {}", spec.name, kernel.pin, dir.display());
        Ok(Self {
            pid,
            child: Mutex::new(Some(qemu)),
            console: Mutex::new(ConsoleState::new(&console_path)),
            control: Mutex::new(None),
            started: Instant::now(),
            boot_time: Mutex::new(None),
            kernel: kernel.clone(),
            spec,
            dir,
            ram_file,
            qmp_socket,
            control_socket,
            console_path,
            qemu_log,
        })
    }

    /// Polls once while booting: `Ok(true)` once ready, an error if the boot failed.
    pub(crate) fn poll_boot(&self, timeout: Duration) -> Result<bool, LabError> {
        let mut console = lock(&self.console);
        console.poll()?;
        let failed = |reason: String, tail: String| LabError::BootFailed {
            guest: self.spec.name.clone(),
            reason,
            console_tail: tail,
        };
        if let Some(error) = console.errors.first() {
            return Err(failed(format!("guest init: {error}"), console.tail_text()));
        }
        if console.ready.is_some() {
            *lock(&self.boot_time) = Some(self.started.elapsed());
            return Ok(true);
        }
        if !self.is_running() {
            let stderr = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
            return Err(failed(format!("qemu exited before the guest was ready: {}", stderr.trim()), console.tail_text()));
        }
        if self.started.elapsed() > timeout {
            return Err(LabError::BootTimeout {
                guest: self.spec.name.clone(),
                after: timeout,
                console_tail: console.tail_text(),
            });
        }
        Ok(false)
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec it was booted from.
    pub fn spec(&self) -> &GuestSpec {
        &self.spec
    }

    /// The kernel it runs (its `vmlinux` has the DWARF for profiles).
    pub fn kernel(&self) -> &KernelFiles {
        &self.kernel
    }

    /// The guest's private directory (`/dev/shm/xsched-lab-<pid>-<n>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file backing guest RAM (shared with QEMU: mapping it shows guest-physical memory);
    /// absent for a guest with anonymous RAM ([`GuestSpec::anonymous_ram`]).
    pub fn ram_file(&self) -> &Path {
        &self.ram_file
    }

    /// QEMU's QMP socket (one client at a time); for a libvirt domain a second monitor beside
    /// libvirt's own.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// The control channel's socket (used by [`Guest::exec`]; QEMU serves one client).
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    /// The file QEMU writes the serial console to.
    pub fn console_path(&self) -> &Path {
        &self.console_path
    }

    /// The QEMU process id (for a libvirt domain, from libvirt's pid file).
    pub fn qemu_pid(&self) -> u32 {
        self.pid
    }

    /// Time from starting QEMU to the guest's ready line.
    pub fn boot_time(&self) -> Option<Duration> {
        *lock(&self.boot_time)
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        lock(&self.child).as_ref().is_some_and(|qemu| !qemu.has_exited())
    }

    /// Connects a new QMP client. QEMU serves one at a time and tests share guests, so this waits
    /// up to [`QMP_WAIT`] for another client (a test's, an `xsched` run's) to let go.
    pub fn qmp(&self) -> Result<QmpClient, LabError> {
        let timeouts = QmpTimeouts { connect: QMP_WAIT, greeting: QMP_WAIT, ..QmpTimeouts::default() };
        QmpClient::connect_with(&self.qmp_socket, timeouts).map_err(|source| LabError::Qmp { guest: self.spec.name.clone(), source })
    }

    /// Connects to the operator's monitor, the guest's second QMP socket: what an operator or
    /// libvirt would use while xsched holds the first.
    pub fn operator_qmp(&self) -> Result<QmpClient, LabError> {
        QmpClient::connect(&self.dir.join("operator.sock")).map_err(|source| LabError::Qmp { guest: self.spec.name.clone(), source })
    }

    /// The guest's run state from the operator's monitor: "running", "paused", ….
    pub fn qmp_status(&self) -> String {
        self.operator_qmp()
            .and_then(|mut qmp| qmp.execute("query-status", None).map_err(|source| LabError::Qmp { guest: self.spec.name.clone(), source }))
            .map_or_else(|e| format!("unknown ({e})"), |status| status["status"].as_str().unwrap_or("?").to_string())
    }

    /// Everything the guest printed on its console so far.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console_path).unwrap_or_default()).into_owned()
    }

    /// The console's current length in bytes (a starting point for [`Guest::wait_console`]).
    pub fn console_len(&self) -> u64 {
        std::fs::metadata(&self.console_path).map_or(0, |m| m.len())
    }

    /// Waits for a console line containing `needle` printed after byte `since`; returns the line.
    pub fn wait_console(&self, needle: &str, since: u64, timeout: Duration) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = read_from(&self.console_path, since);
            if let Some(line) = String::from_utf8_lossy(&fresh).lines().find(|l| l.contains(needle)) {
                return Ok(line.trim_end_matches('\r').to_owned());
            }
            if Instant::now() >= deadline {
                return Err(self.view_timeout(format!("no console line with {needle:?}"), timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Console lines that show the kernel is hurt (see [`crate::console::PROBLEM_PATTERNS`]).
    pub fn console_problems(&self) -> Vec<String> {
        let mut console = lock(&self.console);
        if let Err(e) = console.poll() {
            return vec![format!("cannot read the console: {e}")];
        }
        console.problems.clone()
    }

    /// The pids of each workload's processes, by workload name (from the guest's `XSW` lines).
    pub fn workload_pids(&self) -> BTreeMap<String, Vec<u32>> {
        let mut console = lock(&self.console);
        let _ = console.poll();
        console.workload_pids()
    }

    /// The pids of workload `name` (empty if there is no such workload).
    pub fn pids_of(&self, name: &str) -> Vec<u32> {
        self.workload_pids().remove(name).unwrap_or_default()
    }

    /// The most recent complete view, if any.
    pub fn latest_view(&self) -> Option<ProcView> {
        let mut console = lock(&self.console);
        let _ = console.poll();
        console.views.back().cloned()
    }

    /// Waits for the first complete view with a round number above `round`.
    pub fn wait_view_after(&self, round: u64, timeout: Duration) -> Result<ProcView, LabError> {
        if self.spec.view_interval_ms == 0 {
            return Err(self.view_timeout("the view is off (view_interval_ms = 0)".into(), Duration::ZERO));
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut console = lock(&self.console);
                console.poll()?;
                if let Some(view) = console.views.iter().find(|v| v.round > round) {
                    return Ok(view.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.view_timeout(format!("no view after round {round}"), timeout));
            }
            if !self.is_running() {
                return Err(self.view_timeout("qemu is not running".into(), timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for a view that the guest began after this call (so it reflects everything done before).
    pub fn next_view(&self, timeout: Duration) -> Result<ProcView, LabError> {
        let begun = {
            let mut console = lock(&self.console);
            console.poll()?;
            console.last_begun_round()
        };
        self.wait_view_after(begun, timeout)
    }

    /// Runs a one-line shell command in the guest (`sh -c`, stdin `/dev/null`) and returns its exit
    /// code and its stdout and stderr, interleaved, exactly as printed. Times out after
    /// [`EXEC_TIMEOUT`]. A background process the command starts must redirect its output, or it
    /// writes into the control channel.
    pub fn exec(&self, command: &str) -> Result<(i32, String), LabError> {
        self.exec_timeout(command, EXEC_TIMEOUT)
    }

    /// [`Guest::exec`] with an explicit time limit.
    pub fn exec_timeout(&self, command: &str, timeout: Duration) -> Result<(i32, String), LabError> {
        let fail = |reason: String| LabError::Exec {
            guest: self.spec.name.clone(),
            command: command.to_owned(),
            reason,
        };
        let mut control = lock(&self.control);
        if control.is_none() {
            *control = Some(Control::connect(&self.control_socket).map_err(|e| fail(format!("connect: {e}")))?);
        }
        let channel = control.as_mut().ok_or_else(|| fail("not connected".into()))?;
        let result = channel.exec(command, timeout).map_err(fail);
        if matches!(&result, Err(LabError::Exec { reason, .. }) if reason.contains("closed")) {
            *control = None;
        }
        result
    }

    /// Like [`Guest::exec`], but a non-zero exit code is an error; returns the output.
    pub fn exec_ok(&self, command: &str) -> Result<String, LabError> {
        match self.exec(command)? {
            (0, output) => Ok(output),
            (code, output) => Err(LabError::Exec {
                guest: self.spec.name.clone(),
                command: command.to_owned(),
                reason: format!("exit code {code}: {output}"),
            }),
        }
    }

    /// Starts `workload` in the running guest, as the boot does (comm, cgroup created with the cpu
    /// controller), and returns the new processes' pids. They also appear in
    /// [`Guest::workload_pids`]. A new name must not clash with a running workload's.
    pub fn start_workload(&self, workload: &Workload) -> Result<Vec<u32>, LabError> {
        workload.validate().map_err(|reason| LabError::Spec { guest: self.spec.name.clone(), reason })?;
        let output = self.exec_ok(&format!("/lab/spawn {}", workload.spawn_args()))?;
        output
            .split_whitespace()
            .map(|p| p.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| LabError::Exec {
                guest: self.spec.name.clone(),
                command: "/lab/spawn".into(),
                reason: format!("unexpected output {output:?}"),
            })
    }

    /// Moves process `pid` into cgroup `group` (relative to `/sys/fs/cgroup`; created with the cpu
    /// controller if needed; `None` is the root group).
    pub fn move_to_cgroup(&self, pid: u32, group: Option<&str>) -> Result<(), LabError> {
        if let Some(group) = group {
            validate_cgroup(group).map_err(|reason| LabError::Spec { guest: self.spec.name.clone(), reason })?;
        }
        self.exec_ok(&format!(". /lab/lib.sh; move_to_cgroup {pid} {}", group.unwrap_or("-"))).map(drop)
    }

    /// Confines every QEMU thread of this guest to the host CPUs `cpus` (threads it starts later
    /// inherit it): several guests pinned to one CPU share it, as VMs share a physical CPU.
    pub fn pin_to_host_cpus(&self, cpus: &[usize]) -> Result<(), LabError> {
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid));
        let entries = std::fs::read_dir(&tasks).map_err(|e| LabError::io("list threads in", &tasks, e))?;
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            // SAFETY: CPU_SET only writes inside `set`; it ignores CPUs beyond the set's size.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else { continue };
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
            let error = std::io::Error::last_os_error();
            if rc != 0 && error.raw_os_error() != Some(libc::ESRCH) {
                return Err(LabError::io("pin thread of", &tasks, error));
            }
        }
        Ok(())
    }

    /// Stops QEMU (`SIGTERM`, then `SIGKILL` after a grace period; a libvirt domain: `virsh
    /// destroy`), reaps it and removes the guest's directory. Dropping the guest does the same.
    pub fn stop(self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<(), LabError> {
        let Some(qemu) = lock(&self.child).take() else { return Ok(()) };
        *lock(&self.control) = None;
        let mut child = match qemu {
            Qemu::Child(child) => child,
            Qemu::Domain { uri, name, pid } => {
                let destroyed = libvirt::destroy(&uri, &name, pid);
                let removed = match std::fs::remove_dir_all(&self.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io("remove guest dir", &self.dir, e)),
                    _ => Ok(()),
                };
                return destroyed.and(removed);
            }
        };
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while !cleanup::has_exited(child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !cleanup::has_exited(child.id()) {
            log::warn!("lab: guest {}: qemu ignored SIGTERM; killing it", self.spec.name);
            let _ = child.kill();
        }
        cleanup::reap_and_remove(&mut child, &self.dir)
    }

    fn view_timeout(&self, reason: String, after: Duration) -> LabError {
        LabError::ViewTimeout { guest: self.spec.name.clone(), reason, after }
    }
}

/// The bytes of `path` from offset `start` on (empty if unreadable).
fn read_from(path: &Path, start: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    bytes
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("lab: stopping guest {}: {e}", self.spec.name);
        }
    }
}

/// The kernel command line every guest gets (before the spec's extra words). KASLR stays on.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 loglevel=5 panic=1";

/// QEMU's arguments for `spec`, with all files in `dir`.
fn qemu_args(spec: &GuestSpec, kernel: &KernelFiles, dir: &Path) -> Vec<String> {
    let d = dir.display();
    let mib = spec.memory_mib;
    let mut append = KERNEL_CMDLINE.to_owned();
    for arg in &spec.kernel_args {
        append.push(' ');
        append.push_str(arg);
    }
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!("guest={},debug-threads=on", spec.name),
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        format!("{mib}M"),
        "-smp".into(),
        spec.vcpus.to_string(),
    ];
    if spec.anonymous_ram {
        args.extend(["-machine".into(), "q35".into()]);
    } else {
        args.extend([
            "-machine".into(),
            "q35,memory-backend=mem".into(),
            "-object".into(),
            format!("memory-backend-file,id=mem,size={mib}M,mem-path={d}/ram,share=on"),
        ]);
    }
    if spec.la57 {
        args.extend(["-cpu".into(), "max".into()]);
    }
    args.extend([
        "-kernel".into(),
        kernel.vmlinuz.display().to_string(),
        "-initrd".into(),
        format!("{d}/initrd.cpio"),
        "-append".into(),
        append,
        "-qmp".into(),
        format!("unix:{d}/qmp.sock,server=on,wait=off"),
        // A second monitor, the operator's (as libvirt keeps its own): tests pause the guest
        // through it, and watch its run state, while xsched holds the first.
        "-qmp".into(),
        format!("unix:{d}/operator.sock,server=on,wait=off"),
        "-device".into(),
        "vmcoreinfo".into(),
        "-display".into(),
        "none".into(),
        "-nodefaults".into(),
        "-chardev".into(),
        format!("file,id=console,path={d}/console.log"),
        "-device".into(),
        "isa-serial,chardev=console,index=0".into(),
        "-chardev".into(),
        format!("socket,id=control,path={d}/control.sock,server=on,wait=off"),
        "-device".into(),
        "isa-serial,chardev=control,index=1".into(),
        "-no-reboot".into(),
    ]);
    args
}
