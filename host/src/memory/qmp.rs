//! A minimal client for QEMU's machine protocol (QMP) over a Unix socket.
//!
//! One command at a time: send a JSON object on a line, skip asynchronous events, return the
//! `return` value or turn `error` into [`MemoryError::Qmp`].

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::MemoryError;

/// How long one command may take before the client gives up (a dump of a large guest is slow).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct QmpClient {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// `STOP` events seen so far: QEMU sends one each time the VM stops running.
    stop_events: u64,
}

impl QmpClient {
    /// Connects to the QMP socket at `socket` and negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Self, MemoryError> {
        let stream = UnixStream::connect(socket).map_err(|e| Self::error_at(socket, format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Self::error_at(socket, e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| Self::error_at(socket, e.to_string()))?;
        let mut client = Self { socket: socket.to_path_buf(), reader: BufReader::new(stream), writer, stop_events: 0 };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(client.error(format!("not a QMP greeting: {greeting}")));
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, MemoryError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.error(format!("send {command}: {e}")))?;
        loop {
            let reply = self.read_message()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(self.error(format!("{command}: {desc}")));
            }
            // Anything else is an asynchronous event: note it and skip it.
            self.note_event(&reply);
        }
    }

    /// Stops all vCPUs (`stop`); QEMU answers once they are stopped. Says whether this call
    /// stopped a running VM: QEMU emits a `STOP` event before the reply only then, and none
    /// when the VM was already stopped by someone else (who must then be the one to resume it).
    ///
    /// Events already waiting on the socket are read first, so that an earlier stop is not
    /// taken for this one. An operator's stop landing within the same few microseconds as this
    /// one cannot be told apart: QEMU's run state is one flag, not a count of holders.
    pub fn stop(&mut self) -> Result<bool, MemoryError> {
        self.skip_waiting_events()?;
        let before = self.stop_events;
        self.execute("stop", None)?;
        Ok(self.stop_events > before)
    }

    /// Resumes all vCPUs (`cont`).
    pub fn cont(&mut self) -> Result<(), MemoryError> {
        self.execute("cont", None).map(drop)
    }

    /// Whether the guest's vCPUs are stopped (`query-status` reports `paused`).
    pub fn is_paused(&mut self) -> Result<bool, MemoryError> {
        let status = self.execute("query-status", None)?;
        Ok(status.get("status").and_then(Value::as_str) == Some("paused"))
    }

    /// Writes an ELF core of guest memory to `path` (`dump-guest-memory`, synchronous, no paging).
    pub fn dump_guest_memory(&mut self, path: &Path) -> Result<(), MemoryError> {
        let protocol = format!("file:{}", path.display());
        self.execute("dump-guest-memory", Some(json!({ "paging": false, "protocol": protocol })))
            .map(drop)
    }

    fn note_event(&mut self, message: &Value) {
        if message.get("event").and_then(Value::as_str) == Some("STOP") {
            self.stop_events += 1;
        }
    }

    /// Reads and notes the events that are already on the socket, without waiting.
    fn skip_waiting_events(&mut self) -> Result<(), MemoryError> {
        while !self.reader.buffer().is_empty() || self.readable_now()? {
            let message = self.read_message()?;
            self.note_event(&message);
        }
        Ok(())
    }

    /// Whether the socket has bytes (or a hang-up) to read right now.
    fn readable_now(&self) -> Result<bool, MemoryError> {
        let mut poll = libc::pollfd { fd: self.reader.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid `pollfd` for a descriptor this client owns; a zero timeout never blocks.
        match unsafe { libc::poll(&mut poll, 1, 0) } {
            -1 => Err(self.error(format!("poll: {}", std::io::Error::last_os_error()))),
            n => Ok(n > 0),
        }
    }

    fn read_message(&mut self) -> Result<Value, MemoryError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| self.error(format!("read: {e}")))?;
        if n == 0 {
            return Err(self.error("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| self.error(format!("bad reply {line:?}: {e}")))
    }

    fn error(&self, reason: String) -> MemoryError {
        Self::error_at(&self.socket, reason)
    }

    fn error_at(socket: &Path, reason: String) -> MemoryError {
        MemoryError::Qmp { socket: socket.to_path_buf(), reason }
    }
}
