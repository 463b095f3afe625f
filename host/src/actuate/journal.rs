//! The park journal: every park is recorded durably before the write that parks, so that a
//! crashed or killed xsched never strands a task.
//!
//! The journal is a JSON-lines file of [`Entry`]s, appended and flushed to disk (`fsync`) one by
//! one. A `park` line is written (and synced) before the guest is touched; a `release` line after
//! the task is unparked or found gone. The tasks still parked are the parks without a later
//! release. When none is left the file is emptied.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be opened, read, written or synced.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a journal entry.
    #[error("journal {path}, line {line}: {reason}")]
    Syntax {
        /// The journal file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The parser's message.
        reason: String,
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
        /// What happened: "unparked", "gone", "killed", ….
        reason: String,
    },
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    parked: BTreeMap<(String, i32, u64), ParkRecord>,
}

impl Journal {
    /// Opens (creating it and its directory if needed) the journal at `path` and replays it.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let mut parked = BTreeMap::new();
        for (i, line) in BufReader::new(&file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line)
                .map_err(|e| JournalError::Syntax { path: path.to_path_buf(), line: i + 1, reason: e.to_string() })?;
            match entry {
                Entry::Park(record) => {
                    parked.insert(record.key(), record);
                }
                Entry::Release { domain, pid, start_time, .. } => {
                    parked.remove(&(domain, pid, start_time));
                }
            }
        }
        Ok(Self { path: path.to_path_buf(), file, parked })
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
        self.append(&Entry::Park(record.clone()))?;
        self.parked.insert(record.key(), record);
        Ok(())
    }

    /// Records (durably) that a parked task was released, and empties the file when no park is
    /// left.
    pub fn record_release(&mut self, record: &ParkRecord, reason: &str) -> Result<(), JournalError> {
        self.append(&Entry::Release {
            domain: record.domain_name().to_string(),
            pid: record.pid,
            start_time: record.start_time,
            reason: reason.to_string(),
        })?;
        self.parked.remove(&record.key());
        if self.parked.is_empty() {
            self.file.set_len(0).map_err(|source| JournalError::Io { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        let mut line = serde_json::to_string(entry).map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32) -> ParkRecord {
        ParkRecord { domain: "u1=qemu:/dev/shm/r,qmp=/q".into(), pid, start_time: 7, addr: 0xffff_8880_0000_1000, saved_state: 0 }
    }

    #[test]
    fn parks_survive_reopening_until_released() {
        let path = std::env::temp_dir().join(format!("xsched-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::open(&path).expect("open");
        j.record_park(record(10)).expect("park");
        j.record_park(record(11)).expect("park");
        j.record_release(&record(10), "unparked").expect("release");
        drop(j);
        let mut j = Journal::open(&path).expect("reopen");
        assert_eq!(j.parked().cloned().collect::<Vec<_>>(), vec![record(11)]);
        assert!(j.is_parked("u1", 11, 7) && !j.is_parked("u1", 10, 7));
        j.record_release(&record(11), "gone").expect("release");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 0, "an empty journal is truncated");
        std::fs::write(&path, "{\"op\":\"park\"}\n").expect("write");
        let err = Journal::open(&path).expect_err("bad line");
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_file(&path).expect("cleanup");
    }
}
