//! The guest's own view of its processes, parsed from its serial console.
//!
//! The guest's `/lab/view` prints, every round:
//!
//! ```text
//! XSV BEGIN <round> <uptime seconds, 2 decimals>
//! XSV P <run_ns> <wait_ns> <slices> <the /proc/PID/stat line>
//! ...
//! XSV END <round>
//! ```
//!
//! (`/proc/PID/schedstat` comes first because a `comm` may contain spaces and parentheses.) Other
//! lines may appear between them (kernel messages, the lab's markers) and are ignored here. A round
//! with a malformed `XSV` line (say, a kernel message printed into the middle of one) is dropped
//! whole: a [`ProcView`] is always a complete, consistent round.

use std::time::Duration;

/// The prefix of every view line.
pub const VIEW_PREFIX: &str = "XSV ";

/// One process as the guest sees it (`/proc/PID/stat` and `/proc/PID/schedstat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    /// Process id (stat field 1).
    pub pid: u32,
    /// Command name, without the parentheses (field 2).
    pub comm: String,
    /// State: `R`, `S`, `D`, `I`, `Z`, `T`, ... (field 3).
    pub state: char,
    /// Parent process id (field 4).
    pub ppid: u32,
    /// Kernel `PF_*` flags (field 9).
    pub flags: u64,
    /// User time in clock ticks of 10 ms (field 14).
    pub utime: u64,
    /// System time in clock ticks (field 15).
    pub stime: u64,
    /// Kernel priority (field 18).
    pub priority: i64,
    /// Nice value (field 19).
    pub nice: i64,
    /// Start time after boot in clock ticks (field 22).
    pub start_time: u64,
    /// The CPU it last ran on (field 39).
    pub processor: u32,
    /// Time spent on a CPU, ns (schedstat field 1).
    pub run_ns: u64,
    /// Time spent runnable but waiting for a CPU, ns (schedstat field 2).
    pub wait_ns: u64,
    /// Number of times it ran on a CPU (schedstat field 3).
    pub slices: u64,
}

/// `PF_KTHREAD` in [`ProcEntry::flags`].
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcEntry {
    /// Whether this is a kernel thread.
    pub fn is_kthread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Parses the part of an `XSV P` line after `XSV P `.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.splitn(4, ' ');
        let mut schedstat = || -> Result<u64, String> {
            let w = words.next().ok_or("short schedstat")?;
            w.parse::<u64>().map_err(|_| format!("bad schedstat number {w:?}"))
        };
        let (run_ns, wait_ns, slices) = (schedstat()?, schedstat()?, schedstat()?);
        let stat = words.next().ok_or("no stat line")?;

        let open = stat.find(" (").ok_or("no '(' in stat")?;
        let close = stat.rfind(") ").ok_or("no ')' in stat")?;
        let pid_text = &stat[..open];
        let comm = stat.get(open + 2..close).ok_or("bad comm")?;
        let pid = pid_text.parse::<u32>().map_err(|_| format!("bad pid {pid_text:?}"))?;
        // rest[0] is field 3 (state).
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let field = |n: usize| rest.get(n - 3).copied().ok_or_else(|| format!("stat has no field {n}"));
        let unsigned = |n: usize| field(n)?.parse::<u64>().map_err(|_| format!("stat field {n} not a number"));
        let signed = |n: usize| field(n)?.parse::<i64>().map_err(|_| format!("stat field {n} not a number"));
        let small = |n: usize| u32::try_from(unsigned(n)?).map_err(|_| format!("stat field {n} too large"));

        let mut state_chars = field(3)?.chars();
        let state = match (state_chars.next(), state_chars.next()) {
            (Some(c), None) => c,
            _ => return Err("bad state".into()),
        };
        Ok(Self {
            pid,
            comm: comm.to_owned(),
            state,
            ppid: small(4)?,
            flags: unsigned(9)?,
            utime: unsigned(14)?,
            stime: unsigned(15)?,
            priority: signed(18)?,
            nice: signed(19)?,
            start_time: unsigned(22)?,
            processor: small(39)?,
            run_ns,
            wait_ns,
            slices,
        })
    }
}

/// One complete round of the guest's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcView {
    /// The round number, from 1, increasing by one per round.
    pub round: u64,
    /// The guest's uptime when the round began.
    pub uptime: Duration,
    /// Every process that existed during the round, in `/proc` directory order.
    pub procs: Vec<ProcEntry>,
}

impl ProcView {
    /// The process with id `pid`.
    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.procs.iter().find(|p| p.pid == pid)
    }

    /// Every process whose comm is `comm`, by pid.
    pub fn by_comm(&self, comm: &str) -> Vec<&ProcEntry> {
        let mut found: Vec<&ProcEntry> = self.procs.iter().filter(|p| p.comm == comm).collect();
        found.sort_by_key(|p| p.pid);
        found
    }

    /// Parses every complete round in `text` (a console log).
    pub fn parse_all(text: &str) -> Vec<ProcView> {
        let mut parser = ViewParser::default();
        text.lines().filter_map(|line| parser.feed(line)).collect()
    }
}

/// A line-at-a-time parser that yields each complete round.
#[derive(Debug, Default)]
pub struct ViewParser {
    current: Option<ProcView>,
    damaged: bool,
    /// Rounds thrown away because a line was malformed or an end was missing.
    pub dropped_rounds: u64,
    /// The highest round number whose `BEGIN` line has been seen.
    pub last_begun: u64,
}

impl ViewParser {
    /// Feeds one console line (without its line end; a trailing `\r` is ignored) and returns the
    /// round it completes, if any.
    pub fn feed(&mut self, line: &str) -> Option<ProcView> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let body = line.strip_prefix(VIEW_PREFIX)?;
        if let Some(p) = body.strip_prefix("P ") {
            match (&mut self.current, ProcEntry::parse(p)) {
                (Some(view), Ok(entry)) => view.procs.push(entry),
                (Some(_), Err(_)) => self.damaged = true,
                (None, _) => {}
            }
            None
        } else if let Some(rest) = body.strip_prefix("BEGIN ") {
            if self.current.take().is_some() {
                self.dropped_rounds += 1;
            }
            self.damaged = false;
            let mut words = rest.split(' ');
            let round = words.next().and_then(|w| w.parse::<u64>().ok());
            let uptime = words.next().and_then(parse_uptime);
            match (round, uptime) {
                (Some(round), Some(uptime)) => {
                    self.last_begun = self.last_begun.max(round);
                    self.current = Some(ProcView { round, uptime, procs: Vec::new() });
                }
                _ => self.dropped_rounds += 1,
            }
            None
        } else if let Some(rest) = body.strip_prefix("END ") {
            let view = self.current.take()?;
            if self.damaged || rest.parse::<u64>().ok() != Some(view.round) {
                self.dropped_rounds += 1;
                return None;
            }
            Some(view)
        } else {
            // An XSV line of an unknown kind (or mangled): the round in progress is suspect.
            self.damaged = true;
            None
        }
    }
}

/// Parses `/proc/uptime`'s first number (`123.45`).
fn parse_uptime(text: &str) -> Option<Duration> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let secs = secs.parse::<u64>().ok()?;
    let frac_digits = frac.get(..frac.len().min(9))?;
    let nanos = frac_digits.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(frac_digits.len()).ok()?);
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
[    2.607389] Unstable clock detected, switching default tracing clock to \"global\"\r
XSW db 96 -\r
XSV BEGIN 1 3.24\r
XSV P 1413300784 127625756 280 1 (init) S 0 1 1 0 -1 4194560 144 687 0 0 2 138 3 27 20 0 1 0 50 2314240 2 18446744073709551615 4198400 5785993 140730009996816 0 0 0 0 0 524288 1 0 0 17 1 0 0 0 0 0 6141704 6178576 859070464 140730010001311 140730010001322 140730010001322 140730010001389 0\r
XSCHED-LAB READY p1 3.34\r
XSV P 401198012 422820438 42 96 (db) R 1 93 93 0 -1 4194304 66 0 0 0 32 7 0 0 20 0 1 0 310 2314240 1 18446744073709551615 4198400 5785993 140731845221664 0 0 0 0 6 65536 0 0 0 17 0 0 0 0 0 0 6141704 6178576 45969408 140731845222261 140731845222289 140731845222289 140731845222380 0\r
XSV P 505827 7053342 4 17 (kworker/0:1-rcu gp) x) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 66 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\r
XSV END 1\r
XSV BEGIN 2 4.96\r
XSV P 1 2 3 96 (db) R 1 93 93 0 -1 4194304 66 0 0 0 1[   5.1] WARNING: CPU: 0\r
XSV END 2\r
XSV BEGIN 3 6.05\r
XSV P 1484477303 385409735 87 96 (db) R 1 93 93 0 -1 4194304 67 0 0 0 134 14 0 0 20 0 1 0 319 2314240 1 18446744073709551615 4198400 5785993 140732298948576 0 0 0 0 6 65536 0 0 0 17 1 0 0 0 0 0 6141704 6178576 284561408 140732298952561 140732298952591 140732298952591 140732298952682 0\r
XSV END 3\r
XSV BEGIN 4 7.10\r
XSV P 1 2 3 96 (db) R 1 93 93 0 -1 4194304 67 0 0 0 134 14 0 0 20 0 1 0 319 2314240 1 18446744073709551615 4198400 5785993 140732298948576 0 0 0 0 6 65536 0 0 0 17 1 0 0 0 0 0 6141704 6178576 284561408 140732298952561 140732298952591 140732298952591 140732298952682 0\r
";

    #[test]
    fn parses_complete_rounds_only() {
        let mut parser = ViewParser::default();
        let views: Vec<ProcView> = SAMPLE.lines().filter_map(|l| parser.feed(l)).collect();
        assert_eq!(views.iter().map(|v| v.round).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(parser.dropped_rounds, 1, "round 2 is damaged; round 4 is still open");
        assert_eq!(parser.last_begun, 4);

        let first = &views[0];
        assert_eq!(first.uptime, Duration::from_millis(3240));
        assert_eq!(first.procs.len(), 3);
        let db = first.by_comm("db");
        assert_eq!(db.len(), 1);
        assert_eq!(
            *db[0],
            ProcEntry {
                pid: 96,
                comm: "db".into(),
                state: 'R',
                ppid: 1,
                flags: 4_194_304,
                utime: 32,
                stime: 7,
                priority: 20,
                nice: 0,
                start_time: 310,
                processor: 0,
                run_ns: 401_198_012,
                wait_ns: 422_820_438,
                slices: 42,
            }
        );
        let odd = first.get(17).map(|p| (p.comm.as_str(), p.state, p.ppid, p.processor, p.is_kthread()));
        assert_eq!(odd, Some(("kworker/0:1-rcu gp) x", 'I', 2, 1, true)));
        assert!(!db[0].is_kthread());
        assert_eq!(first.get(1).map(|p| (p.utime, p.stime, p.start_time)), Some((2, 138, 50)));

        let third = &views[1];
        assert_eq!(third.get(96).map(|p| (p.utime, p.processor, p.slices)), Some((134, 1, 87)));
        assert_eq!(ProcView::parse_all(SAMPLE), views);
    }

    #[test]
    fn uptime_parsing() {
        assert_eq!(parse_uptime("12.05"), Some(Duration::from_millis(12_050)));
        assert_eq!(parse_uptime("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_uptime("x.1"), None);
    }
}
