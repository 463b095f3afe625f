//! Steering `steered` workloads from the host, and reading the guest's own CPU accounting.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::{Guest, LabError};

/// What a steered workload is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Spin (always runnable).
    Busy,
    /// Sleep until told to spin.
    Idle,
}

/// A reading of the guest's own accounting, taken in one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// The guest's uptime (`/proc/uptime`, 10 ms resolution).
    pub uptime: Duration,
    /// CPU time per pid (`/proc/PID/schedstat`, first field); pids that are gone are missing.
    pub run_ns: BTreeMap<u32, u64>,
}

impl Guest {
    /// Makes steered workloads (see [`crate::WorkloadKind::Steered`]) busy or idle, all in one
    /// guest command.
    pub fn steer(&self, settings: &[(&str, Steer)]) -> Result<(), LabError> {
        let mut command = String::from("/lab/steer");
        for (name, steer) in settings {
            let mode = match steer {
                Steer::Busy => "busy",
                Steer::Idle => "idle",
            };
            let _ = write!(command, " {name}={mode}");
        }
        self.exec_ok(&command).map(drop)
    }

    /// Reads the guest's uptime and the CPU time its kernel accounted to each of `pids`.
    pub fn cpu_times(&self, pids: &[u32]) -> Result<CpuTimes, LabError> {
        let mut command = String::from("read -r up _ </proc/uptime; echo $up");
        for pid in pids {
            let _ = write!(command, "; read -r ns _ 2>/dev/null </proc/{pid}/schedstat && echo {pid} $ns");
        }
        let output = self.exec_ok(&command)?;
        let bad = |what: &str| LabError::Exec { guest: self.name().to_owned(), command: command.clone(), reason: format!("{what} in {output:?}") };
        let mut lines = output.lines().filter(|l| !l.is_empty());
        let uptime = lines.next().and_then(|l| l.trim().parse::<f64>().ok()).ok_or_else(|| bad("no uptime"))?;
        let mut run_ns = BTreeMap::new();
        for line in lines {
            let (pid, ns) = line.split_once(' ').ok_or_else(|| bad("a bad line"))?;
            let pid = pid.parse().map_err(|_| bad("a bad pid"))?;
            run_ns.insert(pid, ns.trim().parse().map_err(|_| bad("a bad run time"))?);
        }
        Ok(CpuTimes { uptime: Duration::from_secs_f64(uptime), run_ns })
    }
}
