//! Holding a domain paused for a stretch of work, and letting it go on every way out.
//!
//! [`Paused`] takes the pause and gives it back when it ends: explicitly through
//! [`Paused::end`], which reports a failed resume, or when dropped on an error's or a panic's way
//! out. While it lives a stop signal is deferred ([`crate::interrupt::Critical`]), so Ctrl-C
//! cannot end the process with the guest stopped. A pause someone else holds
//! ([`Pause::HeldByOthers`]) is never undone.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::interrupt::Critical;

use super::{GuestMemory, MemoryError, Pause};

/// Something that owns a domain's memory and so can pause it.
pub trait Pausable {
    /// The domain's memory.
    fn guest_memory(&mut self) -> &mut dyn GuestMemory;
}

impl Pausable for dyn GuestMemory + '_ {
    fn guest_memory(&mut self) -> &mut dyn GuestMemory {
        self
    }
}

/// A flag this process sets while it may hold a pause of one domain, where a supervising
/// process can see it (shared memory): if the holder dies with the flag set, the supervisor
/// knows the pause is the dead holder's to undo, not an operator's.
pub type PauseMark = &'static AtomicBool;

/// `target`'s domain, paused until this ends.
pub struct Paused<'a, T: Pausable + ?Sized> {
    target: &'a mut T,
    pause: Pause,
    mark: Option<PauseMark>,
    ended: bool,
    _critical: Critical,
}

impl<'a, T: Pausable + ?Sized> Paused<'a, T> {
    /// Pauses `target`'s domain, noting it in `mark` first.
    ///
    /// When the pause itself fails the mark stays set: whether the domain stopped is unknown,
    /// and only the holder's supervisor, after the holder ended, can settle it.
    pub fn take(target: &'a mut T, mark: Option<PauseMark>) -> Result<Self, MemoryError> {
        let critical = Critical::enter();
        if let Some(mark) = mark {
            mark.store(true, Ordering::SeqCst);
        }
        let pause = target.guest_memory().pause()?;
        Ok(Self { target, pause, mark, ended: false, _critical: critical })
    }

    /// Who holds the domain still.
    pub fn pause(&self) -> Pause {
        self.pause
    }

    /// Lets the domain run again (if this pause stopped it) and reports whether that worked.
    pub fn end(mut self) -> Result<(), MemoryError> {
        self.ended = true;
        self.give_back()
    }

    fn give_back(&mut self) -> Result<(), MemoryError> {
        self.target.guest_memory().resume()?;
        if let Some(mark) = self.mark {
            mark.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl<T: Pausable + ?Sized> Deref for Paused<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.target
    }
}

impl<T: Pausable + ?Sized> DerefMut for Paused<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.target
    }
}

impl<T: Pausable + ?Sized> Drop for Paused<'_, T> {
    fn drop(&mut self) {
        if !self.ended {
            if let Err(e) = self.give_back() {
                log::error!("{}: could not be resumed: {e}", self.target.guest_memory().describe());
            }
        }
    }
}
