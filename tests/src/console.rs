//! Following a guest's serial console (a file QEMU appends to) and sorting its lines.
//!
//! Besides the view rounds (see [`crate::view`]), the guest's scripts print these markers:
//!
//! - `XSCHED-LAB READY <guest> <uptime>`: all workloads run and the control channel is open;
//! - `XSCHED-LAB ERROR <message>`: a setup step in the guest failed;
//! - `XSW <name> <pid> <cgroup or ->`: one workload process started.
//!
//! Kernel lines that mean the guest is hurt are collected as problems ([`PROBLEM_PATTERNS`]).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::view::{ProcView, ViewParser};
use crate::LabError;

/// Substrings that mark a console line as a sign of a broken guest.
pub const PROBLEM_PATTERNS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "list_add corruption",
    "list_del corruption",
    "general protection fault",
    "Kernel panic",
    "detected stall",
    "XSCHED-LAB ERROR",
];

/// The ready marker's prefix.
const READY: &str = "XSCHED-LAB READY ";
/// The error marker's prefix.
const ERROR: &str = "XSCHED-LAB ERROR";
/// The workload marker's prefix.
const WORKLOAD: &str = "XSW ";
/// How many complete views are kept.
const VIEW_HISTORY: usize = 32;
/// How many plain lines are kept for error messages.
const TAIL_LINES: usize = 60;

/// One started workload process, from an `XSW` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedWorkload {
    /// The workload's name (the process comm).
    pub name: String,
    /// The process id in the guest.
    pub pid: u32,
    /// The cgroup it was started in, `None` for the root.
    pub cgroup: Option<String>,
}

/// What has been read from one console so far.
#[derive(Debug)]
pub struct ConsoleState {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    parser: ViewParser,
    /// The guest's uptime at its ready line, once seen.
    pub ready: Option<Duration>,
    /// `XSCHED-LAB ERROR` messages.
    pub errors: Vec<String>,
    /// Problem lines (see [`PROBLEM_PATTERNS`]), in order.
    pub problems: Vec<String>,
    /// Started workload processes, in order.
    pub workloads: Vec<StartedWorkload>,
    /// The most recent complete views, oldest first.
    pub views: VecDeque<ProcView>,
    /// The last plain (non-view) lines.
    pub tail: VecDeque<String>,
}

impl ConsoleState {
    /// State for the console file at `path` (which need not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            parser: ViewParser::default(),
            ready: None,
            errors: Vec::new(),
            problems: Vec::new(),
            workloads: Vec::new(),
            views: VecDeque::new(),
            tail: VecDeque::new(),
        }
    }

    /// Reads whatever the guest printed since the last poll.
    pub fn poll(&mut self) -> Result<(), LabError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LabError::io("open console", &self.path, e)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| LabError::io("seek console", &self.path, e))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh).map_err(|e| LabError::io("read console", &self.path, e))?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            self.line(line.strip_suffix('\r').unwrap_or(line));
        }
        Ok(())
    }

    /// The highest view round whose beginning has been printed.
    pub fn last_begun_round(&self) -> u64 {
        self.parser.last_begun
    }

    /// The last plain console lines, joined, for error messages.
    pub fn tail_text(&self) -> String {
        let mut text: String = self.tail.iter().map(|l| format!("{l}\n")).collect();
        if !self.partial.is_empty() {
            text.push_str(&String::from_utf8_lossy(&self.partial));
        }
        text
    }

    /// The pids of each workload, by name.
    pub fn workload_pids(&self) -> BTreeMap<String, Vec<u32>> {
        let mut map: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for w in &self.workloads {
            map.entry(w.name.clone()).or_default().push(w.pid);
        }
        map
    }

    fn line(&mut self, line: &str) {
        if PROBLEM_PATTERNS.iter().any(|p| line.contains(p)) {
            self.problems.push(line.to_owned());
        }
        if let Some(view) = self.parser.feed(line) {
            if self.views.len() == VIEW_HISTORY {
                self.views.pop_front();
            }
            self.views.push_back(view);
            return;
        }
        if line.starts_with(crate::view::VIEW_PREFIX) {
            return;
        }
        if let Some(rest) = line.strip_prefix(READY) {
            let uptime = rest.split(' ').nth(1).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0);
            self.ready = Some(Duration::from_secs_f64(uptime.max(0.0)));
        } else if let Some(rest) = line.strip_prefix(ERROR) {
            self.errors.push(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix(WORKLOAD) {
            let mut words = rest.split(' ');
            if let (Some(name), Some(Ok(pid)), Some(group)) =
                (words.next(), words.next().map(str::parse::<u32>), words.next())
            {
                let cgroup = (group != "-").then(|| group.to_owned());
                self.workloads.push(StartedWorkload { name: name.to_owned(), pid, cgroup });
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_markers_problems_and_views() -> Result<(), LabError> {
        let dir = std::env::temp_dir().join(format!("xsched-lab-console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("mkdir", &dir, e))?;
        let path = dir.join("console.log");
        let mut state = ConsoleState::new(&path);
        state.poll()?; // no file yet
        let write = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(text.as_bytes())
        };
        write("[ 1.0] boot\r\nXSW db 96 -\r\nXSW bk 97 g1\r\nXSV BEGIN 1 3.24\r\nXSV P 1 2 3 9")
            .map_err(|e| LabError::io("write", &path, e))?;
        state.poll()?;
        assert_eq!(state.workloads.len(), 2);
        assert_eq!(state.workloads[1], StartedWorkload { name: "bk".into(), pid: 97, cgroup: Some("g1".into()) });
        assert!(state.views.is_empty());
        write("6 (db) R 1 93 93 0 -1 4194304 66 0 0 0 32 7 0 0 20 0 1 0 310 2314240 1 1 4 5 1 0 0 0 0 6 65536 0 0 0 17 0 0 0\r\n")
            .map_err(|e| LabError::io("write", &path, e))?;
        write("[ 3.3] WARNING: CPU: 1 PID: 5\r\nXSCHED-LAB READY u1 3.34\r\nXSV END 1\r\n")
            .map_err(|e| LabError::io("write", &path, e))?;
        state.poll()?;
        assert_eq!(state.ready, Some(Duration::from_millis(3340)));
        assert_eq!(state.problems, ["[ 3.3] WARNING: CPU: 1 PID: 5"]);
        assert_eq!(state.views.len(), 1);
        assert_eq!(state.views[0].get(96).map(|p| p.utime), Some(32));
        assert_eq!(state.workload_pids().get("db"), Some(&vec![96]));
        assert!(state.tail_text().contains("boot"));
        std::fs::remove_dir_all(&dir).map_err(|e| LabError::io("rmdir", &dir, e))?;
        Ok(())
    }
}
