//! Surviving SIGBUS on xsched's own file mappings.
//!
//! Touching a page of a file mapping that lies past the end of the file raises SIGBUS, and SIGBUS
//! kills a process by default: a RAM or core file that someone truncates while xsched reads it
//! would end xsched with no message and nothing released. [`Guard::register`] records a mapping
//! in a fixed, lock-free registry and installs, once per process, a handler (`SA_SIGINFO`) that,
//! for a fault inside a registered mapping, maps an anonymous zero page over the faulting page
//! (`mmap(MAP_FIXED)`, a system call, so async-signal-safe), marks the mapping broken and returns:
//! the interrupted copy completes, reading zeros or writing to a page nobody else sees. The owner
//! asks [`Guard::faulted`] after each copy (one atomic load) and reports an error instead of data.
//!
//! A SIGBUS anywhere else goes where it went before: to the previous handler (Rust's runtime
//! installs one that tells a stack overflow apart) or, with the default disposition restored and
//! the signal raised again, to the death it would have been without this module.
//!
//! The registry is an array of slots, each a seqlock: a registration bumps the slot's sequence to
//! odd, writes the range, and bumps it to even; the handler only trusts a range read between two
//! equal even sequences. Slots are unregistered before their mapping is unmapped (the owner's
//! field order), so a registered range always names live memory of that owner.

use std::ffi::{c_int, c_void};
use std::io;
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many mappings may be registered at once (one per domain, and a few for tests).
pub const SLOTS: usize = 256;

/// Why a mapping could not be guarded.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `sigaction` refused the handler.
    #[error("cannot install the SIGBUS handler: {0}")]
    Install(#[source] io::Error),
    /// Every slot of the registry is taken.
    #[error("more than {SLOTS} files mapped at once")]
    Full,
}

/// One registered mapping.
struct Slot {
    /// Whether an owner holds the slot.
    claimed: AtomicBool,
    /// Even while the range is stable, odd while it changes; each registration adds two.
    seq: AtomicU64,
    /// First address of the mapping (0 when unregistered).
    start: AtomicUsize,
    /// One past its last address (0 when unregistered).
    end: AtomicUsize,
    /// The size and alignment of its pages: what one zero mapping replaces.
    granule: AtomicUsize,
    /// The `seq` of the registration whose mapping faulted; 0 for none.
    broken: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            granule: AtomicUsize::new(0),
            broken: AtomicU64::new(0),
        }
    }

    /// Writes the slot's range under its seqlock; returns the new (even) sequence.
    fn publish(&self, start: usize, end: usize, granule: usize) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.granule.store(granule, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release) + 1
    }

    /// The slot's range and its sequence, if stable and registered.
    fn read(&self) -> Option<(u64, usize, usize, usize)> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            return None;
        }
        let (start, end, granule) =
            (self.start.load(Ordering::Relaxed), self.end.load(Ordering::Relaxed), self.granule.load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq && start < end).then_some((seq, start, end, granule))
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// The SIGBUS disposition before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Whether the handler is installed (or the errno that refused it).
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// A registered mapping; unregisters it when dropped (drop it before unmapping).
#[derive(Debug)]
pub struct Guard {
    slot: &'static Slot,
    seq: u64,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("seq", &self.seq.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Guard {
    /// Registers the mapping `[start, start + len)`, whose pages are `granule` bytes (a power of
    /// two: the base page size, or the huge page size of a hugetlbfs file), installing the
    /// handler on first use.
    pub fn register(start: *const u8, len: usize, granule: usize) -> Result<Self, GuardError> {
        install()?;
        let slot = REGISTRY
            .iter()
            .find(|s| s.claimed.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok())
            .ok_or(GuardError::Full)?;
        let start = start as usize;
        let seq = slot.publish(start, start.saturating_add(len), granule.max(1));
        Ok(Self { slot, seq })
    }

    /// Whether any access to the mapping faulted since it was registered: the bytes copied since
    /// then may be zeros, and writes may have gone nowhere. The hot path: one atomic load.
    #[inline]
    pub fn faulted(&self) -> bool {
        // The handler runs on the faulting thread, in the middle of the caller's copy: keep the
        // compiler from moving the copy past this load.
        compiler_fence(Ordering::SeqCst);
        self.slot.broken.load(Ordering::Acquire) == self.seq
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.publish(0, 0, 0);
        self.slot.claimed.store(false, Ordering::Release);
    }
}

/// Installs the handler once per process.
fn install() -> Result<(), GuardError> {
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        // SAFETY: `action` and `previous` are valid for the calls; the handler is async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
            }
            // Until this is set the handler treats a foreign fault as the default would.
            let _ = PREVIOUS.set(previous);
        }
        Ok(())
    });
    installed.map_err(|errno| GuardError::Install(io::Error::from_raw_os_error(errno)))
}

/// The SIGBUS handler: recovers faults inside registered mappings, passes on the rest.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: errno is this thread's; it is restored so that the interrupted code sees its own.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t` (or none).
    let info_ref = unsafe { info.as_ref() };
    // Only a fault the kernel raised (si_code > 0) carries an address; a SIGBUS sent by a process
    // carries its pid in the same place.
    let address = info_ref.filter(|i| i.si_code > 0).map(|i| {
        // SAFETY: for a fault, the union's member is the address.
        unsafe { i.si_addr() as usize }
    });
    let recovered = address.is_some_and(recover);
    if !recovered {
        // SAFETY: called from the signal handler with the arguments it received.
        unsafe { chain(signal, info, context) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Maps a zero page over `address` if it lies in a registered mapping, and marks that mapping.
fn recover(address: usize) -> bool {
    for slot in &REGISTRY {
        let Some((seq, start, end, granule)) = slot.read() else { continue };
        if address < start || address >= end {
            continue;
        }
        let page = address & !(granule - 1);
        let from = page.max(start);
        let to = page.saturating_add(granule).min(end);
        // SAFETY: `[from, to)` lies inside a live mapping of the registration's owner (it is
        // unregistered before it is unmapped), which is in the middle of an access to it; the
        // page is replaced by private zeros, which that owner then refuses to report as data.
        let mapped = unsafe {
            libc::mmap(
                from as *mut c_void,
                to - from,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return false;
        }
        slot.broken.store(seq, Ordering::Release);
        return true;
    }
    false
}

/// Hands a SIGBUS that is not ours to the disposition before ours.
///
/// # Safety
/// Only from the signal handler, with the arguments it received.
unsafe fn chain(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    match PREVIOUS.get() {
        Some(previous) if previous.sa_sigaction == libc::SIG_IGN => {}
        Some(previous) if previous.sa_sigaction != libc::SIG_DFL => {
            // SAFETY: a handler installed with `sigaction` has the signature its SA_SIGINFO flag
            // says; it is called as the kernel would have called it.
            unsafe {
                if previous.sa_flags & libc::SA_SIGINFO != 0 {
                    let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                        std::mem::transmute(previous.sa_sigaction);
                    handler(signal, info, context);
                } else {
                    let handler: extern "C" fn(c_int) = std::mem::transmute(previous.sa_sigaction);
                    handler(signal);
                }
            }
        }
        _ => {
            // The default: die of the signal. Restore it and raise the signal again; it is blocked
            // while this handler runs and is delivered as soon as it returns.
            // SAFETY: `sigaction` and `raise` are async-signal-safe; the zeroed action is SIG_DFL.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
                libc::raise(libc::SIGBUS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_a_mark_never_outlives_its_registration() {
        let data = vec![0u8; 4096];
        let first = Guard::register(data.as_ptr(), data.len(), 4096).expect("register");
        let (slot, seq) = (first.slot, first.seq);
        // Mark it as the handler would.
        slot.broken.store(seq, Ordering::Release);
        assert!(first.faulted());
        drop(first);
        // (Another test may have claimed the slot since.)
        assert!(slot.read().is_none_or(|(now, ..)| now > seq), "an unregistered range matches no address");
        let guards: Vec<Guard> = (0..8).map(|_| Guard::register(data.as_ptr(), data.len(), 4096).expect("register")).collect();
        assert!(guards.iter().all(|g| !g.faulted()), "a new registration starts unbroken, whatever its slot held");
    }
}
