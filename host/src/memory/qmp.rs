//! A minimal client for QEMU's machine protocol (QMP) over a Unix socket.
//!
//! One command at a time: send a JSON object on a line, skip asynchronous events, return the
//! `return` value or turn `error` into [`MemoryError::Qmp`].

use std::io::{BufRead, BufReader, Write};
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
}

impl QmpClient {
    /// Connects to the QMP socket at `socket` and negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Self, MemoryError> {
        let stream = UnixStream::connect(socket).map_err(|e| Self::error_at(socket, format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Self::error_at(socket, e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| Self::error_at(socket, e.to_string()))?;
        let mut client = Self { socket: socket.to_path_buf(), reader: BufReader::new(stream), writer };
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
            // Anything else is an asynchronous event: skip it.
        }
    }

    /// Stops all vCPUs (`stop`); QEMU answers once they are stopped.
    pub fn stop(&mut self) -> Result<(), MemoryError> {
        self.execute("stop", None).map(drop)
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
