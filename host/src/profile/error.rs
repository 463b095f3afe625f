//! Errors of loading, validating and generating profiles.

use std::path::{Path, PathBuf};

/// What is wrong with a profile, or why one could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Wraps an error with the profile file it came from.
    #[error("{path}: {inner}")]
    InFile {
        /// The profile file.
        path: PathBuf,
        /// The error.
        inner: Box<ProfileError>,
    },
    /// The JSON does not parse as a profile.
    #[error("not a valid profile: {reason}")]
    Syntax {
        /// The parser's message, with line and column.
        reason: String,
    },
    /// The profile was written in another format version.
    #[error("profile format version {found}, this xsched reads version {expected}: regenerate it with `xsched profile gen`")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The profile is inconsistent.
    #[error("invalid profile: {reason}")]
    Invalid {
        /// What is inconsistent.
        reason: String,
    },
    /// A symbol xsched needs is missing.
    #[error("kernel {release}: symbol `{name}` is missing")]
    MissingSymbol {
        /// The kernel release.
        release: String,
        /// The symbol.
        name: String,
    },
    /// A struct xsched needs is missing.
    #[error("kernel {release}: struct `{name}` is missing")]
    MissingStruct {
        /// The kernel release.
        release: String,
        /// The struct.
        name: String,
    },
    /// A struct field xsched needs is missing.
    #[error("kernel {release}: field `{name}.{field}` is missing")]
    MissingField {
        /// The kernel release.
        release: String,
        /// The struct.
        name: String,
        /// The (dotted) field path.
        field: String,
    },
    /// A constant xsched needs is missing.
    #[error("kernel {release}: constant `{name}` is missing")]
    MissingConstant {
        /// The kernel release.
        release: String,
        /// The constant.
        name: String,
    },
    /// A profile file lacks what this xsched needs: written by an older xsched, or edited.
    #[error("{inner}: the profile lacks what this xsched needs; regenerate it with `xsched profile gen --vmlinux VMLINUX`")]
    Stale {
        /// What is missing.
        inner: Box<ProfileError>,
    },
    /// Profile generation failed: the input is not a usable vmlinux.
    #[error("{path}: {reason}")]
    Generate {
        /// The vmlinux file.
        path: PathBuf,
        /// What is wrong or missing.
        reason: String,
    },
}

impl ProfileError {
    /// Attaches the file name to an error that lacks one.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (Self::Io { .. } | Self::InFile { .. } | Self::Generate { .. }) => e,
            e => Self::InFile { path: path.to_path_buf(), inner: Box::new(e) },
        }
    }
}
