//! The guest's initramfs: busybox, the lab's init scripts, `qemu_fw_cfg.ko`, the guest's spec, and
//! a few host programs busybox lacks (with the shared libraries they load).
//!
//! Written directly as an uncompressed `newc` cpio archive (no staging directory, no root needed for
//! the `/dev/console` node). The scripts in `tests/lab/` are compiled in, so a built `xsched-lab`
//! does not need the source tree.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::kernel::{KernelFiles, BUSYBOX};
use crate::{GuestSpec, LabError};

/// The guest-side scripts: (path in the guest, contents, mode bits).
const SCRIPTS: &[(&str, &str, u32)] = &[
    ("init", include_str!("../lab/init"), 0o755),
    ("etc/inittab", include_str!("../lab/inittab"), 0o644),
    ("lab/lib.sh", include_str!("../lab/lib.sh"), 0o644),
    ("lab/start", include_str!("../lab/start"), 0o755),
    ("lab/spawn", include_str!("../lab/spawn"), 0o755),
    ("lab/workload", include_str!("../lab/workload"), 0o755),
    ("lab/view", include_str!("../lab/view"), 0o755),
    ("lab/control", include_str!("../lab/control"), 0o755),
    ("lab/steer", include_str!("../lab/steer"), 0o755),
];

/// Directories every guest has (busybox applet directories are added from its own list).
const DIRS: &[&str] =
    &["bin", "dev", "etc", "lab", "lab/bin", "lib", "lib/modules", "proc", "root", "run", "sbin", "sys", "tmp"];

/// Host programs every guest gets beside busybox, at the same path: util-linux's `chrt`, since
/// Debian's static busybox has no chrt applet (for `chrt -i`, SCHED_IDLE, as an operator sets it).
const HOST_PROGRAMS: &[&str] = &["/usr/bin/chrt"];

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A `newc` cpio archive being written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    data: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self { data: Vec::new(), next_ino: 1 }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, contents: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), contents);
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.data
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), contents: &[u8]) {
        let ino = if path == "TRAILER!!!" { 0 } else { self.next_ino };
        self.next_ino = self.next_ino.wrapping_add(1);
        let name_size = path.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            u32::try_from(contents.len()).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // check
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(path.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.data.len().next_multiple_of(4);
        self.data.resize(padded, 0);
    }
}

/// The busybox applet paths (`bin/sh`, `usr/bin/awk`, ...), from `busybox --list-full`, once.
fn applets() -> Result<&'static [String], LabError> {
    static APPLETS: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    APPLETS
        .get_or_init(|| {
            let out = Command::new(BUSYBOX).arg("--list-full").output().map_err(|e| format!("{BUSYBOX}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{BUSYBOX} --list-full: {}", out.status));
            }
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().trim_start_matches('/').to_owned())
                .filter(|l| !l.is_empty())
                .collect())
        })
        .as_deref()
        .map_err(|reason| LabError::Setup { reason: reason.clone() })
}

/// A file for the guest: its path there (no leading `/`) and its contents.
type GuestFile = (String, Vec<u8>);

/// [`HOST_PROGRAMS`] and the shared libraries `ldd` says they load (the dynamic loader
/// included), as (path in the guest, contents), read once.
fn host_programs() -> Result<&'static [GuestFile], LabError> {
    static FILES: OnceLock<Result<Vec<GuestFile>, String>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let mut paths = BTreeSet::new();
            for program in HOST_PROGRAMS {
                let out = Command::new("ldd").arg(program).output().map_err(|e| format!("ldd {program}: {e}"))?;
                if !out.status.success() {
                    return Err(format!("ldd {program}: {} (is util-linux installed?)", String::from_utf8_lossy(&out.stderr).trim()));
                }
                paths.insert((*program).to_owned());
                paths.extend(shared_libraries(&String::from_utf8_lossy(&out.stdout)));
            }
            paths
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
                    Ok((path.trim_start_matches('/').to_owned(), bytes))
                })
                .collect()
        })
        .as_deref()
        .map_err(|reason| LabError::Setup { reason: reason.clone() })
}

/// The files named in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
fn shared_libraries(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=>").map_or(line, |(_, to)| to.trim()).split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, LabError> {
    std::fs::read(path).map_err(|e| LabError::io("read", path, e))
}

/// Builds the initramfs for `spec`: an uncompressed `newc` cpio archive.
pub fn build(spec: &GuestSpec, kernel: &KernelFiles) -> Result<Vec<u8>, LabError> {
    let busybox = read(Path::new(BUSYBOX))?;
    let module = read(&kernel.fw_cfg_module)?;
    let applets = applets()?;
    let programs = host_programs()?;

    let mut dirs: BTreeSet<String> = DIRS.iter().map(|d| (*d).to_owned()).collect();
    for file in applets.iter().chain(programs.iter().map(|(path, _)| path)) {
        let mut parent = Path::new(file).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }

    let mut cpio = Cpio::new();
    // BTreeSet order puts every parent before its children ("usr" < "usr/bin").
    for dir in &dirs {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    // A host program takes the place of a busybox applet of the same path.
    for applet in applets.iter().filter(|a| a.as_str() != "bin/busybox" && !programs.iter().any(|(p, _)| p == *a)) {
        cpio.symlink(applet, "/bin/busybox");
    }
    for (path, contents) in programs {
        cpio.file(path, 0o755, contents);
    }
    for (path, contents, mode) in SCRIPTS {
        cpio.file(path, *mode, contents.as_bytes());
    }
    cpio.file("lib/modules/qemu_fw_cfg.ko", 0o644, &module);
    cpio.file("etc/lab.conf", 0o644, spec.lab_conf().as_bytes());
    cpio.file("etc/lab.workloads", 0o644, spec.lab_workloads().as_bytes());
    Ok(cpio.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_libraries_and_the_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5b)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f5c)\n";
        assert_eq!(shared_libraries(ldd), ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    }

    #[test]
    fn newc_layout() {
        let mut cpio = Cpio::new();
        cpio.file("a", 0o644, b"xyz");
        let bytes = cpio.finish();
        // Header (110 bytes) + "a\0" padded to 112, then 3 data bytes padded to 4.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081a4");
        assert_eq!(&bytes[54..62], b"00000003");
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz");
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
