//! Errors of reading a guest kernel.

use crate::arch::x86_64::TranslateError;
use crate::memory::MemoryError;
use crate::profile::ProfileError;

/// Why a guest kernel could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// No banner of a known profile is in guest memory.
    #[error("{0}")]
    NoMatchingProfile(String),
    /// The guest contradicts its profile: something found does not check out.
    #[error("guest kernel {release}: {what}")]
    Inconsistent {
        /// The kernel release.
        release: String,
        /// What does not check out.
        what: String,
    },
    /// A walk of a guest list or tree met something a valid kernel cannot contain.
    #[error("{0}")]
    Walk(String),
    /// The profile lacks something.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Guest memory could not be read.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A kernel-virtual address did not translate.
    #[error(transparent)]
    Translate(#[from] TranslateError),
}
