//! Signals that would end xsched while it holds something of a guest's.
//!
//! xsched pauses guests and parks their tasks. The default action of SIGINT, SIGTERM, SIGQUIT or
//! SIGHUP would end the process at any instruction, a guest left paused or a task parked.
//! [`install`] replaces that action with one that asks what the process holds:
//!
//! - outside every [`Critical`] section nothing needs undoing, and the signal's default action
//!   runs at once (Ctrl-C during a RAM scan or between `ps --watch` rounds ends the process);
//! - inside one (a pause held, the scheduling loop running) the signal is only recorded. The
//!   section finishes, undoes what it holds, and when the outermost one ends the recorded signal's
//!   default action runs then — unless the section's owner took the request as its own
//!   ([`take_request`]), as the loop does to release its parks and return.
//!
//! The handler touches two atomics and, outside a section, restores and re-raises the signal:
//! nothing else, so it is async-signal-safe.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// How many [`Critical`] sections are open.
static DEPTH: AtomicUsize = AtomicUsize::new(0);
/// The last stop signal received while a section was open, or 0.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// The signals that stop xsched: terminal interrupt and quit, termination, and hang-up unless
/// the caller gives SIGHUP another meaning (the loop reloads its policy on it).
pub fn stop_signals(hangup_stops: bool) -> Vec<i32> {
    let mut signals = vec![libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];
    if hangup_stops {
        signals.push(libc::SIGHUP);
    }
    signals
}

/// Installs the handler for `signals` (once per process, before the first pause).
pub fn install(signals: &[i32]) -> std::io::Result<()> {
    for &signal in signals {
        let action = move || {
            PENDING.store(signal, Ordering::SeqCst);
            if DEPTH.load(Ordering::SeqCst) == 0 {
                // Nothing to undo: behave as if no handler were installed.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        };
        // SAFETY: the action only uses atomics and `emulate_default_handler`, which signal-hook
        // documents as callable from a signal handler.
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    Ok(())
}

/// Whether a stop signal arrived and is not yet taken.
pub fn requested() -> bool {
    PENDING.load(Ordering::SeqCst) != 0
}

/// Takes the pending stop request, if any, as the caller's to carry out (the loop releases its
/// parks and returns normally); returns the signal.
pub fn take_request() -> Option<i32> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// A stretch of work that must not be cut short by a signal: while one lives, a stop signal is
/// only recorded (see the module docs).
#[must_use = "the section ends when this is dropped"]
#[derive(Debug)]
pub struct Critical(());

impl Critical {
    /// Opens a section.
    pub fn enter() -> Self {
        DEPTH.fetch_add(1, Ordering::SeqCst);
        Self(())
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        if DEPTH.fetch_sub(1, Ordering::SeqCst) == 1 {
            let signal = PENDING.load(Ordering::SeqCst);
            if signal != 0 {
                log::info!("ending on signal {signal}, received while a guest was held");
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        }
    }
}
