//! The data that crosses the boundary each period: the snapshot in, the decisions out.
//!
//! These are plain `repr(C)` structs, frozen for all of interface 1.x (see the crate docs).

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

/// What the host hands the policy each period: every task of every domain.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Host monotonic time of this snapshot, nanoseconds since the host instantiated the policy.
    pub time_ns: u64,
    /// The scheduling period, nanoseconds.
    pub period_ns: u64,
    /// The host CPU budget: how many tasks may run at once, over all domains.
    pub host_cpus: u32,
    /// The domains, in id order.
    pub domains: RVec<DomainInfo>,
    /// Every task, by domain, then in the guest's task-list order.
    pub tasks: RVec<TaskView>,
}

/// What the host knows about a snapshot that spares a policy a pass over every task: which
/// tasks are runnable, and which changed since the snapshot before (interface 1.1, handed to
/// [`Policy::rank_hinted`](crate::Policy::rank_hinted)).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct Hint {
    /// The indices in [`Snapshot::tasks`] of the runnable tasks ([`TaskView::runnable`]),
    /// ascending: every one, whatever changed.
    pub runnable: RVec<u32>,
    /// The indices of the tasks whose views may differ from those of the snapshot handed to
    /// the same policy object before, ascending; `RNone` when any may (the first snapshot, or
    /// tasks came, went or moved). While it is `RSome`, the snapshot holds the same tasks at the
    /// same indices as the one before.
    pub changed: ROption<RVec<u32>>,
}

/// One domain (virtual machine).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its id, as [`TaskView::domain`] refers to it.
    pub id: u32,
    /// Its name (as given on the command line).
    pub name: RString,
    /// Its online vCPUs: at most this many of its tasks can run at once.
    pub vcpus: u32,
}

/// A read-only view of one task.
///
/// `(domain, pid, start_time)` identifies the task: a pid reused by a new task has another
/// start time.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct TaskView {
    /// Its domain's id.
    pub domain: u32,
    /// Its pid (thread id) inside the guest.
    pub pid: i32,
    /// Its start time, guest-monotonic nanoseconds.
    pub start_time: u64,
    /// Its process id.
    pub tgid: i32,
    /// Its command name.
    pub comm: RString,
    /// Its real uid, when it could be read.
    pub uid: ROption<u32>,
    /// Its cgroup v2 path, when it could be read.
    pub cgroup: ROption<RString>,
    /// The state letter `/proc` shows (`b'R'`, `b'S'`, `b'D'`, …; `b'P'` while parked).
    pub state: u8,
    /// Wants a CPU: running, queued, or held parked by xsched (it was runnable when parked).
    /// Only runnable tasks are admitted or parked; ranking others is harmless.
    pub runnable: bool,
    /// Running on a vCPU right now.
    pub running: bool,
    /// Held parked by xsched.
    pub parked: bool,
    /// A kernel thread (xsched never parks these: rank them and they are left alone).
    pub kthread: bool,
    /// Its nice value.
    pub nice: i32,
    /// Its CFS load weight (nice 0 is 1024).
    pub weight: u64,
    /// CPU time consumed, nanoseconds.
    pub runtime_ns: u64,
    /// CPU time consumed since the previous snapshot, nanoseconds (0 for a task seen first).
    pub runtime_delta_ns: u64,
}

impl TaskView {
    /// The task's comm as a `&str`.
    pub fn comm(&self) -> &str {
        self.comm.as_str()
    }

    /// The task's cgroup path, if known.
    pub fn cgroup(&self) -> Option<&str> {
        self.cgroup.as_ref().map(RString::as_str).into_option()
    }

    /// The task's uid, if known.
    pub fn uid(&self) -> Option<u32> {
        self.uid.into_option()
    }

    /// A decision about this task.
    pub fn decide(&self, class: u32, order: u64) -> Decision {
        Decision { domain: self.domain, pid: self.pid, start_time: self.start_time, class, order }
    }
}

impl Snapshot {
    /// The domain with id `id`.
    pub fn domain(&self, id: u32) -> Option<&DomainInfo> {
        self.domains.iter().find(|d| d.id == id)
    }

    /// The name of the domain with id `id` (`""` if unknown).
    pub fn domain_name(&self, id: u32) -> &str {
        self.domain(id).map_or("", |d| d.name.as_str())
    }
}

/// The policy's word on one task: its class (lower = more important), then its order within
/// the class (lower goes first). Ties are broken by domain and pid.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// The task's domain id.
    pub domain: u32,
    /// The task's pid.
    pub pid: i32,
    /// The task's start time (a decision about a task that no longer exists is dropped).
    pub start_time: u64,
    /// Its class: lower is more important.
    pub class: u32,
    /// Its order within the class: lower goes first.
    pub order: u64,
}
