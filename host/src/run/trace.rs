//! The loop's trace: one JSON line per period with every managed task's state and decision.
//!
//! `xsched run --trace FILE` writes it; `xsched timeline` draws it. A line looks like
//! `{"t":1.23,"period":123,"tasks":[{"domain":"u1","pid":42,"comm":"db","state":"R",
//! "queued":true,"running":true,"decision":"run","runtime_ns":123456}],"wall":1795000000.123}`,
//! where `t` is when the period began (its snapshot), in seconds since the loop started, and
//! `wall` the same moment in seconds since the Unix epoch (to line it up with other logs).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Plan, RunStats};
use crate::table::{TaskKey, TaskTable};

/// What the loop decided for a task in one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Admitted, and left running.
    Run,
    /// Parked in this period.
    Park,
    /// Unparked in this period.
    Unpark,
    /// Held parked from an earlier period.
    Parked,
    /// Ranked, but wanting no CPU (sleeping).
    Idle,
}

/// One managed task in one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceTask {
    /// The domain's name.
    pub domain: String,
    /// The guest's pid.
    pub pid: i32,
    /// The task's name.
    pub comm: String,
    /// Its state letter as read at the period's start (`R`, `S`, `P`, ...).
    pub state: String,
    /// On a runqueue (or running) at the period's start.
    pub queued: bool,
    /// On a CPU at the period's start.
    pub running: bool,
    /// The period's decision.
    pub decision: Decision,
    /// CPU time the guest kernel has accounted to it (`se.sum_exec_runtime`).
    pub runtime_ns: u64,
}

/// One period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceLine {
    /// When the period began, seconds since the loop started.
    pub t: f64,
    /// The period's number (1 = the first).
    pub period: u64,
    /// Every managed task.
    pub tasks: Vec<TraceTask>,
    /// When the period began, seconds since the Unix epoch.
    pub wall: f64,
}

impl TraceLine {
    /// The line for a period that began `at` after the loop started, at `wall` seconds since the
    /// Unix epoch.
    pub fn of_period(at: Duration, wall: f64, table: &TaskTable, plan: &Plan, stats: &RunStats) -> Self {
        let staying_parked = table.tasks.iter().filter(|t| t.parked && !plan.unpark.contains(&t.key)).map(|t| t.key);
        let decisions = plan
            .admitted
            .iter()
            .filter(|k| !plan.unpark.contains(k))
            .map(|k| (*k, Decision::Run))
            .chain(plan.park.iter().map(|k| (*k, Decision::Park)))
            .chain(plan.unpark.iter().map(|k| (*k, Decision::Unpark)))
            .chain(staying_parked.map(|k| (k, Decision::Parked)))
            .chain(plan.idle.iter().map(|k| (*k, Decision::Idle)));
        let tasks = decisions.filter_map(|(key, decision)| Self::task(table, key, decision)).collect();
        Self { t: at.as_secs_f64(), period: stats.periods, tasks, wall }
    }

    fn task(table: &TaskTable, key: TaskKey, decision: Decision) -> Option<TraceTask> {
        let t = table.tasks.iter().find(|t| t.key == key)?;
        let domain = table.domains.iter().find(|d| d.id == key.domain).map_or("?", |d| d.name.as_str());
        Some(TraceTask {
            domain: domain.to_owned(),
            pid: key.pid,
            comm: t.comm.clone(),
            state: t.state.to_string(),
            queued: t.queued,
            running: t.running,
            decision,
            runtime_ns: t.runtime_ns,
        })
    }

    /// Writes the line and its newline.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("trace {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A line is not a trace line.
    #[error("trace {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// The line number (1 = first).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads a whole trace file. A last line cut short (the loop was killed while writing it) is
/// dropped; any other bad line is an error naming the file and line.
pub fn read_trace(path: &Path) -> Result<Vec<TraceLine>, TraceError> {
    let shown = path.display().to_string();
    let file = crate::files::open_input(path).map_err(|source| TraceError::Io { path: shown.clone(), source })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| TraceError::Io { path: shown.clone(), source })?;
    let last = lines.len();
    let mut out = Vec::with_capacity(last);
    for (i, text) in lines.iter().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceLine>(text) {
            Ok(line) => out.push(line),
            Err(e) if e.is_eof() && i + 1 == last => log::warn!("trace {shown}: the last line is cut short; ignored"),
            Err(e) => return Err(TraceError::Line { path: shown, line: i + 1, reason: e.to_string() }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    const LINE: &str = r#"{"t":0.5,"period":3,"tasks":[{"domain":"u1","pid":7,"comm":"db","state":"R","queued":true,"running":true,"decision":"run","runtime_ns":12}],"wall":1795000000.5}"#;

    #[test]
    fn lines_round_trip_and_a_cut_last_line_is_dropped() {
        let file = write(&format!("{LINE}\n{}", &LINE[..40]));
        let lines = read_trace(file.path()).expect("read");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].tasks[0].decision, Decision::Run);
        let mut again = Vec::new();
        lines[0].write_to(&mut again).expect("write");
        assert_eq!(String::from_utf8(again).expect("utf-8"), format!("{LINE}\n"));
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let file = write(&format!("{LINE}\n{{\"t\":\"soon\"}}\n{LINE}\n"));
        let err = read_trace(file.path()).expect_err("bad line").to_string();
        assert!(err.contains(&file.path().display().to_string()) && err.contains("line 2"), "{err}");
    }
}
