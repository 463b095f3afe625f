//! The supervisor: a small process that outlives the scheduling loop and gives back what the
//! loop held when it dies — by any signal, the OOM killer, a plugin that crashes or hangs.
//!
//! [`start`] forks once the domains are attached and before the policy plugin is loaded. The
//! original process goes on as the loop (it keeps its pid: what the operator started and may
//! signal); the child becomes the supervisor, in its own session so that the terminal's Ctrl-C
//! reaches only the loop. The two share:
//!
//! - a socket pair: each learns the other's death from end-of-file, whatever killed it;
//! - a page of memory ([`Shared`]): a heartbeat counter the loop advances every period, and per
//!   domain a [`Hold`] — whether the loop may hold the domain paused, and the batch of writes it
//!   is making (a redo log).
//!
//! When the loop dies the supervisor opens every domain again (from the location found at
//! attach: no RAM search), completes a batch of writes cut short and resumes a domain the loop
//! held paused (only then: a domain someone else paused stays paused), and releases every task
//! the journal says the loop parked. When the heartbeat stops for [`stall_limit`] (a policy
//! that never returns, a loop stuck anywhere; ten times as long for the first beat) it kills
//! the loop first; a loop that has ended says so and is not watched while it exits. A loop that ended cleanly
//! leaves nothing, and the supervisor exits without a word. When the supervisor dies the loop
//! stops and releases everything itself ([`Link::supervisor_alive`]).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::actuate::journal::Journal;
use crate::domain::{Domain, DomainId, DomainSpec, Hold};
use crate::linux::locate::KernelLocation;
use crate::profile::Profile;
use crate::run::{Holdings, RunStats};

/// The heartbeat's value once the loop has ended ([`Link::loop_ended`]).
const LOOP_ENDED: u64 = u64::MAX;
/// How many stall limits the loop has for its first beat (loading the policy, opening the
/// journal, releasing what an earlier xsched left).
const FIRST_BEAT_GRACE: u32 = 10;
/// How often the supervisor looks at the loop.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// How long the supervisor keeps trying to open a domain again (QEMU takes the dead loop's QMP
/// connection down when it notices the socket closed).
const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

/// Why the supervisor could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A system call failed.
    #[error("starting the supervisor: {call}: {source}")]
    Sys {
        /// The call.
        call: &'static str,
        /// Its error.
        source: std::io::Error,
    },
}

/// The longest the loop may go without a heartbeat before the supervisor stops it: twenty
/// periods, and at least two seconds (a loaded host can hold one period up that long).
pub fn stall_limit(period: Duration) -> Duration {
    (period * 20).max(Duration::from_secs(2))
}

/// The memory the loop and its supervisor share: a heartbeat, then one [`Hold`] per domain.
#[repr(C)]
struct SharedHeader {
    heartbeat: AtomicU64,
}

/// A `MAP_SHARED` anonymous mapping that stays mapped for the life of the process (and of its
/// forked child), so that what is in it can be handed out as `'static`.
pub struct Shared {
    base: *mut u8,
    domains: usize,
}

// SAFETY: the mapping holds atomics only and is never unmapped; sharing it is sharing atomics.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(domains: usize) -> Result<Self, SuperviseError> {
        let len = Self::hold_offset(domains);
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(SuperviseError::Sys { call: "mmap", source: std::io::Error::last_os_error() });
        }
        Ok(Self { base: base.cast(), domains })
    }

    fn hold_offset(index: usize) -> usize {
        let header = std::mem::size_of::<SharedHeader>().next_multiple_of(std::mem::align_of::<Hold>());
        header + index * std::mem::size_of::<Hold>()
    }

    /// The heartbeat counter.
    pub fn heartbeat(&self) -> &'static AtomicU64 {
        // SAFETY: the mapping starts with a `SharedHeader` (page aligned, zeroed = valid atomics)
        // and is never unmapped.
        unsafe { &(*self.base.cast::<SharedHeader>()).heartbeat }
    }

    /// Domain `index`'s hold.
    pub fn hold(&self, index: usize) -> &'static Hold {
        assert!(index < self.domains, "domain {index} of {}", self.domains);
        // SAFETY: `hold_offset` places `Hold`s after the header, aligned, inside the mapping
        // (sized for `domains` of them); zeroed atomics are valid; never unmapped.
        unsafe { &*self.base.add(Self::hold_offset(index)).cast::<Hold>() }
    }
}

/// What the supervisor needs to open a domain again.
struct Recipe {
    id: DomainId,
    spec: DomainSpec,
    profile: Profile,
    location: KernelLocation,
}

/// The loop's side of the supervisor.
pub struct Link {
    socket: UnixStream,
    supervisor: libc::pid_t,
    shared: Shared,
}

impl Link {
    /// The supervisor's pid.
    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor.unsigned_abs()
    }

    /// The heartbeat counter the loop advances.
    pub fn heartbeat(&self) -> &'static AtomicU64 {
        self.shared.heartbeat()
    }

    /// Tells the supervisor the loop has ended (everything released): the heartbeat stops on
    /// purpose while the process tidies up and exits, and is no stall.
    pub fn loop_ended(&self) {
        self.shared.heartbeat().store(LOOP_ENDED, Ordering::SeqCst);
    }

    /// Whether the supervisor still runs (its end of the socket is open).
    pub fn supervisor_alive(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid `pollfd` for a socket this process owns; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        // The supervisor never writes: readable means end-of-file.
        !(ready > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
    }
}

/// Forks the supervisor of the loop about to run over `domains`, journaling to `journal`;
/// returns the domains (now publishing their holds to the supervisor) and the link to it. Call
/// it while the process has one thread: before loading a plugin.
pub fn start(mut domains: Vec<Domain>, journal: PathBuf, period: Duration) -> Result<(Vec<Domain>, Link), SuperviseError> {
    let shared = Shared::new(domains.len())?;
    let recipes: Vec<Recipe> = domains
        .iter()
        .map(|d| Recipe { id: d.id, spec: d.spec.clone(), profile: d.kernel().profile().clone(), location: d.kernel().location().clone() })
        .collect();
    let (loop_end, supervisor_end) = socket_pair()?;
    let loop_pid = std::process::id();
    // SAFETY: the process has one thread (the caller's contract), so the child may go on
    // running ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(SuperviseError::Sys { call: "fork", source: std::io::Error::last_os_error() }),
        0 => {
            drop(loop_end);
            // The inherited QMP connections and mappings are the loop's: closing this copy lets
            // QEMU see the loop's connection close when the loop dies.
            drop(domains);
            let code = supervise(supervisor_end, &shared, &recipes, &journal, loop_pid, stall_limit(period));
            std::process::exit(code)
        }
        supervisor => {
            drop(supervisor_end);
            for (i, d) in domains.iter_mut().enumerate() {
                d.publish_holds_in(shared.hold(i));
            }
            Ok((domains, Link { socket: loop_end, supervisor, shared }))
        }
    }
}

fn socket_pair() -> Result<(UnixStream, UnixStream), SuperviseError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair returns.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(SuperviseError::Sys { call: "socketpair", source: std::io::Error::last_os_error() });
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let [a, b] = fds.map(|fd| UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    Ok((a, b))
}

/// The supervisor's life: watch, and when the loop is gone give back what it held. Returns the
/// exit code.
fn supervise(mut socket: UnixStream, shared: &Shared, recipes: &[Recipe], journal: &std::path::Path, loop_pid: u32, stall: Duration) -> i32 {
    // SAFETY: plain calls on this process; SIG_IGN is a valid disposition for these signals.
    unsafe {
        libc::setsid();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let why = watch(&mut socket, shared, loop_pid, stall);
    match recover(shared, recipes, journal, loop_pid, &why) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("xsched supervisor: {e:#}");
            1
        }
    }
}

/// Waits until the loop is gone (killing it if it stalls); says how it went.
fn watch(socket: &mut UnixStream, shared: &Shared, loop_pid: u32, stall: Duration) -> String {
    let heartbeat = shared.heartbeat();
    let mut last = (heartbeat.load(Ordering::Relaxed), Instant::now());
    let mut killed = None;
    loop {
        let mut poll = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = i32::try_from(WATCH_INTERVAL.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid `pollfd` for a socket this process owns.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
        // SAFETY: no arguments, no memory.
        let orphaned = unsafe { libc::getppid() }.unsigned_abs() != loop_pid;
        if ready > 0 {
            let mut byte = [0u8; 1];
            // The loop never writes: anything readable is its end-of-file (or an error).
            if matches!(socket.read(&mut byte), Ok(0) | Err(_)) {
                break;
            }
        } else if orphaned {
            break;
        }
        let beat = heartbeat.load(Ordering::Relaxed);
        let limit = if beat == 0 { stall * FIRST_BEAT_GRACE } else { stall };
        if beat != last.0 {
            last = (beat, Instant::now());
        } else if killed.is_none() && beat != LOOP_ENDED && last.1.elapsed() >= limit {
            // SAFETY: a signal to one pid; at worst ESRCH if it just died.
            unsafe { libc::kill(libc::pid_t::try_from(loop_pid).unwrap_or(libc::pid_t::MAX), libc::SIGKILL) };
            killed = Some(last.1.elapsed());
        }
    }
    match killed {
        Some(after) => format!("stalled (no period completed for {:.1} s: a policy that does not return?) and was killed", after.as_secs_f64()),
        None => "ended".into(),
    }
}

/// Gives back what the loop left: completes and undoes its pauses, releases its parks.
fn recover(shared: &Shared, recipes: &[Recipe], journal_path: &std::path::Path, loop_pid: u32, why: &str) -> anyhow::Result<()> {
    let journal = Journal::open(journal_path)?;
    let paused: Vec<bool> = (0..recipes.len()).map(|i| shared.hold(i).paused.load(Ordering::SeqCst)).collect();
    let parked = journal.parked().filter(|r| recipes.iter().any(|d| d.spec.name == r.domain_name())).count();
    if parked == 0 && !paused.contains(&true) {
        return Ok(());
    }
    eprintln!("xsched supervisor: the scheduling loop (pid {loop_pid}) {why} with {parked} task(s) still parked: releasing them");
    let started = Instant::now();
    let mut domains = Vec::with_capacity(recipes.len());
    for (i, recipe) in recipes.iter().enumerate() {
        let mut domain = reopen(recipe)?;
        if paused[i] && domain.finish_abandoned(shared.hold(i))? {
            eprintln!("xsched supervisor: domain {} resumed (the loop held it paused)", domain.name);
        }
        domains.push(domain);
    }
    let mut holdings = Holdings::new(domains, journal)?;
    holdings.adopt_leftovers();
    let mut stats = RunStats::default();
    holdings.release_all(&mut stats, || ())?;
    eprintln!("xsched supervisor: released {parked} task(s) in {} ms", started.elapsed().as_millis());
    Ok(())
}

/// Opens a domain again, waiting for its monitor to let go of the dead loop's connection.
fn reopen(recipe: &Recipe) -> anyhow::Result<Domain> {
    let started = Instant::now();
    loop {
        match Domain::reopen(recipe.id, &recipe.spec, recipe.profile.clone(), recipe.location.clone()) {
            Ok(domain) => return Ok(domain),
            Err(e) if started.elapsed() < REOPEN_PATIENCE => {
                log::debug!("domain {} not reopened yet: {e}", recipe.spec.name);
                std::thread::sleep(WATCH_INTERVAL);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_aligned_apart_and_shared_with_a_forked_child() {
        let shared = Shared::new(3).expect("map");
        let addresses: Vec<usize> = (0..3).map(|i| std::ptr::from_ref(shared.hold(i)) as usize).collect();
        assert!(addresses.iter().all(|a| a % std::mem::align_of::<Hold>() == 0));
        assert!(addresses.windows(2).all(|w| w[1] - w[0] == std::mem::size_of::<Hold>()));
        assert!(addresses[0] >= shared.heartbeat() as *const AtomicU64 as usize + std::mem::size_of::<AtomicU64>());
        assert!((0..3).all(|i| !shared.hold(i).paused.load(Ordering::SeqCst) && shared.hold(i).redo.pending().is_none()), "zeroed holds hold nothing");
        // SAFETY: the child only stores to atomics and leaves with `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                shared.hold(2).paused.store(true, Ordering::SeqCst);
                shared.heartbeat().store(7, Ordering::SeqCst);
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            }
        }
        assert!(shared.hold(2).paused.load(Ordering::SeqCst) && !shared.hold(1).paused.load(Ordering::SeqCst));
        assert_eq!(shared.heartbeat().load(Ordering::SeqCst), 7);
    }

    #[test]
    fn the_stall_limit_is_twenty_periods_and_at_least_two_seconds() {
        assert_eq!(stall_limit(Duration::from_millis(10)), Duration::from_secs(2));
        assert_eq!(stall_limit(Duration::from_millis(200)), Duration::from_secs(4));
    }
}
