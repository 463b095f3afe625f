//! Mapped files that shrink, vanish or are replaced under a running `xsched ps --watch`, on a core
//! dump of a live lab guest (a RAM file that shrinks would crash QEMU itself; the unit tests of
//! `host/src/memory/qemu.rs` cover that path with a temporary file). Truncated: xsched exits 1
//! with one line naming the file, not by SIGBUS. Unlinked: it reads on. Replaced by another file
//! at the same path: it exits 1 saying so.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::common::xsched_bin;
use xsched_lab::Guest;

/// Attaching to a core (a RAM scan, debug build) and the first two snapshots.
const FIRST_TABLE: Duration = Duration::from_secs(90);
/// From the damage to xsched's exit: a few refreshes.
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// The fault suite's shared guest.
fn lab() -> &'static [Guest] {
    std::slice::from_ref(super::lab())
}

/// A fresh core dump of the lab guest at `name` in its directory.
fn dump(name: &str) -> PathBuf {
    let g = &lab()[0];
    let core = g.dir().join(name);
    g.dump_core(&core).expect("dump-guest-memory");
    core
}

/// `xsched ps --watch` on the core at `core`, its stdout lines arriving on the receiver.
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(core: &Path) -> Self {
        let mut child = Command::new(xsched_bin())
            .args(["ps", "--watch", "--interval", "200", "--domain", &format!("old=core:{}", core.display())])
            .current_dir(crate::common::workspace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xsched ps --watch");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for the next table's summary line.
    fn next_table(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // (Each refresh starts by clearing the screen: the line follows the escape sequence.)
                Ok(line) if line.contains("old: Linux") => return,
                Ok(_) => {}
                Err(e) => panic!("no table from xsched ps --watch within {wait:?}: {e}"),
            }
        }
    }

    /// Waits for xsched to exit; returns its status and stderr.
    fn exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + EXIT_WAIT;
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                self.child.kill().expect("kill");
                panic!("xsched ps --watch still runs {EXIT_WAIT:?} after its core file was damaged");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.child.wait_with_output().expect("output");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// xsched exited 1 (no signal) with exactly one line on stderr, holding `path` and `what`.
fn assert_one_line_error(status: ExitStatus, stderr: &str, path: &Path, what: &str) {
    assert_eq!(status.signal(), None, "xsched died of a signal: {status:?}; stderr: {stderr}");
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(lines[0].starts_with("xsched: ") && lines[0].contains(&path.display().to_string()) && lines[0].contains(what), "{stderr}");
}

#[test]
fn a_core_truncated_under_ps_watch_ends_it_with_one_line_naming_the_file() {
    let _serial = super::serial();
    let core = dump("mapped-files-shrink.core");
    let copy = core.with_extension("copy");
    std::fs::copy(&core, &copy).expect("copy the core");
    std::fs::remove_file(&core).expect("remove the core");
    let size = std::fs::metadata(&copy).expect("stat").len();
    let watch = Watch::start(&copy);
    watch.next_table(FIRST_TABLE);
    std::fs::OpenOptions::new().write(true).open(&copy).expect("open").set_len(size / 2).expect("truncate");
    let (status, stderr) = watch.exit();
    std::fs::remove_file(&copy).expect("remove the copy");
    assert_one_line_error(status, &stderr, &copy, &format!("shrank while mapped (now {} bytes, was {size})", size / 2));
}

#[test]
fn a_core_unlinked_under_ps_watch_reads_on_and_one_replaced_ends_it() {
    let _serial = super::serial();
    let core = dump("mapped-files-replace.core");
    let copy = core.with_extension("copy");
    std::fs::copy(&core, &copy).expect("copy the core");
    let watch = Watch::start(&copy);
    watch.next_table(FIRST_TABLE);
    std::fs::remove_file(&copy).expect("unlink the copy");
    // Two more tables: the mapping holds the unlinked file.
    watch.next_table(EXIT_WAIT);
    watch.next_table(EXIT_WAIT);
    std::fs::rename(&core, &copy).expect("put another file at the path");
    let (status, stderr) = watch.exit();
    std::fs::remove_file(&copy).expect("remove the core");
    assert_one_line_error(status, &stderr, &copy, "was replaced while mapped");
}
