//! Opening the files an operator names (cores, RAM files, configs, journals, traces, profiles,
//! pictures), refusing anything that is not a regular file.
//!
//! A FIFO given as a core or a journal would block `open(2)` forever, waiting for a writer; a
//! device or a socket is never what was meant. [`open_regular`] opens with `O_NONBLOCK` (a FIFO
//! cannot block the open) and `O_NOCTTY` (a terminal named by mistake does not become ours),
//! then `fstat`s what it opened and refuses anything but a regular file. A QEMU RAM file in
//! `/dev/shm` or on hugetlbfs is a regular file. `O_NONBLOCK` is left set: on a regular file it
//! changes nothing (open(2): it "has no effect for regular files and block devices").
//!
//! `-` names standard input or output where a command reads a trace or writes a picture or a
//! profile ([`is_standard_stream`]).
//!
//! This module uses nothing else of xsched's, so every stage of the data path can use it.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was refused. It travels inside an [`io::Error`] (kind
/// [`InvalidInput`](io::ErrorKind::InvalidInput)), so that openers keep their `io::Error`
/// variants and the message reads like any other I/O error.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path names something other than a regular file.
    #[error("not a regular file (it is {kind})")]
    NotRegular {
        /// What it is: "a FIFO", "a directory", ….
        kind: &'static str,
    },
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Opens `path` with `options` (plus `O_NONBLOCK | O_NOCTTY`) and refuses it unless it is a
/// regular file. Symbolic links are followed, as by `open(2)`.
pub fn open_regular(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = match options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
        Ok(file) => file,
        // A FIFO opened for writing without a reader fails (ENXIO), a directory opened for
        // writing too (EISDIR): say what the path is rather than what the open met.
        Err(e) => return Err(std::fs::metadata(path).ok().and_then(|m| refusal(m.file_type())).map_or(e, io::Error::from)),
    };
    match refusal(file.metadata()?.file_type()) {
        Some(refused) => Err(refused.into()),
        None => Ok(file),
    }
}

/// Reads the regular file at `path` into a string.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_regular(OpenOptions::new().read(true), path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Creates (or truncates) the regular file at `path` for writing.
pub fn create(path: &Path) -> io::Result<File> {
    open_regular(OpenOptions::new().write(true).create(true).truncate(true), path)
}

/// Whether `path` is `-`: standard input or output rather than a file.
pub fn is_standard_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Writes `bytes` as the whole content of `path` (created or truncated), or to standard output
/// if `path` is `-`.
pub fn write_output(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if is_standard_stream(path) {
        let mut out = io::stdout().lock();
        return out.write_all(bytes).and_then(|()| out.flush());
    }
    create(path)?.write_all(bytes)
}

/// A reader of the regular file at `path`, or of standard input if `path` is `-`.
pub fn open_input(path: &Path) -> io::Result<Box<dyn Read>> {
    if is_standard_stream(path) {
        return Ok(Box::new(io::stdin()));
    }
    Ok(Box::new(open_regular(OpenOptions::new().read(true), path)?))
}

/// Refuses `path` if it exists and is not a regular file, for a path that another part opens
/// itself (a race with whoever replaces it meanwhile is possible; [`open_regular`] has none).
pub fn refuse_special(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => refusal(meta.file_type()).map_or(Ok(()), |refused| Err(refused.into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The refusal of a file of type `kind`, if it is not a regular file.
fn refusal(kind: FileType) -> Option<FileError> {
    let kind = if kind.is_file() {
        return None;
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Some(FileError::NotRegular { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(status.success());
        path
    }

    #[test]
    fn regular_files_open_and_everything_else_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("f");
        std::fs::write(&file, "text").expect("write");
        assert_eq!(read_to_string(&file).expect("regular"), "text");
        refuse_special(&file).expect("regular");
        refuse_special(&dir.path().join("missing")).expect("missing is not special");
        let fifo = fifo(dir.path());
        for (what, result) in [
            ("read", read_to_string(&fifo).map(drop)),
            ("write", create(&fifo).map(drop)),
            ("read-write", open_regular(OpenOptions::new().read(true).write(true), &fifo).map(drop)),
            ("stat", refuse_special(&fifo)),
        ] {
            let err = result.expect_err(what);
            assert_eq!(err.to_string(), "not a regular file (it is a FIFO)", "{what}");
        }
        assert_eq!(read_to_string(dir.path()).expect_err("dir").to_string(), "not a regular file (it is a directory)");
        assert_eq!(create(dir.path()).expect_err("dir").to_string(), "not a regular file (it is a directory)");
        assert_eq!(read_to_string(Path::new("/dev/null")).expect_err("dev").to_string(), "not a regular file (it is a character device)");
    }
}
