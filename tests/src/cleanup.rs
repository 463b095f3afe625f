//! Owning QEMU processes and guest directories so that nothing outlives the process that booted it.
//!
//! Four layers, each covering what the previous cannot:
//!
//! 1. [`crate::Guest`]'s `Drop` stops QEMU and removes its directory (the normal path, also on panic).
//! 2. Every QEMU is spawned by one dedicated, never-ending thread with `PR_SET_PDEATHSIG(SIGKILL)`:
//!    the signal fires when the *spawning thread* exits, so spawning from short-lived test threads
//!    would kill guests that a `static` still shares. When the whole process dies (even by
//!    `SIGKILL`), the kernel kills its QEMUs.
//! 3. Statics are never dropped, so an `atexit` handler kills and reaps registered QEMUs and removes
//!    their directories; `SIGINT`, `SIGTERM` and `SIGHUP` (when left at their default action) run the
//!    same cleanup on a watcher thread, then re-raise.
//! 4. At every lab start, [`sweep`] removes directories (and kills QEMUs) of owners that are gone,
//!    which covers a `SIGKILL`ed owner.
//!
//! Host cgroups made for guests ([`crate::host_cgroup`]) go the same ways: dropped, removed by the
//! exit cleanup after the QEMUs, or swept at the next start.
//!
//! Guest directories are `<run dir>/xsched-lab-<owner pid>-<n>/` with an `owner` file holding the
//! owner's start time (so a reused pid is not mistaken for the owner).

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, Once, OnceLock};

use crate::LabError;

/// Environment variable overriding where guest directories go (default `/dev/shm`).
pub const RUN_DIR_ENV: &str = "XSCHED_LAB_RUN_DIR";

/// The prefix of every guest directory's name.
const DIR_PREFIX: &str = "xsched-lab-";

/// The directory guest directories are created in.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

/// A QEMU process and the directory it uses, as remembered for exit-time cleanup.
#[derive(Debug)]
struct Registered {
    pid: i32,
    dir: PathBuf,
    /// For an adopted process (not our child): its start time, so that a pid reused since is
    /// left alone.
    adopted: Option<u64>,
}

/// Guests not yet stopped. Removing an entry and reaping its process happen under this lock, so
/// the exit-time cleanup never signals a pid that has been reaped (and could be reused).
static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Registered>> {
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One-time process setup: exit hooks, signal watcher, and a sweep of stale directories.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: `cleanup_at_exit` is an `extern "C" fn()` that never unwinds (it catches panics).
        let rc = unsafe { libc::atexit(cleanup_at_exit) };
        if rc != 0 {
            log::warn!("lab: atexit registration failed; guests in statics may outlive the process");
        }
        install_signal_watcher();
        sweep();
    });
}

/// A fresh, empty guest directory owned by this process.
pub(crate) fn new_guest_dir() -> Result<PathBuf, LabError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = run_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let owner = format!("{}\n", start_time(std::process::id()).unwrap_or(0));
                let path = dir.join("owner");
                std::fs::write(&path, owner).map_err(|e| LabError::io("write", &path, e))?;
                return Ok(dir);
            }
            // Left over from an earlier process with the same pid: sweep missed it; try the next n.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::io("create guest dir", &dir, e)),
        }
    }
}

/// Spawns `command` on the spawner thread with `PR_SET_PDEATHSIG(SIGKILL)` and registers it with
/// `dir` for exit-time cleanup.
pub(crate) fn spawn(mut command: Command, dir: &Path) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only makes two
    // async-signal-safe system calls; it allocates nothing (the error is a raw OS error).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would ever kill us.
            if libc::getppid() != parent as libc::pid_t {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let spawner = spawner().lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    spawner
        .send(SpawnRequest { command, reply: reply_tx })
        .map_err(|_| io::Error::other("lab spawner thread is gone"))?;
    let child = reply_rx.recv().map_err(|_| io::Error::other("lab spawner thread did not answer"))??;
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    registry().push(Registered { pid, dir: dir.to_path_buf(), adopted: None });
    Ok(child)
}

/// Registers process `pid`, which is not our child (a QEMU that a lab libvirtd started), with
/// `dir` for exit-time cleanup: killed then if it is still the same process.
pub(crate) fn adopt(pid: u32, dir: &Path) {
    let (Ok(raw), Some(started)) = (i32::try_from(pid), start_time(pid)) else { return };
    registry().push(Registered { pid: raw, dir: dir.to_path_buf(), adopted: Some(started) });
}

/// Forgets an adopted process (once it is gone).
pub(crate) fn forget(pid: u32) {
    registry().retain(|r| r.adopted.is_none() || u32::try_from(r.pid).ok() != Some(pid));
}

/// Reaps `child` (which must have exited or been killed), removes `dir`, and forgets both.
pub(crate) fn reap_and_remove(child: &mut Child, dir: &Path) -> Result<(), LabError> {
    let mut registry = registry();
    let waited = child.wait().map(drop).map_err(|e| LabError::io("wait for qemu", dir, e));
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    registry.retain(|r| r.pid != pid);
    let removed = match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LabError::io("remove guest dir", dir, e)),
        _ => Ok(()),
    };
    waited.and(removed)
}

/// Whether process `pid` (our child) has exited, without reaping it.
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child reapable.
    let rc = unsafe { libc::waitid(libc::P_PID, libc::id_t::from(pid), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    // SAFETY: waitid succeeded, so `info` is initialized; si_pid is 0 when the child still runs.
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// Kills and reaps every registered QEMU and removes its directory.
pub fn cleanup_all() {
    let mut registry = registry();
    for r in registry.iter() {
        match r.adopted {
            Some(started) => {
                if u32::try_from(r.pid).ok().and_then(start_time) == Some(started) {
                    // SAFETY: kill(2) on a pid that still names the process adopted.
                    unsafe {
                        libc::kill(r.pid, libc::SIGKILL);
                    }
                }
            }
            // SAFETY: plain system calls on a pid that is our unreaped child (entries leave the
            // registry only when reaped, under this lock).
            None => unsafe {
                libc::kill(r.pid, libc::SIGKILL);
                libc::waitpid(r.pid, std::ptr::null_mut(), 0);
            },
        }
        let _ = std::fs::remove_dir_all(&r.dir);
    }
    registry.clear();
    // Empty now that their QEMUs are reaped.
    crate::host_cgroup::remove_live();
}

extern "C" fn cleanup_at_exit() {
    let _ = std::panic::catch_unwind(cleanup_all);
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The channel to the spawner thread, started on first use and never stopped.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new().name("xsched-lab-spawner".into()).spawn(move || {
            // Lives as long as the process: the static sender is never dropped.
            for mut request in rx {
                let _ = request.reply.send(request.command.spawn());
            }
        });
        if let Err(e) = started {
            log::error!("lab: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

/// The write end of the signal self-pipe (-1 until installed).
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    let byte = u8::try_from(signal).unwrap_or(0);
    // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP (those still at their default action) that
/// hand the signal to a watcher thread, which cleans up, restores the default and re-raises.
fn install_signal_watcher() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        log::warn!("lab: no signal pipe: {}", io::Error::last_os_error());
        return;
    }
    let [read_fd, write_fd] = fds;
    SIGNAL_PIPE.store(write_fd, Ordering::Relaxed);
    let watcher = std::thread::Builder::new().name("xsched-lab-signals".into()).spawn(move || loop {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a valid buffer from our own pipe.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            let signal = libc::c_int::from(byte);
            eprintln!("xsched-lab: signal {signal}: stopping guests");
            cleanup_all();
            // SAFETY: restoring the default action and re-raising are plain system calls.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return;
        }
    });
    if watcher.is_err() {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with a zeroed struct (empty mask, no flags) reads the current action,
        // then installs `on_signal`, which only calls write(2).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 || old.sa_sigaction != libc::SIG_DFL {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), to tell a reused pid from the original.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(") ")? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// Whether the owner recorded in a guest directory is still alive.
fn owner_alive(pid: u32, dir: &Path) -> bool {
    let recorded = std::fs::read_to_string(dir.join("owner")).ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (start_time(pid), recorded) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        // No owner file yet: the owner may be creating it right now.
        (Some(_), None) => true,
    }
}

/// Removes guest directories whose owner process is gone, killing any QEMU still using one, and
/// the host cgroups of such owners.
pub fn sweep() {
    let base = run_dir();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if owner != std::process::id() && !owner_alive(owner, &dir) {
            stale.push(dir);
        }
    }
    if !stale.is_empty() {
        kill_processes_using(&stale);
    }
    for dir in stale {
        log::info!("lab: removing stale guest dir {}", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
    }
    crate::host_cgroup::sweep();
}

/// Sends SIGKILL to every process whose command line mentions one of `dirs`.
fn kill_processes_using(dirs: &[PathBuf]) {
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    let needles: Vec<String> = dirs.iter().map(|d| format!("{}/", d.display())).collect();
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if needles.iter().any(|n| cmdline.contains(n.as_str())) {
            log::info!("lab: killing stale process {pid}");
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
