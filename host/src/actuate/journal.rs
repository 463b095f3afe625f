//! The park journal: every park is recorded durably before the write that parks, so that a
//! crashed or killed xsched never strands a task.
//!
//! The journal is a JSON-lines file of [`Entry`]s. A `park` line is written (and synced) before
//! the guest is touched; a `release` line after the task is unparked or found gone. The tasks
//! still parked are the parks without a later release.
//!
//! **Writing.** Each batch of lines (the parks of one domain in one period, say) is one
//! `write(2)` on an `O_APPEND` descriptor, then `fdatasync`, so a crash can tear only the last
//! line; a write that fails or comes up short is cut off again at
//! once. One process writes a journal at a time: an open [`Journal`] holds an exclusive `flock`
//! on it (a second xsched gets [`JournalError::Busy`]; a child that inherits the descriptor
//! shares the lock). So when the last park is released the file is emptied (truncated to zero)
//! with no risk of losing a park another writer appended in between: there is none.
//!
//! **Reading.** [`Journal::open`] keeps every valid record and skips, with a warning naming the
//! file and line, every line that is not an entry: torn, garbage, NUL bytes, invalid UTF-8, JSON
//! of another shape, longer than [`MAX_LINE`] bytes. A last line without its newline (a crash
//! during an append) is cut off the file before anything is appended, so that the next line
//! cannot glue onto it; if it is a whole entry, it is written back whole.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::text::printable;

/// The longest line read back, bytes (an entry is about 150): longer lines are skipped.
pub const MAX_LINE: usize = 64 * 1024;

/// Damaged lines warned about one by one; beyond that only their number is told.
const WARN_LINES: usize = 10;

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be opened, read, written or synced.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The journal does not exist, and this command does not create one.
    #[error("journal {path}: no such file (only `run` and `park` create a journal; check --journal or $XSCHED_JOURNAL)")]
    Missing {
        /// The journal file.
        path: PathBuf,
    },
    /// Another process holds the journal.
    #[error("journal {path} is in use by another xsched{}", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Busy {
        /// The journal file.
        path: PathBuf,
        /// The process holding its lock, when `/proc/locks` tells.
        holder: Option<u32>,
    },
}

/// A parked task as the journal records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkRecord {
    /// The domain spec (`NAME=KIND:ARGS`) to reach the guest again after a crash.
    pub domain: String,
    /// The task's pid.
    pub pid: i32,
    /// The task's start time (with the pid, its identity).
    pub start_time: u64,
    /// Its `task_struct` address.
    pub addr: u64,
    /// Its `__state` before the park.
    pub saved_state: u32,
}

impl ParkRecord {
    /// The domain's name (the part of the spec before `=`).
    pub fn domain_name(&self) -> &str {
        self.domain.split_once('=').map_or(&self.domain, |(name, _)| name)
    }

    fn key(&self) -> (String, i32, u64) {
        (self.domain_name().to_string(), self.pid, self.start_time)
    }
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Entry {
    /// A task is about to be parked.
    Park(ParkRecord),
    /// A parked task was unparked, or is gone (exited, pid reused, guest rebooted).
    Release {
        /// The domain's name.
        domain: String,
        /// The task's pid.
        pid: i32,
        /// The task's start time.
        start_time: u64,
        /// What happened.
        reason: ReleaseReason,
    },
}

/// Why a parked task left the journal; written as the text each variant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// xsched unparked it.
    #[serde(rename = "unparked")]
    Unparked,
    /// It was no longer parked when xsched came to unpark it (SIGKILL woke it, or someone else
    /// changed its state).
    #[serde(rename = "no longer parked")]
    NoLongerParked,
    /// It exited, its pid was reused, or the guest rebooted.
    #[serde(rename = "gone")]
    Gone,
    /// The park recorded before the write did not happen.
    #[serde(rename = "not parked")]
    NotParked,
    /// A reason this xsched does not know (written by another version): still a release.
    #[serde(other, rename = "other")]
    Other,
}

/// An open journal, locked against other writers while it lives.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    parked: BTreeMap<(String, i32, u64), ParkRecord>,
    /// The file's length: where the next line goes, and where a failed append is cut back to.
    len: u64,
    skipped: usize,
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its directory) if there is none, locks it
    /// and replays it. For the commands that park (`run`, `park`).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        Self::open_with(path, true)
    }

    /// Opens the existing journal at `path`, locks it and replays it; a missing journal is
    /// [`JournalError::Missing`] (a mistyped path must not read as "nothing is parked").
    pub fn open_existing(path: &Path) -> Result<Self, JournalError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        let file = match crate::files::open_regular(&mut options, path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                if let Some(dir) = dir {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let file = crate::files::open_regular(options.create(true), path).map_err(io)?;
                // The new name must survive a crash as surely as the parks written into it.
                File::open(dir.unwrap_or(Path::new("."))).and_then(|d| d.sync_all()).map_err(io)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(JournalError::Missing { path: path.to_path_buf() }),
            Err(e) => return Err(io(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(JournalError::Busy { path: path.to_path_buf(), holder: lock_holder(&file) }),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let replay = Replay::read(&file, path).map_err(io)?;
        let mut journal = Self { path: path.to_path_buf(), file, parked: replay.parked, len: replay.complete, skipped: replay.skipped };
        if replay.complete != replay.read {
            journal.cut_back()?;
            if let Some(entry) = replay.unterminated {
                journal.append(std::slice::from_ref(&entry))?;
            }
        }
        Ok(journal)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many damaged lines opening skipped (each was warned about).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The tasks the journal says are parked.
    pub fn parked(&self) -> impl Iterator<Item = &ParkRecord> {
        self.parked.values()
    }

    /// Whether the journal holds a park of this task.
    pub fn is_parked(&self, domain_name: &str, pid: i32, start_time: u64) -> bool {
        self.parked.contains_key(&(domain_name.to_string(), pid, start_time))
    }

    /// Records (durably) that `record`'s task is about to be parked.
    pub fn record_park(&mut self, record: ParkRecord) -> Result<(), JournalError> {
        self.record_parks(std::slice::from_ref(&record))
    }

    /// Records (durably, with one write and one sync) that these tasks are about to be parked.
    pub fn record_parks(&mut self, records: &[ParkRecord]) -> Result<(), JournalError> {
        let entries: Vec<Entry> = records.iter().cloned().map(Entry::Park).collect();
        self.append(&entries)?;
        for record in records {
            self.parked.insert(record.key(), record.clone());
        }
        Ok(())
    }

    /// Records (durably) that a parked task was released, and empties the file when no park is
    /// left.
    pub fn record_release(&mut self, record: &ParkRecord, reason: ReleaseReason) -> Result<(), JournalError> {
        self.record_releases(&[(record, reason)])
    }

    /// Records (durably, with one write and one sync) that these parked tasks were released,
    /// each for its reason, and empties the file when no park is left.
    pub fn record_releases(&mut self, releases: &[(&ParkRecord, ReleaseReason)]) -> Result<(), JournalError> {
        let entries: Vec<Entry> = releases
            .iter()
            .map(|(record, reason)| Entry::Release {
                domain: record.domain_name().to_string(),
                pid: record.pid,
                start_time: record.start_time,
                reason: *reason,
            })
            .collect();
        self.append(&entries)?;
        for (record, _) in releases {
            self.parked.remove(&record.key());
        }
        if self.parked.is_empty() {
            self.len = 0;
            self.cut_back()?;
        }
        Ok(())
    }

    /// Appends `entries`, one line each, with one `write(2)`, then syncs them: a crash can tear
    /// only the last line. A failed or short write is cut off again, so the file ends with a
    /// whole line whatever happens.
    fn append(&mut self, entries: &[Entry]) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        let mut lines = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut lines, entry).map_err(|e| io(io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let written = loop {
            match self.file.write(&lines) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match written {
            Ok(n) if n == lines.len() => {}
            outcome => {
                let error = outcome.err().unwrap_or_else(|| io::Error::new(io::ErrorKind::WriteZero, "short write (is the disk full?)"));
                // Best effort: the lines' error is the one to report.
                if let Err(e) = self.cut_back() {
                    log::error!("{e}");
                }
                return Err(io(error));
            }
        }
        self.file.sync_data().map_err(io)?;
        self.len += lines.len() as u64;
        Ok(())
    }

    /// Truncates the file to `self.len` (the end of its last whole line) and syncs it.
    fn cut_back(&self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        self.file.set_len(self.len).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// What reading a journal back found.
#[derive(Debug, Default)]
struct Replay {
    parked: BTreeMap<(String, i32, u64), ParkRecord>,
    /// Bytes read.
    read: u64,
    /// Where the last line ending in a newline ends.
    complete: u64,
    /// A valid entry on a last line without its newline.
    unterminated: Option<Entry>,
    skipped: usize,
}

impl Replay {
    fn read(file: &File, path: &Path) -> io::Result<Self> {
        let shown = printable(&path.display().to_string()).into_owned();
        let mut replay = Self::default();
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0usize;
        while let Some(raw) = read_line(&mut reader, &mut line)? {
            number += 1;
            replay.read += raw.len;
            if raw.terminated {
                replay.complete = replay.read;
            }
            if line.len() <= MAX_LINE && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = if line.len() > MAX_LINE {
                Err(format!("longer than {MAX_LINE} bytes"))
            } else {
                serde_json::from_slice::<Entry>(&line).map_err(|e| e.to_string())
            };
            match parsed {
                Ok(entry) => {
                    if !raw.terminated {
                        log::warn!("journal {shown}, line {number}: the last line lacks its newline; it is written again whole");
                        replay.unterminated = Some(entry.clone());
                    }
                    replay.apply(entry);
                }
                Err(reason) => {
                    replay.skipped += 1;
                    let what = if raw.terminated { "skipped" } else { "cut off (torn by a crash during an append?)" };
                    if replay.skipped <= WARN_LINES {
                        log::warn!("journal {shown}, line {number}: not a journal entry, {what}: {}", printable(&reason));
                    }
                }
            }
        }
        if replay.skipped > WARN_LINES {
            log::warn!("journal {shown}: {} more damaged lines skipped", replay.skipped - WARN_LINES);
        }
        Ok(replay)
    }

    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Park(record) => {
                self.parked.insert(record.key(), record);
            }
            Entry::Release { domain, pid, start_time, .. } => {
                self.parked.remove(&(domain, pid, start_time));
            }
        }
    }
}

/// How a line read by [`read_line`] ended.
struct RawLine {
    /// Its bytes in the file, newline included.
    len: u64,
    /// It ends with a newline (else it is the file's unterminated tail).
    terminated: bool,
}

/// Reads the next line into `line` (without its newline), keeping at most [`MAX_LINE`] + 1
/// bytes of it (so a longer one is recognisable and costs no more memory); `None` at the end.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<RawLine>> {
    line.clear();
    let mut len = 0u64;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((len > 0).then_some(RawLine { len, terminated: false }));
        }
        let (content, used, terminated) = match memchr::memchr(b'\n', chunk) {
            Some(end) => (&chunk[..end], end + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(line.len());
        line.extend_from_slice(&content[..content.len().min(room)]);
        len += used as u64;
        reader.consume(used);
        if terminated {
            return Ok(Some(RawLine { len, terminated: true }));
        }
    }
}

/// The process holding a `flock` on `file`, from `/proc/locks` (best effort: `None` when it
/// cannot tell).
fn lock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    // `/proc/locks` names a file as MAJOR:MINOR:INODE, the device numbers in hex
    // (fs/locks.c, lock_get_status).
    let id = format!("{:02x}:{:02x}:{}", libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 12345 fe:00:5513339 0 EOF"; waiters have "->" after the number.
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == id => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32) -> ParkRecord {
        ParkRecord { domain: "u1=qemu:/dev/shm/r,qmp=/q".into(), pid, start_time: 7, addr: 0xffff_8880_0000_1000, saved_state: 0 }
    }

    fn line(entry: &Entry) -> String {
        serde_json::to_string(entry).expect("json") + "\n"
    }

    fn park(pid: i32) -> String {
        line(&Entry::Park(record(pid)))
    }

    fn release(pid: i32) -> String {
        line(&Entry::Release { domain: "u1".into(), pid, start_time: 7, reason: ReleaseReason::Unparked })
    }

    fn pids(j: &Journal) -> Vec<i32> {
        j.parked().map(|r| r.pid).collect()
    }

    /// Every line of the file at `path` is a whole entry.
    fn assert_every_line_parses(path: &Path) {
        let bytes = std::fs::read(path).expect("read");
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "the file ends with a whole line");
        for l in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<Entry>(l).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(l)));
        }
    }

    #[test]
    fn parks_survive_reopening_until_released() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new/journal.jsonl");
        let mut j = Journal::open(&path).expect("open");
        j.record_park(record(10)).expect("park");
        j.record_park(record(11)).expect("park");
        j.record_release(&record(10), ReleaseReason::Unparked).expect("release");
        drop(j);
        let mut j = Journal::open_existing(&path).expect("reopen");
        assert_eq!(j.parked().cloned().collect::<Vec<_>>(), vec![record(11)]);
        assert!(j.is_parked("u1", 11, 7) && !j.is_parked("u1", 10, 7));
        assert_eq!(j.skipped(), 0);
        j.record_release(&record(11), ReleaseReason::Gone).expect("release");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 0, "an empty journal is truncated");
        j.record_park(record(12)).expect("park after emptying");
        drop(j);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), park(12), "appends start again at the beginning");
    }

    #[test]
    fn only_creating_opens_create() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("typo.jsonl");
        let err = Journal::open_existing(&path).expect_err("missing");
        assert!(matches!(err, JournalError::Missing { .. }) && err.to_string().contains("typo.jsonl"), "{err}");
        assert!(!path.exists(), "nothing was created");
    }

    #[test]
    fn damaged_lines_are_skipped_and_every_valid_record_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let huge = format!("{{\"op\":\"park\",\"domain\":\"{}\"}}\n", "x".repeat(MAX_LINE));
        let text = [
            park(1),
            "garbage\n".into(),
            park(2),
            "{\"op\":\"park\",\"pid\":3}\n".into(), // JSON, but no entry
            "[1,2,3]\n".into(),
            "\0\0\0\0\n".into(),
            "\n  \n".into(),
            huge,
            park(4),
            "{\"op\":\"park\",\"domain\":\"u1\"}\n".into(), // fields missing
            release(2),
            park(5),
        ]
        .concat();
        let mut bytes = text.into_bytes();
        let at = bytes.len() - 20; // invalid UTF-8 inside the last park
        bytes.splice(at..at, [0xff, 0xfe]);
        std::fs::write(&path, &bytes).expect("write");
        let j = Journal::open_existing(&path).expect("open");
        assert_eq!(pids(&j), [1, 4]);
        assert_eq!(j.skipped(), 7, "garbage, no entry, an array, NULs, too long, fields missing, invalid UTF-8");
        drop(j);
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "complete lines are left as they are");
    }

    #[test]
    fn a_torn_tail_is_cut_off_before_the_next_append() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let torn = &park(3)[..40];
        std::fs::write(&path, format!("{}{}{torn}", park(1), park(2))).expect("write");
        let mut j = Journal::open(&path).expect("open");
        assert_eq!((pids(&j), j.skipped()), (vec![1, 2], 1));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), park(1) + &park(2), "the tail is gone at once");
        j.record_park(record(4)).expect("park");
        drop(j);
        assert_every_line_parses(&path);
        let j = Journal::open(&path).expect("reopen");
        assert_eq!((pids(&j), j.skipped()), (vec![1, 2, 4], 0));
    }

    #[test]
    fn a_whole_entry_missing_only_its_newline_is_kept_and_written_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        std::fs::write(&path, format!("{}{}", park(1), park(2).trim_end())).expect("write");
        let mut j = Journal::open(&path).expect("open");
        assert_eq!((pids(&j), j.skipped()), (vec![1, 2], 0));
        j.record_release(&record(1), ReleaseReason::Unparked).expect("release");
        drop(j);
        assert_every_line_parses(&path);
        assert_eq!(pids(&Journal::open(&path).expect("reopen")), [2]);
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let held = Journal::open(&path).expect("first");
        let err = Journal::open(&path).expect_err("second");
        let JournalError::Busy { holder, .. } = &err else { panic!("{err}") };
        assert_eq!(*holder, Some(std::process::id()), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        drop(held);
        Journal::open_existing(&path).expect("free again");
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo").success());
        for err in [Journal::open(&path).expect_err("fifo"), Journal::open_existing(&path).expect_err("fifo")] {
            assert!(err.to_string().ends_with("fifo: not a regular file (it is a FIFO)"), "{err}");
        }
    }

    #[test]
    fn release_reasons_are_the_text_earlier_journals_hold() {
        for (reason, text) in [
            (ReleaseReason::Unparked, "unparked"),
            (ReleaseReason::NoLongerParked, "no longer parked"),
            (ReleaseReason::Gone, "gone"),
            (ReleaseReason::NotParked, "not parked"),
        ] {
            assert_eq!(serde_json::to_string(&reason).expect("json"), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ReleaseReason>(&format!("\"{text}\"")).expect("parse"), reason);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let unknown = r#"{"op":"release","domain":"u1","pid":10,"start_time":7,"reason":"killed"}"#;
        std::fs::write(&path, park(10) + unknown + "\n").expect("write");
        let j = Journal::open_existing(&path).expect("open");
        assert_eq!((pids(&j), j.skipped()), (vec![], 0), "a release for a reason this xsched does not know still releases");
    }
}
