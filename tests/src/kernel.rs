//! The pinned guest kernel and the lab cache that holds it.
//!
//! `tests/lab/kernel.env` is the one place that names the kernel; `tests/lab/fetch-kernel.sh` puts
//! its files into `${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/`, and
//! [`KernelFiles::ensure`] runs `scripts/install-deps.sh` (which ends with that fetch) when anything
//! is missing, so `cargo test` works on a fresh clone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::LabError;

/// `tests/lab/kernel.env`, compiled in.
const KERNEL_ENV: &str = include_str!("../lab/kernel.env");

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "XSCHED_LAB_CACHE";

/// The static busybox the initramfs is built from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The QEMU binary the lab runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// The kernel release and Debian package version every lab guest boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPin {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.1.192-2`.
    pub version: String,
}

impl KernelPin {
    /// The pin from `tests/lab/kernel.env`.
    pub fn pinned() -> Self {
        Self::parse(KERNEL_ENV)
    }

    /// Parses `KEY=VALUE` lines (`#` starts a comment); unknown keys are ignored.
    fn parse(text: &str) -> Self {
        let mut pin = Self { release: String::new(), version: String::new() };
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("KERNEL_RELEASE", v)) => pin.release = v.to_owned(),
                Some(("KERNEL_VERSION", v)) => pin.version = v.to_owned(),
                _ => {}
            }
        }
        pin
    }

    /// The directory name inside the cache: `kernel-<release>_<version>`.
    pub fn dir_name(&self) -> String {
        format!("kernel-{}_{}", self.release, self.version)
    }
}

/// The lab cache directory: `$XSCHED_LAB_CACHE`, else `$HOME/.cache/xsched-lab`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("xsched-lab")
}

/// The repository's `scripts/install-deps.sh`.
pub fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join("install-deps.sh")
}

/// Paths of the pinned kernel's files in the cache.
#[derive(Clone, Debug)]
pub struct KernelFiles {
    /// Which kernel these are.
    pub pin: KernelPin,
    /// The cache directory holding them.
    pub dir: PathBuf,
    /// The bootable compressed kernel (`-kernel`).
    pub vmlinuz: PathBuf,
    /// The uncompressed kernel with DWARF and BTF (from the `-dbg` package).
    pub vmlinux: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
    /// `qemu_fw_cfg.ko`, loaded by the guest's init so `-device vmcoreinfo` works.
    pub fw_cfg_module: PathBuf,
}

impl KernelFiles {
    /// Where the pinned kernel's files are (or would be) in the cache.
    pub fn expected() -> Self {
        let pin = KernelPin::pinned();
        let dir = cache_dir().join(pin.dir_name());
        Self {
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            fw_cfg_module: dir.join("qemu_fw_cfg.ko"),
            pin,
            dir,
        }
    }

    /// Whether every file, and every host tool the lab runs, is present.
    pub fn is_complete(&self) -> bool {
        self.dir.join(".complete").is_file()
            && [&self.vmlinuz, &self.vmlinux, &self.config, &self.fw_cfg_module].iter().all(|p| p.is_file())
            && Path::new(BUSYBOX).is_file()
            && find_in_path(QEMU).is_some()
    }

    /// The kernel files if complete, else an error naming the command that installs them.
    pub fn locate() -> Result<Self, LabError> {
        let files = Self::expected();
        if files.is_complete() {
            Ok(files)
        } else {
            Err(LabError::Setup {
                reason: format!(
                    "guest kernel or tools missing (looked in {}); run: sudo {}",
                    files.dir.display(),
                    install_script().display()
                ),
            })
        }
    }

    /// The kernel files, running `scripts/install-deps.sh` first if anything is missing.
    ///
    /// Runs the script at most once per process; the script itself serializes concurrent fetches.
    pub fn ensure() -> Result<Self, LabError> {
        static ENSURED: OnceLock<Result<KernelFiles, String>> = OnceLock::new();
        ENSURED
            .get_or_init(|| Self::ensure_uncached().map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| LabError::Setup { reason })
    }

    fn ensure_uncached() -> Result<Self, LabError> {
        if let Ok(files) = Self::locate() {
            return Ok(files);
        }
        let script = install_script();
        log::info!("lab: kernel or tools missing; running {}", script.display());
        eprintln!("xsched-lab: guest kernel or tools missing; running {}", script.display());
        let status = Command::new(&script)
            .status()
            .map_err(|e| LabError::io("run install script", &script, e))?;
        if !status.success() {
            return Err(LabError::Setup {
                reason: format!("{} failed ({status}); run it by hand (as root)", script.display()),
            });
        }
        Self::locate()
    }
}

/// The first executable called `name` on `$PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_parses_the_env_file() {
        let pin = KernelPin::parse("# c\nKERNEL_RELEASE=6.1.0-1-x\n\nKERNEL_VERSION=6.1.1-1\nOTHER=1\n");
        assert_eq!(pin, KernelPin { release: "6.1.0-1-x".into(), version: "6.1.1-1".into() });
        assert_eq!(pin.dir_name(), "kernel-6.1.0-1-x_6.1.1-1");
        let real = KernelPin::pinned();
        assert!(!real.release.is_empty() && !real.version.is_empty());
    }
}
