//! What the tests on the pinned lab kernels share: the pin file of `$XSCHED_LAB_KERNEL` and the
//! kernel's files in the lab cache.

use std::path::{Path, PathBuf};

/// What to do when the lab kernel is missing.
const INSTALL_HINT: &str =
    "install it with `sudo scripts/install-deps.sh` (or `tests/lab/fetch-kernel.sh`), or point XSCHED_VMLINUX at a vmlinux with DWARF";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `KEY=VALUE` from the pin file of the kernel `$XSCHED_LAB_KERNEL` names (default `6.1`).
pub fn kernel_env(key: &str) -> String {
    let name = std::env::var("XSCHED_LAB_KERNEL").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "6.1".into());
    let path = repo_root().join("tests/lab/kernels").join(format!("{name}.env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{}: no {key}", path.display()))
}

/// The pinned lab kernel's directory in the lab cache; fails the test if it is not installed.
pub fn lab_kernel_dir() -> PathBuf {
    let cache = std::env::var_os("XSCHED_LAB_CACHE").filter(|p| !p.is_empty()).map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/xsched-lab"),
        PathBuf::from,
    );
    let dir = cache.join(format!("kernel-{}_{}", kernel_env("KERNEL_RELEASE"), kernel_env("KERNEL_VERSION")));
    assert!(
        dir.join(".complete").is_file() && dir.join("vmlinux").is_file() && dir.join("vmlinuz").is_file(),
        "the lab kernel is not installed in {}: {INSTALL_HINT}",
        dir.display()
    );
    dir
}
