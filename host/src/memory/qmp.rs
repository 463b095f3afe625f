//! A minimal client for QEMU's machine protocol (QMP) over a Unix socket.
//!
//! One command at a time: send a JSON object on a line, skip asynchronous events, return the
//! `return` value or turn `error` into [`QmpError::Failed`]. Every step has a deadline
//! ([`QmpTimeouts`]): connecting, the greeting and each command, counted across all the lines read
//! for it, not per read. QEMU serves one QMP client at a time and the kernel queues the others,
//! so a monitor someone else holds looks like a server that never greets; the errors say so.
//! `$XSCHED_QMP_WAIT` ([`WAIT_VAR`], seconds) makes [`QmpClient::connect`] wait longer for such
//! a monitor, connecting and for the greeting.
//!
//! Each command carries an `id` that QEMU echoes in its reply, so a reply that arrives after its
//! command timed out is recognised and skipped rather than taken for the next command's. Lines
//! are bounded ([`MAX_LINE`]) and so are the events skipped while waiting ([`MAX_SKIPPED`]). After
//! anything but a timeout or a refused command the session is unusable and says why.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{unix_socket, MemoryError};

/// The longest line accepted from the monitor. QEMU's replies to the commands xsched sends are
/// far shorter; a longer line means a broken or hostile peer.
pub const MAX_LINE: usize = 1 << 20;
/// How many events and stale replies may precede a command's reply.
pub const MAX_SKIPPED: usize = 1000;
/// The environment variable that sets how long to wait for a monitor another client may hold,
/// in seconds: the connect and greeting budgets of [`QmpClient::connect`].
pub const WAIT_VAR: &str = "XSCHED_QMP_WAIT";
/// The longest wait [`WAIT_VAR`] may ask for: a day.
const MAX_WAIT: Duration = Duration::from_secs(86_400);
/// How much of an unparseable line an error quotes.
const QUOTE: usize = 120;

/// How long each step of a QMP session may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QmpTimeouts {
    /// Connecting, including any wait for room in the monitor's queue of waiting clients.
    pub connect: Duration,
    /// The greeting QEMU sends once it serves this client.
    pub greeting: Duration,
    /// An ordinary command (`stop`, `cont`, `query-status`…), from sending it to its reply.
    pub command: Duration,
    /// `dump-guest-memory`, which writes all guest RAM before it answers.
    pub dump: Duration,
}

impl Default for QmpTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            greeting: Duration::from_secs(3),
            command: Duration::from_secs(5),
            dump: Duration::from_secs(600),
        }
    }
}

impl QmpTimeouts {
    /// The defaults, with the connect and greeting budgets from `$XSCHED_QMP_WAIT` if it is set.
    pub fn from_env() -> Result<Self, QmpError> {
        Self::with_wait(std::env::var_os(WAIT_VAR).as_deref())
    }

    /// The defaults, with the connect and greeting budgets from `wait` (seconds, the value of
    /// [`WAIT_VAR`]) if given.
    fn with_wait(wait: Option<&std::ffi::OsStr>) -> Result<Self, QmpError> {
        let mut timeouts = Self::default();
        if let Some(value) = wait {
            let bad = || QmpError::BadWait { value: value.to_string_lossy().into_owned() };
            let seconds: f64 = value.to_str().ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
            let wait = Duration::try_from_secs_f64(seconds).ok().filter(|w| !w.is_zero() && *w <= MAX_WAIT).ok_or_else(bad)?;
            timeouts.connect = wait;
            timeouts.greeting = wait;
        }
        Ok(timeouts)
    }
}

/// What the client was waiting for when something went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// The greeting (`{"QMP": …}`).
    Greeting,
    /// The reply to the named command.
    Reply(String),
    /// The named asynchronous event.
    Event(String),
}

impl Awaited {
    /// Why this wait may have run out.
    fn timeout_hint(&self) -> &'static str {
        match self {
            Self::Greeting => "another client may hold the monitor — QEMU serves one at a time (set XSCHED_QMP_WAIT to wait longer)",
            Self::Reply(_) => "QEMU may be hung or overloaded, or the command needs a larger budget",
            Self::Event(_) => "nothing made QEMU send it",
        }
    }
}

impl fmt::Display for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Greeting => f.write_str("QMP greeting"),
            Self::Reply(command) => write!(f, "reply to `{command}`"),
            Self::Event(name) => write!(f, "`{name}` event"),
        }
    }
}

/// What went wrong talking to a QEMU monitor.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Nothing exists at the socket path.
    #[error("no such socket: is QEMU running with `-qmp unix:PATH,server=on`?")]
    NoSocket,
    /// The path exists but is no socket.
    #[error("not a socket but a {kind}")]
    NotASocket {
        /// What it is: "regular file", "directory"…
        kind: &'static str,
    },
    /// The socket exists but nobody listens on it.
    #[error("nobody listens on it (connection refused): QEMU has exited or closed its monitor")]
    Refused,
    /// The monitor's queue of waiting clients stayed full.
    #[error("connect timed out after {after:?}: the monitor's queue of waiting clients is full (other clients wait for it; QEMU serves one at a time; set XSCHED_QMP_WAIT to wait longer)")]
    ConnectTimedOut {
        /// The budget that ran out.
        after: Duration,
    },
    /// `$XSCHED_QMP_WAIT` is no wait.
    #[error("{WAIT_VAR}={value:?} is not a number of seconds between 0 and a day")]
    BadWait {
        /// The value.
        value: String,
    },
    /// Connecting failed otherwise.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// No complete line came in time.
    #[error("no {awaited} within {after:?}: {}", awaited.timeout_hint())]
    TimedOut {
        /// What was awaited.
        awaited: Awaited,
        /// The budget that ran out.
        after: Duration,
    },
    /// A command could not be sent in time: QEMU does not read its monitor.
    #[error("could not send `{command}` within {after:?}: QEMU is not reading its monitor")]
    SendTimedOut {
        /// The command.
        command: String,
        /// The budget that ran out.
        after: Duration,
    },
    /// Sending a command failed.
    #[error("send `{command}`: {source}")]
    Send {
        /// The command.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// Reading failed.
    #[error("reading the {awaited}: {source}")]
    Read {
        /// What was awaited.
        awaited: Awaited,
        /// The error.
        source: io::Error,
    },
    /// The peer closed the connection.
    #[error("connection closed {} the {awaited}: QEMU exited or dropped this client", if *.partial { "in the middle of" } else { "before" })]
    Closed {
        /// What was awaited.
        awaited: Awaited,
        /// Whether part of a line had arrived.
        partial: bool,
    },
    /// A line is not JSON.
    #[error("the {awaited} is not JSON ({error}): {line:?}")]
    NotJson {
        /// What was awaited.
        awaited: Awaited,
        /// The start of the line.
        line: String,
        /// Why it does not parse.
        error: serde_json::Error,
    },
    /// A line exceeds [`MAX_LINE`].
    #[error("the {awaited} comes in a line longer than {} bytes: not a QMP server", MAX_LINE)]
    LineTooLong {
        /// What was awaited.
        awaited: Awaited,
    },
    /// More than [`MAX_SKIPPED`] events or stale replies came before the reply.
    #[error("more than {} events or stale replies before the {awaited}", MAX_SKIPPED)]
    TooManySkipped {
        /// What was awaited.
        awaited: Awaited,
    },
    /// The first line is JSON but no greeting.
    #[error("not a QMP greeting: {line}")]
    NotGreeting {
        /// The start of the line.
        line: String,
    },
    /// QEMU refused or failed the command.
    #[error("{command}: {desc}")]
    Failed {
        /// The command.
        command: String,
        /// QEMU's description of the error.
        desc: String,
    },
    /// The kernel would not say who the peer is (`SO_PEERCRED`).
    #[error("asking the kernel for the peer's pid (SO_PEERCRED): {0}")]
    PeerCred(#[source] io::Error),
    /// An earlier failure left the session in an unknown state.
    #[error("session unusable after an earlier failure ({reason}): connect again")]
    Unusable {
        /// The earlier failure.
        reason: String,
    },
}

impl QmpError {
    /// Whether the session may go on after this error: a timeout leaves at most a late reply,
    /// which its id tells apart, and a refused command leaves nothing.
    fn leaves_session_usable(&self) -> bool {
        matches!(self, Self::TimedOut { .. } | Self::Failed { .. })
    }
}

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct QmpClient {
    socket: PathBuf,
    stream: UnixStream,
    timeouts: QmpTimeouts,
    /// Bytes received and not yet returned as lines: a line cut short by a timeout is finished
    /// by the next read.
    received: Vec<u8>,
    next_id: u64,
    /// Why the session is unusable, once it is.
    broken: Option<String>,
    /// `STOP` events seen so far: QEMU sends one each time the VM stops running.
    stop_events: u64,
}

impl QmpClient {
    /// Connects to the QMP socket at `socket` and negotiates capabilities, with the default
    /// timeouts or those `$XSCHED_QMP_WAIT` sets ([`QmpTimeouts::from_env`]).
    pub fn connect(socket: &Path) -> Result<Self, MemoryError> {
        let timeouts = QmpTimeouts::from_env().map_err(|source| MemoryError::Qmp { socket: socket.to_path_buf(), source })?;
        Self::connect_with(socket, timeouts)
    }

    /// Connects to the QMP socket at `socket` and negotiates capabilities, within `timeouts`.
    pub fn connect_with(socket: &Path, timeouts: QmpTimeouts) -> Result<Self, MemoryError> {
        let error = |source| MemoryError::Qmp { socket: socket.to_path_buf(), source };
        let stream = unix_socket::connect(socket, timeouts.connect).map_err(|e| error(connect_error(socket, e, timeouts.connect)))?;
        let mut client = Self { socket: socket.to_path_buf(), stream, timeouts, received: Vec::new(), next_id: 0, broken: None, stop_events: 0 };
        client.greet().map_err(error)?;
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, MemoryError> {
        self.execute_within(command, arguments, self.timeouts.command)
    }

    /// Stops all vCPUs (`stop`); QEMU answers once they are stopped. Says whether this call
    /// stopped a running VM: QEMU emits a `STOP` event before the reply only then, and none
    /// when the VM was already stopped by someone else (who must then be the one to resume it).
    ///
    /// Events already waiting on the socket are read first, so that an earlier stop is not
    /// taken for this one. An operator's stop landing within the same few microseconds as this
    /// one cannot be told apart: QEMU's run state is one flag, not a count of holders.
    pub fn stop(&mut self) -> Result<bool, MemoryError> {
        self.skip_waiting_events().map_err(|source| MemoryError::Qmp { socket: self.socket.clone(), source })?;
        let before = self.stop_events;
        self.execute("stop", None)?;
        Ok(self.stop_events > before)
    }

    /// Waits up to `timeout` for the asynchronous event `name` (`STOP`, `RESUME`, …) and returns
    /// it, with QEMU's `timestamp`; replies to nothing this client asked are skipped.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, MemoryError> {
        let awaited = Awaited::Event(name.into());
        let deadline = Instant::now() + timeout;
        let result = (0..=MAX_SKIPPED)
            .find_map(|_| match self.read_message(&awaited, deadline, timeout) {
                Ok(message) => {
                    self.note(&message);
                    (message.get("event").and_then(Value::as_str) == Some(name)).then_some(Ok(message))
                }
                Err(e) => Some(Err(e)),
            })
            .unwrap_or(Err(QmpError::TooManySkipped { awaited }));
        result.map_err(|source| MemoryError::Qmp { socket: self.socket.clone(), source })
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

    /// Runs a human-monitor (HMP) command line through QMP (`human-monitor-command`) and returns
    /// its text output; a reply that is not text reads as empty.
    pub fn human_command(&mut self, command_line: &str) -> Result<String, MemoryError> {
        let reply = self.execute("human-monitor-command", Some(json!({ "command-line": command_line })))?;
        Ok(reply.as_str().unwrap_or_default().to_owned())
    }

    /// The process id of the QEMU at the other end of the socket, as the kernel recorded it when
    /// the connection was made (`SO_PEERCRED`); `None` when it is not visible from this process's
    /// pid namespace (the kernel then reports 0).
    pub fn peer_pid(&self) -> Result<Option<u32>, MemoryError> {
        unix_socket::peer_pid(&self.stream).map_err(|e| MemoryError::Qmp { socket: self.socket.clone(), source: QmpError::PeerCred(e) })
    }

    /// Writes an ELF core of guest memory to `path` (`dump-guest-memory`, synchronous, no paging),
    /// within the dump's own budget ([`QmpTimeouts::dump`]).
    pub fn dump_guest_memory(&mut self, path: &Path) -> Result<(), MemoryError> {
        let protocol = format!("file:{}", path.display());
        let arguments = json!({ "paging": false, "protocol": protocol });
        self.execute_within("dump-guest-memory", Some(arguments), self.timeouts.dump).map(drop)
    }

    /// Runs `command`, giving it `budget` from sending to its reply.
    fn execute_within(&mut self, command: &str, arguments: Option<Value>, budget: Duration) -> Result<Value, MemoryError> {
        let result = match &self.broken {
            Some(reason) => Err(QmpError::Unusable { reason: reason.clone() }),
            None => self.run(command, arguments, budget),
        };
        result.map_err(|e| {
            if !e.leaves_session_usable() && self.broken.is_none() {
                self.broken = Some(e.to_string());
            }
            MemoryError::Qmp { socket: self.socket.clone(), source: e }
        })
    }

    fn run(&mut self, command: &str, arguments: Option<Value>, budget: Duration) -> Result<Value, QmpError> {
        let deadline = Instant::now() + budget;
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        let send_error = |source: io::Error| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QmpError::SendTimedOut { command: command.into(), after: budget },
            _ => QmpError::Send { command: command.into(), source },
        };
        self.stream.set_write_timeout(Some(budget.max(Duration::from_millis(1)))).map_err(send_error)?;
        self.stream.write_all(line.as_bytes()).map_err(send_error)?;
        let awaited = Awaited::Reply(command.into());
        for _ in 0..=MAX_SKIPPED {
            let reply = self.read_message(&awaited, deadline, budget)?;
            let is_reply = reply.get("return").is_some() || reply.get("error").is_some();
            // A reply without an id answers a request QEMU could not parse: ours.
            let ours = reply.get("id").is_none_or(|got| got.as_u64() == Some(id));
            if is_reply && ours {
                if let Some(error) = reply.get("error") {
                    let desc = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                    return Err(QmpError::Failed { command: command.into(), desc: desc.into() });
                }
                return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
            }
            if is_reply {
                log::debug!("QMP {}: skipping a late reply to an earlier command: {reply}", self.socket.display());
            }
            // Anything else is an asynchronous event: note it and skip it.
            self.note(&reply);
        }
        Err(QmpError::TooManySkipped { awaited })
    }

    fn note(&mut self, message: &Value) {
        if message.get("event").and_then(Value::as_str) == Some("STOP") {
            self.stop_events += 1;
        }
    }

    /// Reads and notes the messages already on the socket, without waiting.
    fn skip_waiting_events(&mut self) -> Result<(), QmpError> {
        let awaited = Awaited::Reply("stop".into());
        for _ in 0..=MAX_SKIPPED {
            if let Some(at) = memchr::memchr(b'\n', &self.received) {
                let line: Vec<u8> = self.received.drain(..=at).collect();
                let message = serde_json::from_slice(&line).map_err(|error| QmpError::NotJson { awaited: awaited.clone(), line: quote(&line), error })?;
                self.note(&message);
                continue;
            }
            let mut poll = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid `pollfd` for a socket this client owns; a zero timeout never blocks.
            if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
                return Ok(());
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QmpError::Closed { awaited, partial: !self.received.is_empty() }),
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(()),
                Err(source) => return Err(QmpError::Read { awaited, source }),
            }
            if self.received.len() > MAX_LINE {
                return Err(QmpError::LineTooLong { awaited });
            }
        }
        Err(QmpError::TooManySkipped { awaited })
    }

    fn greet(&mut self) -> Result<(), QmpError> {
        let budget = self.timeouts.greeting;
        let greeting = self.read_message(&Awaited::Greeting, Instant::now() + budget, budget)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NotGreeting { line: quote(greeting.to_string().as_bytes()) });
        }
        Ok(())
    }

    /// Reads one line before `deadline` (from a wait of `budget`) and parses it.
    fn read_message(&mut self, awaited: &Awaited, deadline: Instant, budget: Duration) -> Result<Value, QmpError> {
        let line = self.read_line(awaited, deadline, budget)?;
        serde_json::from_slice(&line).map_err(|error| QmpError::NotJson { awaited: awaited.clone(), line: quote(&line), error })
    }

    fn read_line(&mut self, awaited: &Awaited, deadline: Instant, budget: Duration) -> Result<Vec<u8>, QmpError> {
        let mut scanned = 0;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.received[scanned..]) {
                return Ok(self.received.drain(..=scanned + at).collect());
            }
            scanned = self.received.len();
            if scanned > MAX_LINE {
                return Err(QmpError::LineTooLong { awaited: awaited.clone() });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::TimedOut { awaited: awaited.clone(), after: budget });
            }
            let read_error = |source| QmpError::Read { awaited: awaited.clone(), source };
            self.stream.set_read_timeout(Some(left)).map_err(read_error)?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QmpError::Closed { awaited: awaited.clone(), partial: !self.received.is_empty() }),
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                // The deadline decides, at the top of the loop.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(read_error(e)),
            }
        }
    }
}

/// Says why connecting to `socket` failed, in the terms of a QMP user.
fn connect_error(socket: &Path, error: io::Error, budget: Duration) -> QmpError {
    match error.raw_os_error() {
        Some(libc::ENOENT) => QmpError::NoSocket,
        Some(libc::EAGAIN) => QmpError::ConnectTimedOut { after: budget },
        // The kernel refuses a connection to a path that is no socket too: tell them apart.
        Some(libc::ECONNREFUSED) => match std::fs::metadata(socket).map(|m| m.file_type()) {
            Ok(t) if !t.is_socket() => QmpError::NotASocket { kind: file_kind(t) },
            _ => QmpError::Refused,
        },
        _ => QmpError::Connect(error),
    }
}

/// A file type in words.
fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// The start of a line from the peer, for an error message.
fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(QUOTE)]);
    let text = text.trim_end();
    if line.len() > QUOTE {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;
    use std::thread::{self, JoinHandle};

    /// Short budgets, so that each timeout test takes a fraction of a second.
    const FAST: QmpTimeouts = QmpTimeouts {
        connect: Duration::from_millis(200),
        greeting: Duration::from_millis(150),
        command: Duration::from_millis(150),
        dump: Duration::from_millis(1500),
    };
    const GREETING: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";

    /// A fake monitor: `script` serves the first client on a socket in a fresh directory.
    struct Fake {
        _dir: tempfile::TempDir,
        path: PathBuf,
        server: JoinHandle<()>,
    }

    fn fake(script: impl FnOnce(UnixStream) + Send + 'static) -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = thread::spawn(move || script(listener.accept().expect("accept").0));
        Fake { _dir: dir, path, server }
    }

    /// Reads one command and returns its name and id.
    fn command(reader: &mut BufReader<UnixStream>) -> (String, u64) {
        let mut line = String::new();
        reader.read_line(&mut line).expect("command");
        let v: Value = serde_json::from_str(&line).expect("command is JSON");
        (v["execute"].as_str().expect("execute").to_string(), v["id"].as_u64().expect("id"))
    }

    /// Greets and accepts `qmp_capabilities`; returns the reader for more.
    fn handshake(mut stream: UnixStream) -> (UnixStream, BufReader<UnixStream>) {
        stream.write_all(GREETING.as_bytes()).expect("greet");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (name, id) = command(&mut reader);
        assert_eq!(name, "qmp_capabilities");
        writeln!(stream, "{{\"return\": {{}}, \"id\": {id}}}").expect("reply");
        (stream, reader)
    }

    /// Blocks until the client goes away.
    fn until_closed(mut stream: UnixStream) {
        let _ = stream.read_to_end(&mut Vec::new());
    }

    fn qmp_error(result: Result<QmpClient, MemoryError>) -> QmpError {
        match result {
            Err(MemoryError::Qmp { source, .. }) => source,
            other => panic!("expected a QMP error, got {other:?}"),
        }
    }

    fn timed<T>(f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let value = f();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        value
    }

    #[test]
    fn a_session_skips_events_and_stale_replies_and_reports_refusals() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            let (name, id) = command(&mut reader);
            assert_eq!(name, "query-status");
            writeln!(stream, "{{\"event\": \"RESUME\", \"timestamp\": {{}}}}").expect("event");
            writeln!(stream, "{{\"return\": {{}}, \"id\": {}}}", id + 100).expect("stale reply");
            writeln!(stream, "{{\"return\": {{\"status\": \"paused\", \"running\": false}}, \"id\": {id}}}").expect("reply");
            let (name, id) = command(&mut reader);
            assert_eq!(name, "cont");
            writeln!(stream, "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"nope\"}}, \"id\": {id}}}").expect("error");
            until_closed(stream);
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        assert!(client.is_paused().expect("query-status"));
        let error = client.cont().expect_err("refused");
        assert!(error.to_string().ends_with("cont: nope"), "{error}");
        drop(client);
        f.server.join().expect("server");
    }

    #[test]
    fn a_stop_is_ours_only_when_qemu_announces_it_before_the_reply() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            // A running VM: QEMU stops it and says so before replying.
            let (name, id) = command(&mut reader);
            assert_eq!(name, "stop");
            writeln!(stream, "{{\"event\": \"STOP\", \"timestamp\": {{}}}}").expect("event");
            writeln!(stream, "{{\"return\": {{}}, \"id\": {id}}}").expect("reply");
            let (_, id) = command(&mut reader);
            writeln!(stream, "{{\"event\": \"RESUME\", \"timestamp\": {{}}}}").expect("event");
            writeln!(stream, "{{\"return\": {{}}, \"id\": {id}}}").expect("reply");
            // Someone else stops it between two of our commands: their STOP waits on the
            // socket, and our stop finds it stopped (no event).
            writeln!(stream, "{{\"event\": \"STOP\", \"timestamp\": {{}}}}").expect("event");
            let (name, id) = command(&mut reader);
            assert_eq!(name, "stop");
            writeln!(stream, "{{\"return\": {{}}, \"id\": {id}}}").expect("reply");
            until_closed(stream);
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        assert!(client.stop().expect("stop"), "a stop announced by an event is ours");
        client.cont().expect("cont");
        // Let the operator's STOP reach the socket before our next stop.
        thread::sleep(Duration::from_millis(50));
        assert!(!client.stop().expect("stop"), "a stop that found the VM stopped is not ours");
        drop(client);
        f.server.join().expect("server");
    }

    #[test]
    fn a_monitor_held_by_another_client_never_greets() {
        // Listening but never accepting: exactly what a second client of QEMU's monitor sees.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busy.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let error = timed(|| QmpClient::connect_with(&path, FAST)).expect_err("no greeting");
        let text = error.to_string();
        assert!(matches!(error, MemoryError::Qmp { source: QmpError::TimedOut { awaited: Awaited::Greeting, .. }, .. }));
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("no QMP greeting within 150ms: another client may hold the monitor"), "{text}");
    }

    #[test]
    fn a_monitor_that_greets_but_never_answers_times_out_on_capabilities() {
        let f = fake(|mut stream| {
            stream.write_all(GREETING.as_bytes()).expect("greet");
            until_closed(stream);
        });
        let error = qmp_error(timed(|| QmpClient::connect_with(&f.path, FAST)));
        assert!(matches!(&error, QmpError::TimedOut { awaited: Awaited::Reply(c), .. } if c == "qmp_capabilities"), "{error}");
        f.server.join().expect("server");
    }

    #[test]
    fn half_a_reply_then_silence_times_out_and_a_late_reply_is_not_misread() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            let (_, stop) = command(&mut reader);
            write!(stream, "{{\"return\": {{}}, ").expect("half a line");
            let (name, cont) = command(&mut reader);
            assert_eq!(name, "cont");
            // The rest of the late reply to `stop`, then the reply to `cont`.
            writeln!(stream, "\"id\": {stop}}}").expect("rest of the line");
            writeln!(stream, "{{\"return\": {{}}, \"id\": {cont}}}").expect("reply");
            until_closed(stream);
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        let error = timed(|| client.stop()).expect_err("stalled");
        assert!(matches!(&error, MemoryError::Qmp { source: QmpError::TimedOut { .. }, .. }), "{error}");
        assert!(error.to_string().contains("no reply to `stop` within 150ms"), "{error}");
        client.cont().expect("the session survives a timeout");
        drop(client);
        f.server.join().expect("server");
    }

    #[test]
    fn a_peer_that_closes_mid_reply_is_reported_and_the_session_is_spent() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            command(&mut reader);
            write!(stream, "{{\"return\"").expect("partial");
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        let error = client.stop().expect_err("closed");
        f.server.join().expect("server");
        assert!(matches!(&error, MemoryError::Qmp { source: QmpError::Closed { partial: true, .. }, .. }), "{error}");
        assert!(error.to_string().contains("closed in the middle of the reply to `stop`"), "{error}");
        let again = client.cont().expect_err("spent");
        assert!(matches!(again, MemoryError::Qmp { source: QmpError::Unusable { .. }, .. }), "{again}");
    }

    #[test]
    fn a_peer_that_sends_garbage_is_not_json() {
        let f = fake(|mut stream| {
            stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").expect("garbage");
            until_closed(stream);
        });
        let error = qmp_error(QmpClient::connect_with(&f.path, FAST));
        assert!(matches!(&error, QmpError::NotJson { awaited: Awaited::Greeting, .. }), "{error}");
        assert!(error.to_string().contains("SSH-2.0"), "{error}");
        f.server.join().expect("server");
    }

    #[test]
    fn json_that_is_no_greeting_is_refused() {
        let f = fake(|mut stream| {
            stream.write_all(b"{\"hello\": 1}\n").expect("not a greeting");
            until_closed(stream);
        });
        assert!(matches!(qmp_error(QmpClient::connect_with(&f.path, FAST)), QmpError::NotGreeting { .. }));
        f.server.join().expect("server");
    }

    #[test]
    fn an_endless_line_is_cut_off() {
        let f = fake(|mut stream| {
            let junk = [b'x'; 65536];
            // Until the client hangs up.
            while stream.write_all(&junk).is_ok() {}
        });
        let error = qmp_error(timed(|| QmpClient::connect_with(&f.path, FAST)));
        assert!(matches!(error, QmpError::LineTooLong { awaited: Awaited::Greeting }), "{error}");
        f.server.join().expect("server");
    }

    #[test]
    fn an_endless_stream_of_events_is_cut_off() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            command(&mut reader);
            while writeln!(stream, "{{\"event\": \"RTC_CHANGE\"}}").is_ok() {}
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        let error = timed(|| client.stop()).expect_err("flooded");
        assert!(matches!(error, MemoryError::Qmp { source: QmpError::TooManySkipped { .. }, .. }), "{error}");
        drop(client);
        f.server.join().expect("server");
    }

    #[test]
    fn a_dump_has_its_own_larger_budget() {
        let f = fake(|stream| {
            let (mut stream, mut reader) = handshake(stream);
            let (name, id) = command(&mut reader);
            assert_eq!(name, "dump-guest-memory");
            // Longer than an ordinary command may take, well inside the dump's budget.
            thread::sleep(FAST.command * 2);
            writeln!(stream, "{{\"return\": {{}}, \"id\": {id}}}").expect("reply");
            until_closed(stream);
        });
        let mut client = QmpClient::connect_with(&f.path, FAST).expect("connect");
        client.dump_guest_memory(Path::new("/nonexistent/core")).expect("dump within its budget");
        drop(client);
        f.server.join().expect("server");
    }

    #[test]
    fn connect_failures_each_say_what_is_at_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        assert!(matches!(qmp_error(QmpClient::connect_with(&missing, FAST)), QmpError::NoSocket));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("file");
        let error = qmp_error(QmpClient::connect_with(&file, FAST));
        assert!(matches!(error, QmpError::NotASocket { kind: "regular file" }), "{error}");
        let dead = dir.path().join("dead.sock");
        drop(UnixListener::bind(&dead).expect("bind"));
        assert!(matches!(qmp_error(QmpClient::connect_with(&dead, FAST)), QmpError::Refused));
    }

    #[test]
    fn the_wait_for_a_held_monitor_comes_from_the_environment() {
        let wait = |v: &str| QmpTimeouts::with_wait(Some(std::ffi::OsStr::new(v)));
        assert_eq!(QmpTimeouts::with_wait(None).expect("unset"), QmpTimeouts::default());
        let patient = wait("120").expect("120 s");
        assert_eq!((patient.connect, patient.greeting), (Duration::from_secs(120), Duration::from_secs(120)));
        assert_eq!(patient.command, QmpTimeouts::default().command, "commands keep their budget");
        assert_eq!(wait("0.5").expect("half a second").greeting, Duration::from_millis(500));
        for bad in ["", "0", "-1", "soon", "inf", "NaN", "1e9"] {
            let error = wait(bad).expect_err(bad);
            assert!(error.to_string().starts_with("XSCHED_QMP_WAIT="), "{error}");
        }
    }

    #[test]
    fn a_full_queue_of_waiting_clients_times_out_the_connect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        // SAFETY: `listen` on a socket this test owns: room for one waiting client only.
        assert_eq!(unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 0) }, 0);
        let _waiting = unix_socket::connect(&path, FAST.connect).expect("first client queued");
        let error = qmp_error(timed(|| QmpClient::connect_with(&path, FAST)));
        assert!(matches!(error, QmpError::ConnectTimedOut { .. }), "{error}");
        assert!(error.to_string().contains("queue of waiting clients is full"), "{error}");
    }
}
