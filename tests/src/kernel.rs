//! The pinned guest kernels and the lab cache that holds them.
//!
//! Each file `tests/lab/kernels/NAME.env` pins one kernel (release + Debian version) and is the one
//! place that names it; NAME (`6.1`, `6.12`, `7.3`) is how a user chooses it. [`KERNEL_ENV`]
//! (`XSCHED_LAB_KERNEL`) chooses the kernel of every guest a process boots, [`DEFAULT_KERNEL`] when
//! unset; [`GuestSpec::kernel`](crate::GuestSpec::kernel) overrides it for one guest.
//!
//! `tests/lab/fetch-kernel.sh [NAME...]` puts a kernel's files into
//! `${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/`, and
//! [`KernelFiles::ensure`] runs it for the kernel a guest needs when its files are missing (or
//! `scripts/install-deps.sh`, which installs the host tools and fetches every pin, when tools are
//! missing too), so `cargo test` works on a fresh clone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use crate::LabError;

/// Every `tests/lab/kernels/NAME.env`, compiled in: (NAME, contents), oldest kernel first.
const PINS: &[(&str, &str)] =
    &[("6.1", include_str!("../lab/kernels/6.1.env")), ("6.12", include_str!("../lab/kernels/6.12.env")), ("7.3", include_str!("../lab/kernels/7.3.env"))];

/// Environment variable choosing the kernel (a pin's name) of every guest a process boots.
pub const KERNEL_ENV: &str = "XSCHED_LAB_KERNEL";

/// The pin guests boot when [`KERNEL_ENV`] is unset or empty.
pub const DEFAULT_KERNEL: &str = "6.1";

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "XSCHED_LAB_CACHE";

/// The static busybox the initramfs is built from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The QEMU binary the lab runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// One pinned guest kernel: its name, release and Debian package version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPin {
    /// The pin's name, its file's name without `.env`, e.g. `6.12`.
    pub name: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.1.192-2`.
    pub version: String,
}

impl KernelPin {
    /// Every pinned kernel, oldest first.
    pub fn all() -> Vec<Self> {
        PINS.iter().map(|(name, text)| Self::parse(name, text)).collect()
    }

    /// The names of every pinned kernel, oldest first.
    pub fn names() -> Vec<&'static str> {
        PINS.iter().map(|(name, _)| *name).collect()
    }

    /// The pin called `name`; an error naming the pinned kernels if there is none.
    pub fn named(name: &str) -> Result<Self, LabError> {
        Self::all().into_iter().find(|pin| pin.name == name).ok_or_else(|| LabError::UnknownKernel {
            name: name.to_owned(),
            known: Self::names().join(", "),
        })
    }

    /// The kernel [`KERNEL_ENV`] chooses ([`DEFAULT_KERNEL`] when it is unset or empty).
    pub fn selected() -> Result<Self, LabError> {
        let setting = std::env::var_os(KERNEL_ENV).map(|v| v.to_string_lossy().into_owned());
        Self::select(setting.as_deref())
    }

    /// The pin a value of [`KERNEL_ENV`] chooses.
    fn select(setting: Option<&str>) -> Result<Self, LabError> {
        Self::named(setting.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_KERNEL))
    }

    /// Parses `KEY=VALUE` lines (`#` starts a comment); unknown keys are ignored.
    fn parse(name: &str, text: &str) -> Self {
        let mut pin = Self { name: name.to_owned(), release: String::new(), version: String::new() };
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

/// Parses a pin's name (see [`KernelPin::named`]).
impl FromStr for KernelPin {
    type Err = LabError;

    fn from_str(name: &str) -> Result<Self, LabError> {
        Self::named(name)
    }
}

/// `NAME (RELEASE, Debian VERSION)`.
impl fmt::Display for KernelPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, Debian {})", self.name, self.release, self.version)
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

/// The repository's `tests/lab/fetch-kernel.sh`.
fn fetch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab").join("fetch-kernel.sh")
}

/// Paths of one pinned kernel's files in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// `qemu_fw_cfg.ko` (decompressed), loaded by the guest's init so `-device vmcoreinfo` works.
    pub fw_cfg_module: PathBuf,
}

impl KernelFiles {
    /// Where `pin`'s files are (or would be) in the cache.
    pub fn expected(pin: &KernelPin) -> Self {
        let dir = cache_dir().join(pin.dir_name());
        Self {
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            fw_cfg_module: dir.join("qemu_fw_cfg.ko"),
            pin: pin.clone(),
            dir,
        }
    }

    /// Whether every file of the kernel, and every host tool the lab runs, is present.
    pub fn is_complete(&self) -> bool {
        self.files_present() && tools_present()
    }

    fn files_present(&self) -> bool {
        self.dir.join(".complete").is_file()
            && [&self.vmlinuz, &self.vmlinux, &self.config, &self.fw_cfg_module].iter().all(|p| p.is_file())
    }

    /// `pin`'s files if they and the host tools are present, else an error naming the command that
    /// installs them.
    pub fn locate(pin: &KernelPin) -> Result<Self, LabError> {
        let files = Self::expected(pin);
        if files.is_complete() {
            Ok(files)
        } else {
            Err(LabError::Setup {
                reason: format!(
                    "guest kernel {pin} or tools missing (looked in {}); run: sudo {}",
                    files.dir.display(),
                    install_script().display()
                ),
            })
        }
    }

    /// `pin`'s files, fetched first if anything is missing: with `tests/lab/fetch-kernel.sh NAME`
    /// when only the kernel is, with `scripts/install-deps.sh` when host tools are missing too.
    ///
    /// Runs a script at most once per kernel and process; the scripts serialize concurrent fetches.
    pub fn ensure(pin: &KernelPin) -> Result<Self, LabError> {
        static ENSURED: Mutex<BTreeMap<String, Result<KernelFiles, String>>> = Mutex::new(BTreeMap::new());
        let mut ensured = ENSURED.lock().unwrap_or_else(PoisonError::into_inner);
        ensured
            .entry(pin.name.clone())
            .or_insert_with(|| Self::ensure_uncached(pin).map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| LabError::Setup { reason })
    }

    fn ensure_uncached(pin: &KernelPin) -> Result<Self, LabError> {
        if let Ok(files) = Self::locate(pin) {
            return Ok(files);
        }
        let mut command = if tools_present() {
            let mut fetch = Command::new(fetch_script());
            fetch.arg(&pin.name).stdout(std::process::Stdio::null());
            fetch
        } else {
            Command::new(install_script())
        };
        let script = PathBuf::from(command.get_program());
        let shown = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|word| word.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        log::info!("lab: guest kernel {pin} or tools missing; running {shown}");
        eprintln!("xsched-lab: guest kernel {pin} or tools missing; running {shown}");
        let status = command.status().map_err(|e| LabError::io("run setup script", &script, e))?;
        if !status.success() {
            return Err(LabError::Setup { reason: format!("{shown} failed ({status}); run it by hand (as root)") });
        }
        Self::locate(pin)
    }
}

/// Whether the host tools the lab runs (busybox, QEMU) are installed.
fn tools_present() -> bool {
    Path::new(BUSYBOX).is_file() && find_in_path(QEMU).is_some()
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
        let pin = KernelPin::parse("7.0", "# c\nKERNEL_RELEASE=7.0.1+x~1\n\n KERNEL_VERSION = 7.0.1-1~y\nOTHER=1\n");
        assert_eq!(pin, KernelPin { name: "7.0".into(), release: "7.0.1+x~1".into(), version: "7.0.1-1~y".into() });
        assert_eq!(pin.dir_name(), "kernel-7.0.1+x~1_7.0.1-1~y");
        assert_eq!(pin.to_string(), "7.0 (7.0.1+x~1, Debian 7.0.1-1~y)");
    }

    #[test]
    fn every_pin_file_is_compiled_in_and_complete() -> Result<(), LabError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab").join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| LabError::io("list", &dir, e))?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".env").map(str::to_owned))
            .collect();
        on_disk.sort();
        let mut compiled: Vec<&str> = KernelPin::names();
        compiled.sort_unstable();
        assert_eq!(on_disk, compiled, "PINS must list every file in {}", dir.display());
        for pin in KernelPin::all() {
            assert!(!pin.release.is_empty() && !pin.version.is_empty(), "{}: release and version", pin.name);
            assert!(pin.release.starts_with(&format!("{}.", pin.name)), "{pin}: the name is the release's version");
        }
        assert_eq!(KernelPin::named("6.12")?.release, "6.12.117+deb12-cloud-amd64");
        assert_eq!(KernelPin::named("6.1")?.version, "6.1.192-2");
        assert_eq!(KernelPin::named("7.3")?.version, "7.3.4-1~bpo13+1");
        Ok(())
    }

    #[test]
    fn the_setting_selects_a_pin_and_a_bad_name_lists_the_pins() -> Result<(), LabError> {
        assert_eq!(KernelPin::select(None)?.name, DEFAULT_KERNEL);
        assert_eq!(KernelPin::select(Some(""))?.name, DEFAULT_KERNEL);
        assert_eq!(KernelPin::select(Some("6.12"))?.name, "6.12");
        assert_eq!("6.1".parse::<KernelPin>()?, KernelPin::named("6.1")?);
        let err = KernelPin::select(Some("6.2")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("\"6.2\"") && err.contains("6.1, 6.12, 7.3"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        Ok(())
    }

    #[test]
    fn each_pin_has_its_own_cache_directory() -> Result<(), LabError> {
        let (old, new) = (KernelFiles::expected(&KernelPin::named("6.1")?), KernelFiles::expected(&KernelPin::named("6.12")?));
        assert_ne!(old.dir, new.dir);
        assert_eq!(new.dir.file_name().and_then(|n| n.to_str()), Some("kernel-6.12.117+deb12-cloud-amd64_6.12.117-1~deb12u1"));
        assert_eq!(new.vmlinuz, new.dir.join("vmlinuz"));
        Ok(())
    }
}
