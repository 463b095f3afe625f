//! Synthetic guest kernels: in-memory images of a Linux guest's tasks and runqueues, laid out
//! from a profile, with the ground truth a correct reader must read back.
//!
//! [`build`] lays out, in an [`ImageMemory`] seen through [`DirectMapped`] at [`DIRECT_MAP_BASE`],
//! what the read side walks:
//!
//! - `init_task` heading the `tasks` list of processes; each process's `signal_struct` heading
//!   its `thread_head` list of threads; per task `pid`, `tgid`, `comm`, state, `start_time`,
//!   priorities, `se` fields, `sched_task_group`, `cred->uid`;
//! - `cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` → `kernfs_node` name and parent chains, for the
//!   root and nested child groups, each with its `task_group`;
//! - one `struct rq` per CPU: `curr`, `idle`, counters, a red-black tree (correctly coloured, with
//!   right parent pointers, ordered by vruntime) of the queued `sched_entity.run_node`s in the root
//!   `cfs_rq.tasks_timeline`, group entities whose `my_q` is the group's own `cfs_rq` with its own
//!   tree (the running task's group chain as `cfs_rq.curr`, out of the trees as in the kernel), and
//!   the real-time queues (`rt.active.bitmap` and `queue[prio]` lists).
//!
//! Every offset and size comes from the profile, resolved here independently of the reader's own
//! layouts (so a wrong field name on either side shows up as a mismatch). [`build`] returns the
//! addresses [`SnapshotReader::new`] takes and a [`GroundTruth`]: every [`GuestTask`] as a correct
//! [`SnapshotReader::read`] returns it, each CPU's expected runqueue, and where every object and
//! written field lies (for tests that corrupt them).
//!
//! Used by the synthetic-image tests (clean and hostile images, randomized corruption), fuzzing and
//! the snapshot benchmark.

use std::path::{Path, PathBuf};

use crate::memory::{Gpa, GuestMemory, Gva, ImageMemory, MemoryError};
use crate::profile::{Profile, ProfileError};

use super::incremental::ForkCounters;
use super::runqueue::RunqueueSnapshot;
use super::snapshot::{GuestTask, SnapshotReader};
use super::virt::{DirectMapped, KernelMemory};
use super::LinuxError;

mod layout;
mod offsets;

use layout::{Builder, Image};
use offsets::Offsets;

/// Where the image's physical address 0 appears in kernel-virtual memory (the x86-64 direct map
/// without KASLR).
pub const DIRECT_MAP_BASE: Gva = Gva(0xffff_8880_0000_0000);

/// Bytes of zeroed scratch space at the end of every image, for tests that lay out extra
/// (hostile) structures.
pub const SCRATCH_BYTES: u64 = 64 << 10;

/// Alignment of every object in the image (a cache line, as slab objects of these sizes are).
const ALIGN: u64 = 64;

/// Physical page 0 stays empty: a null-ish pointer never lands in a structure.
const FIRST_OBJECT: u64 = 0x1000;

/// `TASK_COMM_LEN`: `comm` holds at most 15 bytes and a NUL.
const COMM_BYTES: usize = 15;

/// The path of the profile committed for the lab's guest kernel.
pub fn lab_profile_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/6.1.0-56-cloud-amd64.json")
}

/// Loads the profile committed for the lab's guest kernel, the usual layout of synthetic guests.
pub fn lab_profile() -> Result<Profile, ProfileError> {
    Profile::load(&lab_profile_path())
}

/// Why a synthetic guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// The guest spec contradicts itself.
    #[error("synthetic guest spec: {0}")]
    Spec(String),
    /// The profile lacks a struct, field or constant the image needs.
    #[error(transparent)]
    Linux(#[from] LinuxError),
    /// The profile lacks a struct.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// How a synthetic task is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSched {
    /// Running on `cpu`: its runqueue's `curr` (a CFS task).
    Running {
        /// The CPU.
        cpu: u32,
    },
    /// Waiting in the CFS tree of its cgroup's `cfs_rq` on `cpu`.
    Queued {
        /// The CPU.
        cpu: u32,
    },
    /// `SCHED_FIFO`, waiting on `cpu`'s real-time queue of kernel priority `prio` (0 is highest).
    RtQueued {
        /// The CPU.
        cpu: u32,
        /// The kernel priority, below `MAX_RT_PRIO`.
        prio: u32,
    },
    /// Sleeping interruptibly (`S`).
    Sleeping,
    /// Sleeping uninterruptibly (`D`).
    Blocked,
    /// An idle kernel thread (`I`: `TASK_UNINTERRUPTIBLE | TASK_NOLOAD`).
    Idle,
    /// Exited, not yet reaped (`Z`).
    Zombie,
}

impl TaskSched {
    /// The CPU it is bound to by its runqueue, if it is on one.
    pub fn cpu(self) -> Option<u32> {
        match self {
            Self::Running { cpu } | Self::Queued { cpu } | Self::RtQueued { cpu, .. } => Some(cpu),
            _ => None,
        }
    }

    /// The letter `/proc` shows for it.
    pub fn letter(self) -> char {
        match self {
            Self::Running { .. } | Self::Queued { .. } | Self::RtQueued { .. } => 'R',
            Self::Sleeping => 'S',
            Self::Blocked => 'D',
            Self::Idle => 'I',
            Self::Zombie => 'Z',
        }
    }
}

/// A cgroup of the default hierarchy, with its task group (the `cpu` controller is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSpec {
    /// Its directory name.
    pub name: String,
    /// Its parent: an earlier entry of [`GuestSpec::cgroups`], or the root (`None`).
    pub parent: Option<usize>,
}

/// A process: its threads (the first is the leader) and what they share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Its command name (cut to 15 bytes, as the kernel does).
    pub comm: String,
    /// Its real uid.
    pub uid: u32,
    /// Its cgroup: an entry of [`GuestSpec::cgroups`], or the root (`None`).
    pub cgroup: Option<usize>,
    /// A kernel thread (`PF_KTHREAD`).
    pub kthread: bool,
    /// Its nice value, -20 ..= 19.
    pub nice: i32,
    /// Its threads, the leader first.
    pub threads: Vec<TaskSched>,
    /// The leader has left the thread list (an exiting leader); the reader lists it last.
    pub leader_exited: bool,
}

/// What a synthetic guest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// Online CPUs, numbered from 0.
    pub cpus: u32,
    /// Cgroups besides the root, parents before their children.
    pub cgroups: Vec<CgroupSpec>,
    /// Processes, in task-list order.
    pub processes: Vec<ProcessSpec>,
    /// Seed of the incidental values (runtimes, start times, flags, tree shapes).
    pub seed: u64,
}

impl GuestSpec {
    /// A guest that looks like a real one: `processes` processes on `cpus` CPUs, a tenth of them
    /// kernel threads, every seventh user process multi-threaded, one exiting leader, sleepers,
    /// blocked tasks and zombies, CFS tasks queued at several group levels (`/g1`, `/g1/sub`,
    /// `/g2`, and a group whose name is longer than one 64-byte read), real-time tasks sharing
    /// priorities, and one running task per CPU.
    pub fn typical(processes: usize, cpus: u32, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let cpus = cpus.max(1);
        let cgroups = vec![
            CgroupSpec { name: "g1".into(), parent: None },
            CgroupSpec { name: "sub".into(), parent: Some(0) },
            CgroupSpec { name: "g2".into(), parent: None },
            CgroupSpec { name: "a-cgroup-name-longer-than-one-64-byte-read-of-the-reader.scope".into(), parent: Some(2) },
        ];
        let kthreads = processes.div_ceil(10);
        let comms = ["init", "sh", "sleep", "db", "web-server", "bkup", "a-very-long-command-name"];
        let mut spec = Self { cpus, cgroups, processes: Vec::with_capacity(processes), seed };
        for i in 0..processes {
            let cpu = rng.below(u64::from(cpus));
            if i < kthreads {
                let sched = if rng.chance(70) { TaskSched::Idle } else { TaskSched::Sleeping };
                spec.processes.push(ProcessSpec {
                    comm: format!("kworker/{cpu}:{i}"),
                    uid: 0,
                    cgroup: None,
                    kthread: true,
                    nice: if rng.chance(20) { -20 } else { 0 },
                    threads: vec![sched],
                    leader_exited: false,
                });
                continue;
            }
            let threads = if i % 7 == 3 { 2 + rng.below(3) } else { 1 };
            let threads: Vec<TaskSched> = (0..threads).map(|_| random_sched(&mut rng, cpus, threads == 1)).collect();
            let pick = |rng: &mut Rng, n: usize| usize::try_from(rng.below(n as u64)).unwrap_or(0);
            spec.processes.push(ProcessSpec {
                comm: comms[pick(&mut rng, comms.len())].into(),
                uid: [0, 1000, 1001][pick(&mut rng, 3)],
                cgroup: if rng.chance(50) { None } else { Some(pick(&mut rng, spec.cgroups.len())) },
                kthread: false,
                nice: [0, 0, 0, 5, -5, 19][pick(&mut rng, 6)],
                threads,
                leader_exited: false,
            });
        }
        // One exiting leader whose threads live on.
        if let Some(p) = spec.processes.iter_mut().find(|p| !p.kthread && p.threads.len() > 1) {
            p.threads[0] = TaskSched::Zombie;
            p.leader_exited = true;
        }
        // One running task per CPU, among the user sleepers.
        for cpu in 0..cpus {
            let sleepers: Vec<(usize, usize)> = spec
                .processes
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.kthread)
                .flat_map(|(i, p)| p.threads.iter().enumerate().filter(|(_, s)| **s == TaskSched::Sleeping).map(move |(t, _)| (i, t)))
                .collect();
            if sleepers.is_empty() {
                break;
            }
            let (i, t) = sleepers[usize::try_from(rng.below(sleepers.len() as u64)).unwrap_or(0)];
            spec.processes[i].threads[t] = TaskSched::Running { cpu };
        }
        spec
    }

    /// Checks the spec against itself and the profile's `MAX_RT_PRIO`.
    fn validate(&self, max_rt_prio: u64) -> Result<(), SyntheticError> {
        let fail = |what: String| Err(SyntheticError::Spec(what));
        if self.cpus == 0 {
            return fail("no CPU".into());
        }
        for (i, c) in self.cgroups.iter().enumerate() {
            if c.parent.is_some_and(|p| p >= i) {
                return fail(format!("cgroup {} ({i}): its parent must come before it", c.name));
            }
            if c.name.is_empty() || c.name.contains('/') || c.name.contains('\0') {
                return fail(format!("cgroup name {:?}", c.name));
            }
        }
        let mut running = vec![false; self.cpus as usize];
        for p in &self.processes {
            if p.threads.is_empty() {
                return fail(format!("process {}: no thread", p.comm));
            }
            if p.cgroup.is_some_and(|c| c >= self.cgroups.len()) {
                return fail(format!("process {}: no cgroup {:?}", p.comm, p.cgroup));
            }
            if !(-20..=19).contains(&p.nice) {
                return fail(format!("process {}: nice {}", p.comm, p.nice));
            }
            for s in &p.threads {
                if s.cpu().is_some_and(|c| c >= self.cpus) {
                    return fail(format!("process {}: {s:?} on a CPU that is not online", p.comm));
                }
                if let TaskSched::RtQueued { prio, .. } = s {
                    if u64::from(*prio) >= max_rt_prio {
                        return fail(format!("process {}: RT priority {prio} is not below MAX_RT_PRIO", p.comm));
                    }
                }
                if let TaskSched::Running { cpu } = s {
                    if std::mem::replace(&mut running[*cpu as usize], true) {
                        return fail(format!("CPU {cpu} runs two tasks"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A random schedule for a user thread of a typical guest.
fn random_sched(rng: &mut Rng, cpus: u32, single_threaded: bool) -> TaskSched {
    let cpu = u32::try_from(rng.below(u64::from(cpus))).unwrap_or(0);
    match rng.below(100) {
        0..=69 => TaskSched::Sleeping,
        70..=81 => TaskSched::Queued { cpu },
        82..=85 => TaskSched::RtQueued { cpu, prio: [10, 10, 50, 98][usize::try_from(rng.below(4)).unwrap_or(0)] },
        86..=91 => TaskSched::Blocked,
        92..=94 if single_threaded => TaskSched::Zombie,
        _ => TaskSched::Sleeping,
    }
}

/// SplitMix64: a tiny seeded generator for reproducible synthetic guests and corruption tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// An index into a slice of `len` elements (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Shuffles `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.index(i + 1));
        }
    }
}

/// A synthetic guest: its memory, what a reader needs to find its way in, and the ground truth.
#[derive(Debug)]
pub struct SyntheticGuest {
    /// The image, at [`DIRECT_MAP_BASE`].
    pub memory: DirectMapped<ImageMemory>,
    /// Address of `init_task`.
    pub init_task: Gva,
    /// Where `total_forks` and `nr_threads` are (both hold the number of tasks listed).
    pub counters: ForkCounters,
    /// `(cpu, &runqueues of that cpu)` for every online CPU.
    pub runqueues: Vec<(u32, Gva)>,
    /// Start of [`SCRATCH_BYTES`] zeroed bytes no structure uses.
    pub scratch: Gva,
    /// What a correct reader reads back from the clean image.
    pub truth: GroundTruth,
}

impl SyntheticGuest {
    /// A reader of this guest (`SnapshotReader::new` with its addresses and fork counters).
    pub fn reader(&self, profile: &Profile) -> Result<SnapshotReader, LinuxError> {
        Ok(SnapshotReader::new(profile, self.init_task, self.runqueues.clone())?.with_fork_counters(self.counters))
    }

    /// Reads a `u64` of the image.
    pub fn read_u64(&self, va: Gva) -> Result<u64, LinuxError> {
        self.memory.read_u64(va)
    }

    /// Overwrites a `u64` of the image.
    pub fn write_u64(&mut self, va: Gva, value: u64) -> Result<(), LinuxError> {
        self.write_bytes(va, &value.to_le_bytes())
    }

    /// Overwrites bytes of the image.
    pub fn write_bytes(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError> {
        let gpa = va
            .checked_offset_from(DIRECT_MAP_BASE)
            .ok_or_else(|| MemoryError::OutOfRange { gpa: Gpa(va.raw()), len: data.len() as u64 })?;
        Ok(self.memory.memory_mut().write_phys(Gpa(gpa), data)?)
    }
}

/// What a correct reader reads back from a clean synthetic guest, and where everything lies.
#[derive(Clone, Debug, Default)]
pub struct GroundTruth {
    /// Every task, exactly as [`SnapshotReader::read`] returns it: processes in task-list order,
    /// each followed by its other threads in thread-list order (an exited leader after them).
    pub tasks: Vec<GuestTask>,
    /// Every process, in task-list order.
    pub processes: Vec<ProcessTruth>,
    /// Every cgroup: the root first, then [`GuestSpec::cgroups`] in order.
    pub cgroups: Vec<CgroupTruth>,
    /// Every CPU's runqueue as read, with `cfs_queued` and `cfs_rqs` sorted by address (the
    /// reader's order depends on its walk).
    pub runqueues: Vec<RunqueueSnapshot>,
    /// Every non-empty CFS tree, per CPU.
    pub trees: Vec<TreeTruth>,
    /// Every object laid out.
    pub objects: Vec<Object>,
    /// The address of every field written (the words a reader may look at).
    pub fields: Vec<Gva>,
}

/// Where a process's structures lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTruth {
    /// The leader's `task_struct`.
    pub leader: Gva,
    /// Its `signal_struct`.
    pub signal: Gva,
    /// Its `cred`.
    pub cred: Gva,
    /// Its threads' `task_struct`s in thread-list order (the leader among them unless it exited).
    pub threads: Vec<Gva>,
}

/// Where a cgroup's structures lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTruth {
    /// Its path as `/proc/PID/cgroup` shows it.
    pub path: String,
    /// Its `css_set` (one per cgroup here).
    pub css_set: Gva,
    /// Its `struct cgroup`.
    pub cgroup: Gva,
    /// Its `kernfs_node`.
    pub kn: Gva,
    /// Its `task_group` (`root_task_group` for the root).
    pub task_group: Gva,
    /// Its `cfs_rq` on each CPU (the root's: each `rq.cfs`).
    pub cfs_rqs: Vec<Gva>,
    /// Its group `sched_entity` on each CPU (none, `Gva(0)`, for the root).
    pub entities: Vec<Gva>,
}

/// A CFS tree as laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeTruth {
    /// The CPU.
    pub cpu: u32,
    /// The `cfs_rq` it belongs to.
    pub cfs_rq: Gva,
    /// Its `rb_node`s (`sched_entity.run_node`), smallest vruntime first.
    pub nodes: Vec<Gva>,
}

/// One object of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    /// What it is (`task_struct`, `cfs_rq`, `kernfs name`, …).
    pub kind: &'static str,
    /// Its address.
    pub addr: Gva,
    /// Its size in bytes.
    pub size: u64,
}

/// Builds the guest `spec` describes, laid out as `profile` says.
pub fn build(profile: &Profile, spec: &GuestSpec) -> Result<SyntheticGuest, SyntheticError> {
    let o = Offsets::from_profile(profile)?;
    spec.validate(o.max_rt_prio)?;
    Builder { o, img: Image::default(), rng: Rng::new(spec.seed), spec }.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_specs_are_valid_and_deterministic() {
        let a = GuestSpec::typical(300, 4, 7);
        assert_eq!(a, GuestSpec::typical(300, 4, 7));
        assert!(a.validate(100).is_ok());
        let running = a.processes.iter().flat_map(|p| &p.threads).filter(|s| matches!(s, TaskSched::Running { .. })).count();
        assert_eq!(running, 4);
        assert!(a.processes.iter().any(|p| p.leader_exited));
        assert!(a.processes.iter().any(|p| p.threads.len() > 1));
    }

    #[test]
    fn contradictory_specs_are_refused() {
        let mut spec = GuestSpec::typical(20, 1, 1);
        spec.processes[5].threads = vec![TaskSched::Running { cpu: 3 }];
        assert!(matches!(spec.validate(100), Err(SyntheticError::Spec(m)) if m.contains("not online")));
        spec.processes[5].threads = vec![TaskSched::RtQueued { cpu: 0, prio: 100 }];
        assert!(matches!(spec.validate(100), Err(SyntheticError::Spec(m)) if m.contains("MAX_RT_PRIO")));
        spec.cgroups[0].parent = Some(1);
        assert!(matches!(spec.validate(100), Err(SyntheticError::Spec(m)) if m.contains("parent")));
    }

    #[test]
    fn rng_is_seeded() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert_eq!((0..10).map(|_| a.next_u64()).collect::<Vec<_>>(), (0..10).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_eq!(Rng::new(1).below(0), 0);
        let mut v: Vec<u32> = (0..50).collect();
        Rng::new(9).shuffle(&mut v);
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }
}
