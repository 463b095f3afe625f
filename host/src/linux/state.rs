//! Task states: the kernel's state bits and the one-letter codes `/proc/PID/stat` shows.

use crate::profile::Profile;

use super::LinuxError;

/// The task-state bits of one kernel build (they moved between versions), from its profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStates {
    /// `TASK_INTERRUPTIBLE`.
    pub interruptible: u32,
    /// `TASK_UNINTERRUPTIBLE`.
    pub uninterruptible: u32,
    /// `TASK_NOLOAD`.
    pub noload: u32,
    /// The state xsched gives the tasks it parks (see `actuate::park`).
    pub xsched_parked: u32,
    /// The reported bits in `/proc` order (R is the absence of all): S, D, T, t, X, Z, P.
    report: [u32; 7],
}

/// The letters of `task_state_array` in fs/proc/array.c, by `fls()` of the reported state.
const LETTERS: [char; 9] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];

impl TaskStates {
    /// Reads the state bits from a profile.
    pub fn from_profile(p: &Profile) -> Result<Self, LinuxError> {
        let c = |name: &str| -> Result<u32, LinuxError> {
            let value = p.constant(name)?;
            u32::try_from(value).map_err(|_| LinuxError::Inconsistent { release: p.release.clone(), what: format!("{name} = {value:#x} is not a 32-bit state bit") })
        };
        Ok(Self {
            interruptible: c("TASK_INTERRUPTIBLE")?,
            uninterruptible: c("TASK_UNINTERRUPTIBLE")?,
            noload: c("TASK_NOLOAD")?,
            xsched_parked: c("TASK_PARKED")? | c("TASK_WAKEKILL")?,
            report: [
                c("TASK_INTERRUPTIBLE")?,
                c("TASK_UNINTERRUPTIBLE")?,
                c("__TASK_STOPPED")?,
                c("__TASK_TRACED")?,
                c("EXIT_DEAD")?,
                c("EXIT_ZOMBIE")?,
                c("TASK_PARKED")?,
            ],
        })
    }

    /// The letter `/proc/PID/stat` shows for a task (the kernel's `__task_state_index`): the
    /// highest reported bit of `state | exit_state`, and `I` for `TASK_UNINTERRUPTIBLE |
    /// TASK_NOLOAD` (an idle kernel thread, or a task xsched parked).
    pub fn letter(&self, state: u32, exit_state: u32) -> char {
        let idle = self.uninterruptible | self.noload;
        if state & idle == idle {
            return 'I';
        }
        let reported = (state | exit_state) & self.report.iter().fold(0, |acc, bit| acc | bit);
        // Index of the highest reported bit, in /proc order; none set means running.
        self.report
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &bit)| reported & bit != 0)
            .map_or('R', |(i, _)| LETTERS[i + 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.1's state bits (include/linux/sched.h).
    const V6_1: TaskStates = TaskStates { interruptible: 1, uninterruptible: 2, noload: 0x400, xsched_parked: 0x140, report: [1, 2, 4, 8, 0x10, 0x20, 0x40] };

    #[test]
    fn letters_follow_proc() {
        assert_eq!(V6_1.letter(0, 0), 'R');
        assert_eq!(V6_1.letter(1, 0), 'S');
        assert_eq!(V6_1.letter(2, 0), 'D');
        assert_eq!(V6_1.letter(0x100 | 4, 0), 'T'); // TASK_STOPPED = WAKEKILL | __TASK_STOPPED
        assert_eq!(V6_1.letter(0x100 | 8, 0), 't');
        assert_eq!(V6_1.letter(0x80, 0x20), 'Z');
        assert_eq!(V6_1.letter(0x80, 0x10), 'X');
        assert_eq!(V6_1.letter(0x40, 0), 'P');
        assert_eq!(V6_1.letter(0x402, 0), 'I');
        assert_eq!(V6_1.letter(0x200, 0), 'R'); // TASK_WAKING is not reported
    }
}
