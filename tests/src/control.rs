//! The host end of a guest's control channel (its second serial port, a Unix socket here).
//!
//! Request: `XSC <seq> <command>\n`. The guest's `/lab/control` runs `sh -c <command>` and answers
//! `XSC-BEGIN <seq>\n<output>\nXSC-END <seq> <exit code>\n`. Anything before our `XSC-BEGIN` (such as
//! the late answer of a command that timed out earlier) is skipped.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A connected control channel.
#[derive(Debug)]
pub(crate) struct Control {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Control {
    /// Connects to the control socket QEMU serves.
    pub(crate) fn connect(socket: &Path) -> std::io::Result<Self> {
        Ok(Self { stream: UnixStream::connect(socket)?, pending: Vec::new() })
    }

    /// Runs `command` in the guest and returns its exit code and combined stdout/stderr.
    pub(crate) fn exec(&mut self, command: &str, timeout: Duration) -> Result<(i32, String), String> {
        static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);
        if command.contains(['\n', '\r']) {
            return Err("the command must be one line (join commands with ';')".into());
        }
        let seq = format!("{}.{}", std::process::id(), NEXT_SEQ.fetch_add(1, Ordering::Relaxed));
        let request = format!("XSC {seq} {command}\n");
        self.stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;

        let begin = format!("XSC-BEGIN {seq}\n").into_bytes();
        let end = format!("\nXSC-END {seq} ").into_bytes();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(answer) = self.take_answer(&begin, &end)? {
                return Ok(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {timeout:?}"));
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| format!("set timeout: {e}"))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("control channel closed".into()),
                Ok(n) => self.pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }

    /// Cuts a complete answer out of the pending bytes, if there is one.
    fn take_answer(&mut self, begin: &[u8], end: &[u8]) -> Result<Option<(i32, String)>, String> {
        let Some(b) = find(&self.pending, begin) else { return Ok(None) };
        let out_start = b + begin.len();
        let Some(e) = find(&self.pending[out_start..], end).map(|e| out_start + e) else { return Ok(None) };
        let code_start = e + end.len();
        let Some(nl) = self.pending[code_start..].iter().position(|&c| c == b'\n').map(|n| code_start + n) else {
            return Ok(None);
        };
        let code_text = String::from_utf8_lossy(&self.pending[code_start..nl]).into_owned();
        let output = String::from_utf8_lossy(&self.pending[out_start..e]).into_owned();
        self.pending.drain(..=nl);
        let code = code_text.trim().parse::<i32>().map_err(|_| format!("bad exit code {code_text:?}"))?;
        Ok(Some((code, output)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
