//! Host CPU weights for guests, the way an operator sets them today: each guest's QEMU (all its
//! threads) in a host cgroup of its own with a CPU weight, as libvirt's `<cputune><shares>` puts a
//! domain's QEMU in a cgroup and writes its weight.
//!
//! Works on either kind of host: cgroup v2 (`cpu.weight`, 1–10000, default 100) where the
//! unified hierarchy has the cpu controller, else the cgroup v1 cpu hierarchy (`cpu.shares`,
//! default 1024; a weight `w` is written as `w × 1024 / 100` shares). The groups are
//! `<hierarchy>/xsched-lab-<pid>-<start time>-<n>/<guest>`. They are removed, and the QEMUs moved
//! back where they were, when the [`HostWeights`] is dropped (also on panic), by the lab's exit
//! cleanup (QEMUs killed first), and at the next lab start for an owner that was killed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::{cleanup, Guest};

/// The default weight, as cgroup v2 counts it.
pub const DEFAULT_WEIGHT: u32 = 100;

/// The prefix of every group this module creates.
const PREFIX: &str = "xsched-lab-";

/// Why host weights could not be set up, set or removed.
#[derive(Debug, thiserror::Error)]
pub enum HostCgroupError {
    /// Neither a cgroup v2 hierarchy with the cpu controller nor a cgroup v1 cpu hierarchy is
    /// mounted.
    #[error("no cgroup cpu controller on this host: no cgroup2 mount lists cpu in cgroup.controllers and no cgroup v1 mount has the cpu option (read {mounts})")]
    NoCpuController {
        /// The mount table read.
        mounts: String,
    },
    /// A cgroup file or directory could not be read, written, made or removed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A weight is out of cgroup v2's range.
    #[error("cpu weight {weight} for guest {guest}: want 1 to 10000")]
    Weight {
        /// The guest.
        guest: String,
        /// The weight asked for.
        weight: u32,
    },
    /// A guest has no group here.
    #[error("guest {0} has no host cgroup in this set")]
    UnknownGuest(String),
}

fn io_error(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> HostCgroupError {
    let path = path.into();
    move |source| HostCgroupError::Io { what, path, source }
}

/// The host's cgroup hierarchy that has the cpu controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2, mounted here, with `cpu` in its `cgroup.controllers`.
    V2(PathBuf),
    /// A cgroup v1 hierarchy with the cpu controller, mounted here.
    V1(PathBuf),
}

impl Hierarchy {
    /// Finds the hierarchy from `/proc/self/mounts`: cgroup v2 when it has the cpu controller,
    /// else cgroup v1's cpu hierarchy.
    pub fn detect() -> Result<Self, HostCgroupError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(io_error("read", "/proc/self/mounts"))?;
        Self::from_mounts(&mounts, |dir| std::fs::read_to_string(dir.join("cgroup.controllers")).ok())
            .ok_or_else(|| HostCgroupError::NoCpuController { mounts: "/proc/self/mounts".into() })
    }

    /// The hierarchy in mount table `mounts`; `controllers` reads a cgroup2 mount's
    /// `cgroup.controllers`.
    fn from_mounts(mounts: &str, controllers: impl Fn(&Path) -> Option<String>) -> Option<Self> {
        let entries: Vec<(&str, &str, &str)> = mounts
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (_, dir, kind, options) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
                Some((dir, kind, options))
            })
            .collect();
        let v2 = entries.iter().find(|(dir, kind, _)| {
            *kind == "cgroup2" && controllers(Path::new(dir)).is_some_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        });
        let v1 = entries.iter().find(|(_, kind, options)| *kind == "cgroup" && options.split(',').any(|o| o == "cpu"));
        v2.map(|(dir, _, _)| Self::V2(PathBuf::from(dir))).or_else(|| v1.map(|(dir, _, _)| Self::V1(PathBuf::from(dir))))
    }

    /// Where it is mounted.
    pub fn mount(&self) -> &Path {
        match self {
            Self::V2(dir) | Self::V1(dir) => dir,
        }
    }

    /// The file holding a group's weight.
    pub fn weight_file(&self) -> &'static str {
        match self {
            Self::V2(_) => "cpu.weight",
            Self::V1(_) => "cpu.shares",
        }
    }

    /// What to write into [`Self::weight_file`] for a cgroup v2 weight.
    pub fn weight_value(&self, weight: u32) -> u64 {
        match self {
            Self::V2(_) => u64::from(weight),
            Self::V1(_) => u64::from(weight) * 1024 / u64::from(DEFAULT_WEIGHT),
        }
    }

    /// The group process `pid` is in, as a directory of this hierarchy (from `/proc/PID/cgroup`).
    fn group_of(&self, pid: u32) -> Result<PathBuf, HostCgroupError> {
        let path = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
        let relative = text.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, group) = (fields.next()?, fields.next()?, fields.next()?);
            let ours = match self {
                Self::V2(_) => controllers.is_empty(),
                Self::V1(_) => controllers.split(',').any(|c| c == "cpu"),
            };
            ours.then(|| group.trim_start_matches('/').to_owned())
        });
        Ok(self.mount().join(relative.unwrap_or_default()))
    }
}

/// One guest's group.
#[derive(Debug)]
struct Member {
    guest: String,
    qemu: u32,
    /// Where its QEMU was before.
    home: PathBuf,
    dir: PathBuf,
}

/// The guests' QEMUs, each in a host cgroup of its own whose CPU weight can be set; dropping it
/// moves them back and removes the groups.
#[derive(Debug)]
pub struct HostWeights {
    hierarchy: Hierarchy,
    parent: PathBuf,
    members: Vec<Member>,
}

/// Parent groups not yet removed, for the lab's exit cleanup.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HostWeights {
    /// Moves every guest's QEMU into a new group of the host's cpu hierarchy, at the default
    /// weight.
    pub fn create(guests: &[Guest]) -> Result<Self, HostCgroupError> {
        let hierarchy = Hierarchy::detect()?;
        let me = std::process::id();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let parent = hierarchy.mount().join(format!("{PREFIX}{me}-{}-{n}", cleanup::start_time(me).unwrap_or(0)));
        std::fs::create_dir(&parent).map_err(io_error("create cgroup", &parent))?;
        live().push(parent.clone());
        let mut weights = Self { hierarchy, parent, members: Vec::new() };
        weights.populate(guests)?;
        for g in guests {
            if !weights.holds_all_threads_of(g.name())? {
                return Err(HostCgroupError::Io { what: "move every thread of QEMU into", path: weights.parent.join(g.name()), source: io::ErrorKind::Other.into() });
            }
        }
        log::info!("lab: guests' QEMUs in host cgroups under {} ({})", weights.parent.display(), weights.hierarchy.weight_file());
        Ok(weights)
    }

    fn populate(&mut self, guests: &[Guest]) -> Result<(), HostCgroupError> {
        if let Hierarchy::V2(root) = &self.hierarchy {
            // The cpu controller must be on in every group above ours (the root's own children
            // included) for our children to get a cpu.weight.
            enable_cpu(root)?;
            enable_cpu(&self.parent)?;
        }
        for g in guests {
            let dir = self.parent.join(g.name());
            std::fs::create_dir(&dir).map_err(io_error("create cgroup", &dir))?;
            let home = self.hierarchy.group_of(g.qemu_pid())?;
            self.members.push(Member { guest: g.name().to_owned(), qemu: g.qemu_pid(), home, dir: dir.clone() });
            move_process(g.qemu_pid(), &dir)?;
        }
        Ok(())
    }

    /// Sets guest `guest`'s weight (cgroup v2's scale: 100 is the default; 1–10000).
    pub fn set(&self, guest: &str, weight: u32) -> Result<(), HostCgroupError> {
        if !(1..=10_000).contains(&weight) {
            return Err(HostCgroupError::Weight { guest: guest.to_owned(), weight });
        }
        let member = self.members.iter().find(|m| m.guest == guest).ok_or_else(|| HostCgroupError::UnknownGuest(guest.to_owned()))?;
        let file = member.dir.join(self.hierarchy.weight_file());
        std::fs::write(&file, self.hierarchy.weight_value(weight).to_string()).map_err(io_error("write", &file))
    }

    /// Each guest's weight as the host has it now (the weight file's own value).
    pub fn current(&self) -> Result<Vec<(String, u64)>, HostCgroupError> {
        self.members
            .iter()
            .map(|m| {
                let file = m.dir.join(self.hierarchy.weight_file());
                let text = std::fs::read_to_string(&file).map_err(io_error("read", &file))?;
                let value = text.trim().parse().map_err(|_| HostCgroupError::Io { what: "parse", path: file, source: io::ErrorKind::InvalidData.into() })?;
                Ok((m.guest.clone(), value))
            })
            .collect()
    }

    /// Whether every thread of guest `guest`'s QEMU is in its group (each thread's own
    /// `/proc/PID/task/TID/cgroup`).
    pub fn holds_all_threads_of(&self, guest: &str) -> Result<bool, HostCgroupError> {
        let member = self.members.iter().find(|m| m.guest == guest).ok_or_else(|| HostCgroupError::UnknownGuest(guest.to_owned()))?;
        let tasks = PathBuf::from(format!("/proc/{}/task", member.qemu));
        let threads = std::fs::read_dir(&tasks).map_err(io_error("list threads in", &tasks))?;
        for thread in threads.flatten() {
            let file = thread.path().join("cgroup");
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let relative = member.dir.strip_prefix(self.hierarchy.mount()).unwrap_or(&member.dir).display().to_string();
            let inside = text.lines().any(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, group) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                let ours = match self.hierarchy {
                    Hierarchy::V2(_) => controllers.is_empty(),
                    Hierarchy::V1(_) => controllers.split(',').any(|c| c == "cpu"),
                };
                ours && group.trim_start_matches('/') == relative
            });
            if !inside {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for HostWeights {
    fn drop(&mut self) {
        for m in &self.members {
            // A QEMU that is gone has left the group already.
            if let Err(e) = move_process(m.qemu, &m.home) {
                if std::path::Path::new(&format!("/proc/{}", m.qemu)).exists() {
                    log::warn!("lab: moving QEMU {} back to {}: {e}", m.qemu, m.home.display());
                }
            }
        }
        remove_group(&self.parent);
        live().retain(|p| p != &self.parent);
    }
}

/// Turns the cpu controller on for the children of v2 group `dir`.
fn enable_cpu(dir: &Path) -> Result<(), HostCgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let now = std::fs::read_to_string(&file).map_err(io_error("read", &file))?;
    if now.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    std::fs::write(&file, "+cpu").map_err(io_error("write", &file))
}

/// Moves process `pid` (all its threads) into group `dir`.
fn move_process(pid: u32, dir: &Path) -> Result<(), HostCgroupError> {
    let file = dir.join("cgroup.procs");
    std::fs::write(&file, pid.to_string()).map_err(io_error("write", &file))
}

/// Removes group `parent` and its children (each must be empty by now); says so on failure.
fn remove_group(parent: &Path) {
    if let Ok(children) = std::fs::read_dir(parent) {
        for child in children.flatten().filter(|c| c.file_type().is_ok_and(|t| t.is_dir())) {
            if let Err(e) = std::fs::remove_dir(child.path()) {
                log::warn!("lab: removing host cgroup {}: {e}", child.path().display());
            }
        }
    }
    match std::fs::remove_dir(parent) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => log::warn!("lab: removing host cgroup {}: {e}", parent.display()),
        _ => {}
    }
}

/// Removes every group still registered (the lab's exit cleanup, once the QEMUs are reaped).
pub(crate) fn remove_live() {
    let mut live = live();
    for parent in live.iter() {
        remove_group(parent);
    }
    live.clear();
}

/// Removes groups left by lab processes that are gone (named by their pid and start time).
pub(crate) fn sweep() {
    let Ok(hierarchy) = Hierarchy::detect() else { return };
    let Ok(entries) = std::fs::read_dir(hierarchy.mount()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut fields = name.strip_prefix(PREFIX).unwrap_or_default().split('-');
        let (Some(Ok(pid)), Some(Ok(start))) = (fields.next().map(str::parse::<u32>), fields.next().map(str::parse::<u64>)) else { continue };
        if cleanup::start_time(pid) != Some(start) {
            log::info!("lab: removing stale host cgroup {}", entry.path().display());
            remove_group(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
        cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

    #[test]
    fn a_v2_hierarchy_with_cpu_wins_else_v1s_cpu_mount() {
        // Hybrid (this machine): the unified hierarchy has no controllers; cpu is v1's.
        let none = |_: &Path| Some(String::new());
        assert_eq!(Hierarchy::from_mounts(HYBRID, none), Some(Hierarchy::V1("/sys/fs/cgroup/cpu".into())));
        // cpuacct alone is not cpu; a v1 "cpu,cpuacct" mount is.
        let joint = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        assert_eq!(Hierarchy::from_mounts(joint, none), Some(Hierarchy::V1("/sys/fs/cgroup/cpu,cpuacct".into())));
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let with_cpu = |_: &Path| Some("cpuset cpu io memory pids\n".to_owned());
        assert_eq!(Hierarchy::from_mounts(unified, with_cpu), Some(Hierarchy::V2("/sys/fs/cgroup".into())));
        assert_eq!(Hierarchy::from_mounts(unified, none), None);
        assert_eq!(Hierarchy::from_mounts("cgroup /x cgroup rw,cpuacct 0 0\n", none), None);
    }

    #[test]
    fn weights_are_written_in_each_hierarchys_own_units() {
        let (v2, v1) = (Hierarchy::V2("/a".into()), Hierarchy::V1("/b".into()));
        assert_eq!((v2.weight_file(), v2.weight_value(200)), ("cpu.weight", 200));
        // libvirt's default shares (1024) are v2's default weight (100).
        assert_eq!((v1.weight_file(), v1.weight_value(DEFAULT_WEIGHT), v1.weight_value(200)), ("cpu.shares", 1024, 2048));
    }
}
