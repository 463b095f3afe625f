//! Connecting to a Unix stream socket within a time limit.
//!
//! `UnixStream::connect` can wait without bound: when a listener's queue of connections not yet
//! accepted is full, Linux makes the connecting process wait for room. That wait obeys the
//! socket's send timeout (`SO_SNDTIMEO`; `unix_stream_connect` in `net/unix/af_unix.c`), so a
//! socket given one before `connect` gives up in time, with `EAGAIN`.

use std::io;
use std::mem::{size_of, size_of_val};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects to the Unix stream socket at `path`, waiting at most `timeout` for room in its queue.
/// A full queue after `timeout` fails with [`io::ErrorKind::WouldBlock`] (`EAGAIN`).
pub(crate) fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let address = socket_address(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: plain system call with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let stream = UnixStream::from(socket);
        // A zero timeout would mean "wait forever" to the kernel: never ask for less than 1 ms.
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_write_timeout(Some(left))?;
        // SAFETY: `address` is a valid, initialised `sockaddr_un` and the length passed is its size.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                std::ptr::from_ref(&address).cast(),
                socklen(size_of::<libc::sockaddr_un>()),
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let error = io::Error::last_os_error();
        // A signal interrupted the wait: the socket stays unconnected, so try again in the time left.
        if error.kind() != io::ErrorKind::Interrupted || Instant::now() >= deadline {
            return Err(error);
        }
    }
}

/// The process id of the peer of a connected Unix stream socket, as the kernel recorded it at
/// connect time (`SO_PEERCRED`); `None` when the peer is outside this pid namespace (pid 0).
pub(crate) fn peer_pid(stream: &UnixStream) -> io::Result<Option<u32>> {
    // SAFETY: all-zero bytes are a valid `ucred`.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = socklen(size_of::<libc::ucred>());
    // SAFETY: `cred` is a writable `ucred` and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, std::ptr::from_mut(&mut cred).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(cred.pid).ok().filter(|&pid| pid != 0))
}

/// The `sockaddr_un` for `path`, or an error naming the limit when the path does not fit in one.
fn socket_address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: all-zero bytes are a valid `sockaddr_un` (an empty, NUL-terminated path).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).map_err(io::Error::other)?;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays for the terminating NUL.
    if bytes.len() >= size_of_val(&address.sun_path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path is {} bytes long; a Unix socket address holds at most {}", bytes.len(), size_of_val(&address.sun_path) - 1),
        ));
    }
    if bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path contains a NUL byte"));
    }
    for (to, &from) in address.sun_path.iter_mut().zip(bytes) {
        *to = libc::c_char::from_ne_bytes([from]);
    }
    Ok(address)
}

/// A structure size as `socklen_t` (every size passed here is a few hundred bytes at most).
fn socklen(size: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(size).unwrap_or(libc::socklen_t::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_full_queue_times_out_instead_of_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        // A queue of one waiting connection (the kernel admits one beyond the backlog), then full.
        // SAFETY: `listen` on a socket this test owns.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let _waiting = connect(&path, Duration::from_millis(100)).expect("first client is queued");
        let started = Instant::now();
        let error = connect(&path, Duration::from_millis(100)).expect_err("queue full");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn the_peer_of_a_socket_is_this_process() {
        let (a, _b) = UnixStream::pair().expect("pair");
        assert_eq!(peer_pid(&a).expect("peercred"), Some(std::process::id()));
    }

    #[test]
    fn a_path_too_long_for_an_address_is_refused() {
        let long = Path::new("/tmp").join("x".repeat(200));
        let error = connect(&long, Duration::from_millis(10)).expect_err("too long");
        assert!(error.to_string().contains("at most 107"), "{error}");
    }
}
