//! A file mapped whole (QEMU's RAM file, a core dump) whose shrinking is an error, not a crash.
//!
//! The mapping is registered with [`sigbus`](super::sigbus): a page past the file's new end reads
//! as zeros instead of killing xsched, and every access asks afterwards whether that happened
//! ([`MappedFile::intact`], one atomic load), so the caller gets [`MemoryError::Shrunk`] rather
//! than the zeros. Once broken a mapping stays broken: every later access fails too, even one
//! inside what is left of the file, because a file that shrank under a guest (or a dump being
//! rewritten) no longer holds the memory that was attached.
//!
//! [`MappedFile::check`] looks at the file itself (two system calls, for once per snapshot, not
//! per read): a shrink no access has hit yet, and a path that now names another file (a guest
//! restarted with a new RAM file at the same path, a dump replaced by a rename). A file that is
//! only unlinked stays valid: the mapping holds it, and QEMU's does too.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::sigbus::Guard;
use super::{to_usize, MemoryError};

/// `HUGETLBFS_MAGIC` of `linux/magic.h`: the `f_type` of a hugetlbfs mount, whose pages are huge.
const HUGETLBFS_MAGIC: libc::__fsword_t = 0x9584_58f6;

/// How a file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only (a core dump).
    ReadOnly,
    /// Shared and writable (QEMU's RAM file: writes reach the guest).
    ReadWrite,
}

/// A file mapped whole, guarded against SIGBUS.
#[derive(Debug)]
pub struct MappedFile {
    // Declared before `map`, so dropped first: the range is unregistered before it is unmapped.
    guard: Guard,
    map: MmapRaw,
    access: Access,
    file: File,
    path: PathBuf,
    len: u64,
    /// `(st_dev, st_ino)` of the file mapped.
    identity: (u64, u64),
}

impl MappedFile {
    /// Opens and maps the file at `path`, which must not be empty.
    pub fn open(path: &Path, access: Access) -> Result<Self, MemoryError> {
        let io = |source| MemoryError::Io { path: path.to_path_buf(), source };
        let file = crate::files::open_regular(OpenOptions::new().read(true).write(access == Access::ReadWrite), path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.len() == 0 {
            return Err(MemoryError::BadFile { path: path.to_path_buf(), reason: "the file is empty".into() });
        }
        let map = match access {
            Access::ReadOnly => MmapOptions::new().map_raw_read_only(&file),
            Access::ReadWrite => MmapOptions::new().map_raw(&file),
        }
        .map_err(io)?;
        let guard = Guard::register(map.as_ptr(), map.len(), page_granule(&file))
            .map_err(|e| MemoryError::BadFile { path: path.to_path_buf(), reason: e.to_string() })?;
        // The mapping's own length (memmap2 measured the file again): what the guard covers.
        let len = map.len() as u64;
        Ok(Self { guard, map, access, file, path: path.to_path_buf(), len, identity: (meta.dev(), meta.ino()) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping's length: the file's size when it was mapped.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Copies `buf.len()` bytes from file offset `offset` into `buf`. A page past the file's end
    /// copies as zeros: call [`intact`](Self::intact) before using what was copied.
    ///
    /// # Panics
    /// If the range is not inside the mapping: callers check accesses against its length first.
    pub fn copy_to(&self, offset: u64, buf: &mut [u8]) {
        let at = self.span(offset, buf.len());
        // SAFETY: `span` checked that `at..at + buf.len()` lies inside the mapping, which lives as
        // long as `self`. The bytes may change under us (a running guest): a raw byte copy never
        // forms a Rust reference to them. A page lost to a shrink reads as zeros (module docs).
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(at), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` to file offset `offset`. A page past the file's end takes the bytes nowhere:
    /// call [`intact`](Self::intact) to know.
    ///
    /// # Panics
    /// If the range is not inside the mapping, or the mapping is read-only.
    pub fn copy_from(&mut self, offset: u64, data: &[u8]) {
        assert_eq!(self.access, Access::ReadWrite, "write to a read-only mapping of {}", self.path.display());
        let at = self.span(offset, data.len());
        // SAFETY: as in `copy_to`; the mapping is writable and cannot overlap `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(at), data.len()) }
    }

    /// Fails with [`MemoryError::Shrunk`] if any access since the file was mapped met its end.
    #[inline]
    pub fn intact(&self) -> Result<(), MemoryError> {
        if self.guard.faulted() {
            return Err(self.shrunk());
        }
        Ok(())
    }

    /// [`intact`](Self::intact), and the file itself: no smaller than when it was mapped, and
    /// still the file its path names (unlinked is fine).
    pub fn check(&self) -> Result<(), MemoryError> {
        self.intact()?;
        let io = |source| MemoryError::Io { path: self.path.clone(), source };
        if self.file.metadata().map_err(io)?.len() < self.len {
            return Err(self.shrunk());
        }
        match std::fs::metadata(&self.path) {
            Ok(now) if (now.dev(), now.ino()) != self.identity => {
                Err(MemoryError::Replaced { path: self.path.clone(), mapped: self.identity.1, now: now.ino() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("{} was unlinked; its mapping stays valid", self.path.display());
                Ok(())
            }
            Err(e) => Err(io(e)),
            Ok(_) => Ok(()),
        }
    }

    /// The whole mapping as bytes.
    ///
    /// # Safety
    /// Nothing may write to the file while the slice lives. (A shrink meanwhile is no undefined
    /// behaviour, the lost pages read as zeros: check [`intact`](Self::intact) after use.)
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes long and lives as long as `self`; the caller
        // promises that nothing writes to it meanwhile.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// `offset..offset + len` as a checked offset into the mapping.
    fn span(&self, offset: u64, len: usize) -> usize {
        let at = to_usize(offset);
        assert!(at.checked_add(len).is_some_and(|end| end <= self.map.len()), "access {at:#x}+{len:#x} outside the mapping of {}", self.path.display());
        at
    }

    #[cold]
    #[inline(never)]
    fn shrunk(&self) -> MemoryError {
        // fstat of a descriptor this process holds open does not fail in practice.
        let now = self.file.metadata().map_or(0, |m| m.len());
        MemoryError::Shrunk { path: self.path.clone(), now, was: self.len }
    }
}

/// The size of the pages mapping `file`: its huge page size on hugetlbfs, else the base page.
fn page_granule(file: &File) -> usize {
    // SAFETY: sysconf has no preconditions.
    let base = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // SAFETY: `fs` is a valid out-parameter and the descriptor is open.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0 && fs.f_type == HUGETLBFS_MAGIC {
        return usize::try_from(fs.f_bsize).ok().filter(|b| b.is_power_of_two()).map_or(base, |b| b.max(base));
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const PAGE: u64 = 4096;

    fn temp_file(dir: &tempfile::TempDir, name: &str, pages: u64) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![0x5a; to_usize(pages * PAGE)]).expect("write");
        path
    }

    fn truncate(path: &Path, len: u64) {
        OpenOptions::new().write(true).open(path).expect("open").set_len(len).expect("truncate");
    }

    #[test]
    fn an_unlinked_file_stays_readable_and_a_replaced_one_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = temp_file(&dir, "ram", 2);
        let map = MappedFile::open(&path, Access::ReadOnly).expect("map");
        std::fs::remove_file(&path).expect("unlink");
        map.check().expect("unlinked: the mapping still holds the file");
        let mut b = [0u8; 4];
        map.copy_to(PAGE, &mut b);
        map.intact().expect("intact");
        assert_eq!(b, [0x5a; 4]);
        temp_file(&dir, "ram", 2);
        let error = map.check().expect_err("replaced");
        assert!(matches!(error, MemoryError::Replaced { .. }), "{error}");
        assert!(error.to_string().contains("was replaced while mapped"), "{error}");
    }

    #[test]
    fn a_shrink_no_access_met_yet_is_found_by_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = temp_file(&dir, "ram", 4);
        let map = MappedFile::open(&path, Access::ReadOnly).expect("map");
        truncate(&path, PAGE);
        map.intact().expect("no access met the end yet");
        let error = map.check().expect_err("shrunk");
        assert!(matches!(error, MemoryError::Shrunk { now: PAGE, was, .. } if was == 4 * PAGE), "{error}");
    }

    /// Set in the child process of the test below.
    const CHILD: &str = "XSCHED_TEST_SIGBUS_CHILD";

    /// The handler passes a fault outside xsched's mappings on: the process still dies of it.
    /// Tried in a child (this test binary run again for this test alone), which first recovers
    /// from a fault in a guarded mapping, then touches an unguarded one past its file's end.
    #[test]
    fn a_sigbus_outside_guarded_mappings_still_kills() {
        if let Some(dir) = std::env::var_os(CHILD) {
            child(Path::new(&dir));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "memory::mapped::tests::a_sigbus_outside_guarded_mappings_still_kills", "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the child");
        // A handler that swallowed the fault would make the child fault forever.
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().expect("kill");
                panic!("the child neither died of SIGBUS nor exited");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("recovered in the guarded mapping"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?}: {stdout}", out.status);
    }

    fn child(dir: &Path) -> ! {
        // Die without leaving a core file behind.
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `none` is a valid limit.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        let guarded = dir.join("guarded");
        std::fs::write(&guarded, vec![1u8; to_usize(2 * PAGE)]).expect("write");
        let map = MappedFile::open(&guarded, Access::ReadOnly).expect("map");
        truncate(&guarded, 0);
        map.copy_to(PAGE, &mut [0u8; 8]);
        assert!(matches!(map.intact(), Err(MemoryError::Shrunk { .. })));
        println!("recovered in the guarded mapping");
        let unguarded = dir.join("unguarded");
        std::fs::write(&unguarded, vec![1u8; to_usize(2 * PAGE)]).expect("write");
        let file = File::open(&unguarded).expect("open");
        let raw = MmapOptions::new().map_raw_read_only(&file).expect("map");
        truncate(&unguarded, 0);
        // SAFETY: inside the mapping; the page lies past the file's end, so this raises SIGBUS.
        let byte = unsafe { raw.as_ptr().add(to_usize(PAGE)).read_volatile() };
        println!("survived a SIGBUS outside the guarded mappings (read {byte})");
        std::process::exit(0);
    }
}
