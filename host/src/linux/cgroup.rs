//! cgroup identity of tasks: the path of a task's cgroup in the default (v2) hierarchy.

use std::collections::HashMap;
use std::sync::Arc;

use crate::memory::Gva;
use crate::profile::Profile;

use super::layout::Field;
use super::virt::KernelMemory;
use super::LinuxError;

/// Deepest cgroup path followed.
const MAX_DEPTH: usize = 64;
/// Longest cgroup name read (`NAME_MAX`).
const MAX_NAME: usize = 255;

/// Offsets needed to go from a task to its cgroup's path.
#[derive(Clone, Debug)]
pub struct CgroupLayout {
    /// `task_struct.cgroups` (a `css_set *`).
    pub task_cgroups: Field,
    /// `css_set.dfl_cgrp`.
    pub dfl_cgrp: Field,
    /// `cgroup.kn`.
    pub kn: Field,
    /// `kernfs_node.name`.
    pub kn_name: Field,
    /// `kernfs_node.parent`.
    pub kn_parent: Field,
}

impl CgroupLayout {
    /// Resolves the layout from a profile.
    pub fn from_profile(p: &Profile) -> Result<Self, LinuxError> {
        Ok(Self {
            task_cgroups: Field::scalar(p, "task_struct", "cgroups")?,
            dfl_cgrp: Field::scalar(p, "css_set", "dfl_cgrp")?,
            kn: Field::scalar(p, "cgroup", "kn")?,
            kn_name: Field::scalar(p, "kernfs_node", "name")?,
            // `__parent` from Linux 6.15 on (see `spec::KERNFS_PARENT`).
            kn_parent: Field::scalar(p, "kernfs_node", "parent").or_else(|_| Field::scalar(p, "kernfs_node", "__parent"))?,
        })
    }
}

/// Resolves cgroup paths, caching them per `css_set` (many tasks share one). The paths are
/// shared: every task of a `css_set` holds the same string.
#[derive(Debug, Default)]
pub struct CgroupResolver {
    by_css_set: HashMap<Gva, Arc<str>>,
}

impl CgroupResolver {
    /// The cgroup v2 path (`/`, `/g1/sub`) of the task at `task`, as `/proc/PID/cgroup` shows it.
    pub fn path_of<K: KernelMemory + ?Sized>(&mut self, mem: &K, l: &CgroupLayout, task: Gva) -> Result<Arc<str>, LinuxError> {
        let css_set = mem.read_ptr(l.task_cgroups.at(task)?)?;
        self.path_of_css_set(mem, l, css_set)
    }

    /// The cgroup v2 path of the tasks whose `cgroups` is `css_set`.
    pub fn path_of_css_set<K: KernelMemory + ?Sized>(&mut self, mem: &K, l: &CgroupLayout, css_set: Gva) -> Result<Arc<str>, LinuxError> {
        if let Some(path) = self.by_css_set.get(&css_set) {
            return Ok(path.clone());
        }
        let cgroup = mem.read_ptr(l.dfl_cgrp.at(css_set)?)?;
        let mut kn = mem.read_ptr(l.kn.at(cgroup)?)?;
        let mut names = Vec::new();
        loop {
            let parent = mem.read_ptr(l.kn_parent.at(kn)?)?;
            if parent == Gva(0) {
                break; // The root's name is the hierarchy's, not part of the path.
            }
            if names.len() >= MAX_DEPTH {
                return Err(LinuxError::CgroupTooDeep { css_set, limit: MAX_DEPTH });
            }
            names.push(read_c_string(mem, mem.read_ptr(l.kn_name.at(kn)?)?, MAX_NAME)?);
            kn = parent;
        }
        names.reverse();
        let path: Arc<str> = Arc::from(format!("/{}", names.join("/")));
        self.by_css_set.insert(css_set, Arc::clone(&path));
        Ok(path)
    }

    /// Forgets every path: `css_set`s are freed and reused, and cgroups renamed.
    pub fn clear(&mut self) {
        self.by_css_set.clear();
    }
}

/// Reads a NUL-terminated string of at most `max` bytes at `va` (lossily decoded).
pub fn read_c_string<K: KernelMemory + ?Sized>(mem: &K, va: Gva, max: usize) -> Result<String, LinuxError> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 64];
    while bytes.len() <= max {
        let at = va.checked_add(bytes.len() as u64).ok_or(LinuxError::StringWraps { at: va })?;
        // Never cross into the next page unasked: it may be unmapped.
        let n = chunk.len().min(crate::memory::to_usize(crate::memory::PAGE_SIZE - at.page_offset()));
        mem.read_virt(at, &mut chunk[..n])?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Err(LinuxError::StringTooLong { at: va, max })
}
