//! A redo log for one batch of kernel writes, kept where a supervising process can read it.
//!
//! An unpark is dozens of stores into the guest's runqueue, written while the guest is paused.
//! If the writer dies between the first and the last (SIGKILL, the OOM killer, a plugin that
//! crashes the process), the guest would resume with half an rbtree insert. So a writer with a
//! log records the whole batch before its first store ([`RedoLog::record`]) and clears it after
//! the last; whoever finds a batch still recorded after the writer died — with the guest still
//! paused — writes it again ([`RedoLog::pending`]): every store is of an absolute value computed
//! with the guest paused, so writing the batch twice is writing it once.
//!
//! The log lives in memory shared with the supervisor (`MAP_SHARED`), is all atomics (so a
//! zeroed mapping is an empty log), and has one writer; the reader reads it only after the writer
//! is gone.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::memory::Gva;

use super::LinuxError;

/// Bytes of batch a log holds; an unpark through eight levels of task groups writes about 2 KiB.
pub const REDO_CAPACITY: usize = 16 << 10;
/// Bytes of each write's header: address (8) and length (2).
const HEADER: usize = 10;

/// One batch of writes, recorded until it is complete.
#[repr(C)]
pub struct RedoLog {
    /// Bytes of the recorded batch; 0 when none is pending.
    len: AtomicU32,
    bytes: [AtomicU8; REDO_CAPACITY],
}

impl RedoLog {
    /// Records `writes` as pending, before the first of them is made.
    pub fn record(&self, writes: &[(Gva, Vec<u8>)]) -> Result<(), LinuxError> {
        let total: usize = writes.iter().map(|(_, data)| HEADER + data.len()).sum();
        if total > REDO_CAPACITY || writes.iter().any(|(_, data)| data.len() > usize::from(u16::MAX)) {
            return Err(LinuxError::BatchTooLarge { bytes: total, capacity: REDO_CAPACITY });
        }
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                self.bytes[at].store(b, Ordering::Relaxed);
                at += 1;
            }
        };
        for (va, data) in writes {
            // Fits: checked above.
            let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
            put(&va.raw().to_le_bytes());
            put(&len.to_le_bytes());
            put(data);
        }
        // Publishes the bytes with the length: a reader that sees the length sees them.
        self.len.store(u32::try_from(total).unwrap_or(u32::MAX), Ordering::Release);
        Ok(())
    }

    /// Marks the recorded batch complete.
    pub fn clear(&self) {
        self.len.store(0, Ordering::Release);
    }

    /// The batch recorded and not completed, if any.
    pub fn pending(&self) -> Option<Vec<(Gva, Vec<u8>)>> {
        let total = usize::try_from(self.len.load(Ordering::Acquire)).ok()?.min(REDO_CAPACITY);
        if total == 0 {
            return None;
        }
        let byte = |i: usize| self.bytes[i].load(Ordering::Relaxed);
        let mut writes = Vec::new();
        let mut at = 0;
        while at + HEADER <= total {
            let va = u64::from_le_bytes(std::array::from_fn(|i| byte(at + i)));
            let len = usize::from(u16::from_le_bytes([byte(at + 8), byte(at + 9)]));
            at += HEADER;
            if at + len > total {
                break;
            }
            writes.push((Gva(va), (at..at + len).map(byte).collect()));
            at += len;
        }
        Some(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log on the heap, as a zeroed shared mapping would hold it.
    fn empty_log() -> Box<RedoLog> {
        // SAFETY: `RedoLog` is atomics only, for which all-zero bytes are valid values.
        unsafe { Box::new_zeroed().assume_init() }
    }

    #[test]
    fn a_recorded_batch_reads_back_until_cleared() {
        let log = empty_log();
        assert!(log.pending().is_none(), "a zeroed log is empty");
        let batch = vec![(Gva(0xffff_8880_0000_1000), vec![1, 2, 3, 4, 5, 6, 7, 8]), (Gva(0xffff_8880_0000_2004), vec![9, 9, 9, 9])];
        log.record(&batch).expect("fits");
        assert_eq!(log.pending(), Some(batch));
        log.clear();
        assert!(log.pending().is_none());
    }

    #[test]
    fn a_batch_too_big_is_refused_and_leaves_the_log_empty() {
        let log = empty_log();
        let batch = vec![(Gva(0x1000), vec![0u8; REDO_CAPACITY])];
        assert!(log.record(&batch).is_err());
        assert!(log.pending().is_none());
    }
}
