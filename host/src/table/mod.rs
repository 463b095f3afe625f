//! The cross-domain task table: every task of every attached guest, in one place.
//!
//! This is what policy plugins see (through `policy::snapshot_of`). Each
//! [`TaskTable::build_from`] takes the snapshots of one pass over the domains, each with its
//! [`DomainFacts`], and, given the previous table, computes each task's CPU use from the growth
//! of its `sum_exec_runtime`. A task is identified by domain, pid and start time, so a pid
//! reused by a new task never inherits its predecessor's history. The table needs no live
//! guest: its inputs are plain parts.
//!
//! [`TaskTable::rebuild_from`] updates a table in place; when a domain's snapshot says which tasks
//! changed since its reader's previous one, and that previous one made the domain's entries,
//! only those entries (and those with CPU time in the last interval, whose delta falls to zero)
//! are set: a steady period costs what changed, not what exists. [`TableChanges`] says which
//! entries a rebuild set, for the plugin snapshot to do the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::domain::{DomainId, DomainSnapshot};
use crate::linux::Kernel;
use crate::linux::snapshot::GuestTask;
use crate::profile::Profile;

/// Identifies a task across snapshots: its domain, its pid and when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TaskKey {
    /// The domain it lives in.
    pub domain: DomainId,
    /// Its pid (thread id) inside the guest.
    pub pid: i32,
    /// Its start time, guest-monotonic nanoseconds.
    pub start_time: u64,
}

/// The scheduling policy of a task, as `ps -o cls` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Policy {
    /// `SCHED_NORMAL` ("TS").
    Normal,
    /// `SCHED_FIFO` ("FF").
    Fifo,
    /// `SCHED_RR` ("RR").
    RoundRobin,
    /// `SCHED_BATCH` ("B").
    Batch,
    /// `SCHED_IDLE` ("IDL").
    Idle,
    /// `SCHED_DEADLINE` ("DLN").
    Deadline,
    /// `SCHED_EXT` ("EXT"): run by a sched_ext BPF scheduler (Linux 6.12 and later), never by
    /// the fair class, so never parked.
    Ext,
    /// A value this xsched does not know.
    Other(u32),
}

impl Policy {
    /// The `ps -o cls` abbreviation.
    pub fn abbrev(self) -> &'static str {
        match self {
            Self::Normal => "TS",
            Self::Fifo => "FF",
            Self::RoundRobin => "RR",
            Self::Batch => "B",
            Self::Idle => "IDL",
            Self::Deadline => "DLN",
            Self::Ext => "EXT",
            Self::Other(_) => "?",
        }
    }

    /// Whether the policy is real-time (or deadline), which has no nice value.
    pub fn is_realtime(self) -> bool {
        matches!(self, Self::Fifo | Self::RoundRobin | Self::Deadline)
    }
}

/// One task in the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskEntry {
    /// Its identity.
    pub key: TaskKey,
    /// Its process id.
    pub tgid: i32,
    /// Its command name, lossily decoded (U+FFFD for each invalid UTF-8 sequence); chosen by
    /// the guest, so shown to people through [`printable`](crate::text::printable).
    pub comm: String,
    /// The exact bytes of `comm` when they are not valid UTF-8; absent from JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_bytes: Option<Vec<u8>>,
    /// The state letter `/proc` shows (R, S, D, T, t, X, Z, P, I).
    pub state: char,
    /// The CPU it runs or last ran on.
    pub cpu: u32,
    /// Waiting on a runqueue.
    pub queued: bool,
    /// Asleep but still in its runqueue's tree until the kernel picks it (EEVDF's delayed
    /// dequeue): queued, not runnable.
    pub delayed: bool,
    /// Running right now (its CPU's current task).
    pub running: bool,
    /// Held parked by xsched.
    pub parked: bool,
    /// Its scheduling policy.
    pub policy: Policy,
    /// Its nice value (normal policies).
    pub nice: i32,
    /// Its kernel priority (`prio`).
    pub prio: i32,
    /// Its CFS load weight (`se.load.weight`, unscaled: nice 0 is 1024).
    pub weight: u64,
    /// CPU time consumed, nanoseconds (`se.sum_exec_runtime`).
    pub runtime_ns: u64,
    /// CPU time consumed since the previous table, nanoseconds.
    pub runtime_delta_ns: u64,
    /// CPU use since the previous table, percent of one CPU.
    pub cpu_percent: f64,
    /// `se.vruntime`.
    pub vruntime: u64,
    /// Its cgroup v2 path, lossily decoded; chosen by the guest, like `comm`.
    pub cgroup: Option<String>,
    /// Its task group's address in the guest (the group identity for CFS).
    pub task_group: u64,
    /// Its real uid.
    pub uid: Option<u32>,
    /// A kernel thread.
    pub kthread: bool,
    /// Address of its `task_struct` in the guest.
    pub task_addr: u64,
}

impl TaskEntry {
    /// A plain user task: `SCHED_NORMAL`, nice 0, weight 1024, no CPU time yet, on CPU 0, queued
    /// when its state is `R`. For synthetic tables (tests, benchmarks); set other fields with
    /// struct-update syntax.
    pub fn plain(key: TaskKey, comm: &str, state: char) -> Self {
        Self {
            key,
            tgid: key.pid,
            comm: comm.to_string(),
            comm_bytes: None,
            state,
            cpu: 0,
            queued: state == 'R',
            delayed: false,
            running: false,
            parked: false,
            policy: Policy::Normal,
            nice: 0,
            prio: 120,
            weight: 1024,
            runtime_ns: 0,
            runtime_delta_ns: 0,
            cpu_percent: 0.0,
            vruntime: 0,
            cgroup: None,
            task_group: 0,
            uid: None,
            kthread: false,
            task_addr: 0,
        }
    }
}

/// One domain's line in the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainSummary {
    /// Its id.
    pub id: DomainId,
    /// Its name.
    pub name: String,
    /// The guest kernel release.
    pub release: String,
    /// Online vCPUs.
    pub vcpus: u32,
    /// Tasks read.
    pub tasks: usize,
    /// CPU use of all its tasks since the previous table, percent of one CPU.
    pub cpu_percent: f64,
    /// How long the guest was paused for the snapshot, microseconds.
    pub pause_us: u64,
    /// How long reading the guest took (xsched's part of the pause), microseconds.
    pub read_us: u64,
    /// Someone else held the guest paused: it was read as it is, left paused, and nothing is
    /// written into it until it runs.
    pub paused_by_others: bool,
    /// What could not be read: when not empty, the domain's part of the table is partial.
    pub problems: Vec<String>,
}

/// The cross-domain task table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskTable {
    /// Wall time since the previous table, if there was one.
    pub interval_ms: Option<f64>,
    /// The domains, in id order.
    pub domains: Vec<DomainSummary>,
    /// Every task, by domain then in the guest's task-list order.
    pub tasks: Vec<TaskEntry>,
    /// What the last build or rebuild set: bookkeeping, not content (equal tables may differ
    /// here). Code that edits `tasks` by hand resets it (`TableChanges::default()`).
    #[serde(skip)]
    pub changes: TableChanges,
}

impl PartialEq for TaskTable {
    /// The content: interval, domains and tasks.
    fn eq(&self, other: &Self) -> bool {
        self.interval_ms == other.interval_ms && self.domains == other.domains && self.tasks == other.tasks
    }
}

/// Which entries a [`TaskTable::rebuild`] set, so that what is made from the table (a plugin's
/// snapshot) can be rewritten for those only; and where each domain's entries came from, so
/// that the next rebuild can set only the entries of the tasks its snapshots say changed
/// ([`Changes`](crate::linux::snapshot::Changes)).
#[derive(Clone, Debug, Default)]
pub struct TableChanges {
    /// This table's number, new at every build and rebuild (unique in the process; 0: none).
    pub generation: u64,
    /// The number the table had before the rebuild that made this one (0: it was built anew).
    pub base: u64,
    /// The entries (indices in `tasks`) set by that rebuild, each once, when only they may
    /// differ from the table numbered `base` (which had as many); `None`: any may.
    pub updated: Option<Vec<usize>>,
    /// Per domain, where its entries came from.
    sources: Vec<Source>,
}

/// Where one domain's entries of a table came from.
#[derive(Clone, Debug)]
struct Source {
    id: DomainId,
    /// The snapshot's reader and read number.
    read: (u64, u64),
    /// Its first entry, and how many it has.
    start: usize,
    len: usize,
    /// Its entries (relative to `start`) with CPU time in the interval: set again at the next
    /// rebuild even when their task did not change, for their delta to fall to zero.
    busy: Vec<usize>,
}

/// The next table generation (0 is none's).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// What the table needs to know of a domain besides its snapshot: plain parts, so that a table
/// can be built without a live guest (benchmarks, tests). [`DomainFacts::of`] takes them from an
/// attached domain's kernel.
#[derive(Clone, Copy, Debug)]
pub struct DomainFacts<'a> {
    /// Its id.
    pub id: DomainId,
    /// Its name.
    pub name: &'a str,
    /// The guest kernel release.
    pub release: &'a str,
    /// Online vCPUs.
    pub vcpus: u32,
    /// The guest kernel's profile (its `NICE_0_LOAD`, `SCHED_*` and `PF_KTHREAD` constants).
    pub profile: &'a Profile,
}

impl<'a> DomainFacts<'a> {
    /// The facts of the domain `id`, named `name`, whose located kernel is `kernel`.
    pub fn of(id: DomainId, name: &'a str, kernel: &'a Kernel) -> Self {
        let location = kernel.location();
        Self {
            id,
            name,
            release: &location.release,
            vcpus: u32::try_from(location.online_cpus.len()).unwrap_or(u32::MAX),
            profile: kernel.profile(),
        }
    }
}

/// `NICE_WIDTH`: nice values run from -20 to 19 (the user ABI, include/linux/sched/prio.h).
const NICE_WIDTH: i32 = 40;

/// What a domain's profile says about decoding its tasks, looked up once per domain and pass.
struct Decoding {
    /// What `scale_load_down` shifts a load weight by: `SCHED_FIXEDPOINT_SHIFT` where the kernel
    /// keeps weights at a higher resolution (`NICE_0_LOAD` above `1 << SCHED_FIXEDPOINT_SHIFT`,
    /// as 64-bit kernels do), else 0.
    weight_shift: u64,
    /// `DEFAULT_PRIO` (`MAX_RT_PRIO + NICE_WIDTH / 2`): the `static_prio` of nice 0.
    default_prio: i32,
    /// `PF_KTHREAD`.
    pf_kthread: u64,
    /// The `SCHED_*` values, with the policy each stands for.
    policies: Vec<(u64, Policy)>,
}

impl Decoding {
    fn of(profile: &Profile) -> Self {
        let named = [
            ("SCHED_NORMAL", Policy::Normal),
            ("SCHED_FIFO", Policy::Fifo),
            ("SCHED_RR", Policy::RoundRobin),
            ("SCHED_BATCH", Policy::Batch),
            ("SCHED_IDLE", Policy::Idle),
            ("SCHED_DEADLINE", Policy::Deadline),
            ("SCHED_EXT", Policy::Ext),
        ];
        let fixed_point = profile.constant("SCHED_FIXEDPOINT_SHIFT").unwrap_or(10).min(32);
        let nice_0_load = profile.constant("NICE_0_LOAD").unwrap_or(1 << fixed_point);
        let max_rt_prio = profile.constant("MAX_RT_PRIO").ok().and_then(|v| i32::try_from(v).ok()).unwrap_or(100);
        Self {
            weight_shift: if nice_0_load > 1 << fixed_point { fixed_point } else { 0 },
            default_prio: max_rt_prio + NICE_WIDTH / 2,
            pf_kthread: profile.constant("PF_KTHREAD").unwrap_or(0),
            policies: named.iter().filter_map(|&(name, policy)| profile.constant(name).ok().map(|v| (v, policy))).collect(),
        }
    }

    fn policy(&self, raw: u32) -> Policy {
        self.policies.iter().find(|(v, _)| *v == u64::from(raw)).map_or(Policy::Other(raw), |&(_, p)| p)
    }
}

/// Finds the previous table's entry of each task of a new pass: at the position after the last
/// one found first (a guest's task order rarely changes between passes, so this is the only
/// look-up of a steady state), else by key, in an index built the first time one is needed.
struct Matcher {
    keys: Vec<TaskKey>,
    next: usize,
    by_key: Option<HashMap<TaskKey, usize>>,
}

impl Matcher {
    fn new(old: &[TaskEntry]) -> Self {
        Self { keys: old.iter().map(|e| e.key).collect(), next: 0, by_key: None }
    }

    /// The index of `key`'s entry in the previous table, if it had one.
    fn find(&mut self, key: &TaskKey) -> Option<usize> {
        if self.keys.get(self.next) == Some(key) {
            self.next += 1;
            return Some(self.next - 1);
        }
        let keys = &self.keys;
        let at = *self.by_key.get_or_insert_with(|| keys.iter().enumerate().map(|(i, k)| (*k, i)).collect()).get(key)?;
        self.next = at + 1;
        Some(at)
    }
}

impl TaskTable {
    /// Builds the table from one pass of snapshots, each with its domain's facts; `previous`
    /// (taken `elapsed` earlier) gives the CPU use.
    pub fn build_from(pass: &[(DomainFacts<'_>, &DomainSnapshot)], previous: Option<(&TaskTable, Duration)>) -> Self {
        let mut table = TaskTable::default();
        let old = previous.map_or(&[][..], |(t, _)| &t.tasks[..]);
        table.fill(pass, previous.map(|(_, elapsed)| elapsed), Previous::Borrowed(Matcher::new(old), old));
        table
    }

    /// Makes this table the one of a new pass taken `elapsed` after the pass it holds (`None`:
    /// it holds none): what [`build_from`](Self::build_from) makes with this table as the
    /// previous one, but in place: an entry whose task kept its place is updated where it is,
    /// and a name that did not change is not copied, so a steady state allocates nothing.
    pub fn rebuild_from(&mut self, pass: &[(DomainFacts<'_>, &DomainSnapshot)], elapsed: Option<Duration>) {
        self.fill(pass, elapsed, Previous::InPlace { kept: 0, moved: None });
    }

    /// Fills the table from `pass`, taken `elapsed` after the `previous` one.
    fn fill(&mut self, pass: &[(DomainFacts<'_>, &DomainSnapshot)], elapsed: Option<Duration>, mut previous: Previous<'_>) {
        let elapsed_ns = elapsed.map(|d| d.as_nanos() as f64).filter(|&ns| ns > 0.0);
        self.interval_ms = elapsed_ns.map(|ns| ns / 1e6);
        self.domains.truncate(pass.len());
        let old_sources = std::mem::take(&mut self.changes.sources);
        let mut updated = Some(Vec::new());
        let mut sources = Vec::with_capacity(pass.len());
        for (i, (domain, snap)) in pass.iter().enumerate() {
            let decoding = Decoding::of(domain.profile);
            let start = self.tasks.len().min(match &previous {
                Previous::InPlace { kept, moved: None } => *kept,
                _ => usize::MAX,
            });
            let changes = &snap.guest.changes;
            let read = (changes.reader, changes.read);
            let domain_delta = match (old_sources.get(i), &mut previous) {
                (Some(old), Previous::InPlace { kept, moved: None }) if old.continued_by(domain.id, read, *kept, snap.guest.tasks.len()) && changes.tasks.is_some() => {
                    let (delta, source) = self.fill_changed(old, domain.id, snap, &decoding, elapsed_ns, updated.as_mut());
                    *kept += source.len;
                    sources.push(source);
                    delta
                }
                _ => {
                    updated = None;
                    let delta = self.fill_all(domain.id, snap, &decoding, elapsed_ns, &mut previous);
                    let end = self.tasks.len().min(match &previous {
                        Previous::InPlace { kept, moved: None } => *kept,
                        _ => self.tasks.len(),
                    });
                    let entries = self.tasks.get(start..end).unwrap_or_default();
                    let busy = entries.iter().enumerate().filter(|(_, e)| e.runtime_delta_ns != 0).map(|(j, _)| j).collect();
                    sources.push(Source { id: domain.id, read, start, len: entries.len(), busy });
                    delta
                }
            };
            if self.domains.len() == i {
                self.domains.push(DomainSummary {
                    id: domain.id,
                    name: String::new(),
                    release: String::new(),
                    vcpus: 0,
                    tasks: 0,
                    cpu_percent: 0.0,
                    pause_us: 0,
                    read_us: 0,
                    paused_by_others: false,
                    problems: Vec::new(),
                });
            }
            if let Some(d) = self.domains.get_mut(i) {
                d.set(domain, snap, snap.guest.tasks.len(), elapsed_ns.map_or(0.0, |ns| domain_delta as f64 * 100.0 / ns));
            }
        }
        if let Previous::InPlace { kept, moved: None } = previous {
            // Every task kept its place: the entries past the last were tasks that are gone.
            self.tasks.truncate(kept);
        }
        let base = match previous {
            Previous::Borrowed(..) => 0,
            Previous::InPlace { .. } => self.changes.generation,
        };
        // A rebuild that moved entries, or a table built anew, says nothing of what changed.
        let updated = updated.filter(|_| base != 0 && matches!(previous, Previous::InPlace { moved: None, .. }));
        self.changes = TableChanges { generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed), base, updated, sources };
    }

    /// Fills one domain's entries from `snap`, every task looked up in `previous`; returns the
    /// domain's CPU time in the interval.
    fn fill_all(&mut self, id: DomainId, snap: &DomainSnapshot, decoding: &Decoding, elapsed_ns: Option<f64>, previous: &mut Previous<'_>) -> u64 {
        let mut domain_delta = 0u64;
        for task in snap.guest.tasks.iter() {
            let key = TaskKey { domain: id, pid: task.record.pid, start_time: task.record.start_time };
            // A task seen for the first time has no delta; a runtime that went backwards
            // (impossible for one task) counts as none.
            let delta = |before: Option<u64>| before.map_or(0, |old| task.record.sum_exec_runtime.saturating_sub(old));
            if let Some(entry) = previous.in_place(&mut self.tasks, &key) {
                let delta = delta(Some(entry.runtime_ns));
                entry.set(key, task, decoding, delta, elapsed_ns);
                domain_delta += delta;
                continue;
            }
            let (mut entry, before) = previous.take(&key).map_or((TaskEntry::plain(key, "", 'R'), None), |(e, r)| (e, Some(r)));
            let delta = delta(before);
            entry.set(key, task, decoding, delta, elapsed_ns);
            domain_delta += delta;
            self.tasks.push(entry);
        }
        domain_delta
    }

    /// Fills one domain's entries, which lie where `old` says and are those of its reader's
    /// previous snapshot, by setting only those of the tasks `snap` says may have changed and
    /// those that were busy (the others' entries are what setting them would make: the same
    /// task read the same, with no CPU time in the interval). Returns the domain's CPU time in
    /// the interval and the domain's new source; pushes the entries set to `updated`.
    fn fill_changed(&mut self, old: &Source, id: DomainId, snap: &DomainSnapshot, decoding: &Decoding, elapsed_ns: Option<f64>, updated: Option<&mut Vec<usize>>) -> (u64, Source) {
        let changes = &snap.guest.changes;
        let mut set: Vec<usize> = changes.tasks.iter().flatten().chain(&old.busy).copied().filter(|&j| j < old.len).collect();
        set.sort_unstable();
        set.dedup();
        let mut busy = Vec::new();
        let mut domain_delta = 0u64;
        for &j in &set {
            let (Some(task), Some(entry)) = (snap.guest.tasks.get(j), self.tasks.get_mut(old.start + j)) else { continue };
            let key = TaskKey { domain: id, pid: task.record.pid, start_time: task.record.start_time };
            let delta = if entry.key == key { task.record.sum_exec_runtime.saturating_sub(entry.runtime_ns) } else { 0 };
            entry.set(key, task, decoding, delta, elapsed_ns);
            domain_delta += delta;
            if delta != 0 {
                busy.push(j);
            }
        }
        if let Some(updated) = updated {
            updated.extend(set.iter().map(|&j| old.start + j));
        }
        (domain_delta, Source { id, read: (changes.reader, changes.read), start: old.start, len: old.len, busy })
    }
}

impl Source {
    /// Whether the entries of a domain `id` whose snapshot is `read`, with `len` tasks, lie as
    /// this source says at `start`, from the same reader's previous read.
    fn continued_by(&self, id: DomainId, read: (u64, u64), start: usize, len: usize) -> bool {
        self.id == id && read.0 != 0 && self.read.0 == read.0 && self.read.1.checked_add(1) == Some(read.1) && self.start == start && self.len == len
    }
}

/// Finds tasks of a table by key, asked for in about table order (as policies decide): each
/// after the last one found, all of them within one pass over the table; past that (keys out of
/// order), in an index built the first time one is needed.
#[derive(Debug)]
pub struct Finder<'a> {
    tasks: &'a [TaskEntry],
    next: usize,
    budget: usize,
    index: Option<HashMap<TaskKey, usize>>,
}

impl<'a> Finder<'a> {
    /// A finder over `table`'s tasks.
    pub fn new(table: &'a TaskTable) -> Self {
        Self { tasks: &table.tasks, next: 0, budget: table.tasks.len(), index: None }
    }

    /// The index in the table of `key`'s task, if it has one.
    pub fn find(&mut self, key: &TaskKey) -> Option<usize> {
        let tasks = self.tasks;
        let ahead = tasks.get(self.next..).unwrap_or_default().iter().take(self.budget).position(|t| t.key == *key);
        let at = match ahead {
            Some(offset) => {
                self.budget -= offset;
                Some(self.next + offset)
            }
            None => {
                self.budget = 0;
                self.index.get_or_insert_with(|| tasks.iter().enumerate().map(|(i, t)| (t.key, i)).collect()).get(key).copied()
            }
        };
        if let Some(i) = at {
            self.next = i + 1;
        }
        at
    }
}

/// Where a table being filled finds the previous entry of a task.
enum Previous<'a> {
    /// In another table: only its runtime is taken.
    Borrowed(Matcher, &'a [TaskEntry]),
    /// In the table being filled. The first `kept` entries are updated in place while the tasks
    /// come in the same order; from the first that does not, the rest of the old entries are
    /// `moved` aside, handed out by key, and the table is filled by pushing.
    InPlace { kept: usize, moved: Option<(Matcher, Vec<Option<TaskEntry>>)> },
}

impl Previous<'_> {
    /// The entry of `key`, in place in `tasks`, if the tasks so far kept their places and this
    /// one too; otherwise moves the old entries from here aside (once) and returns `None`.
    fn in_place<'t>(&mut self, tasks: &'t mut Vec<TaskEntry>, key: &TaskKey) -> Option<&'t mut TaskEntry> {
        let Previous::InPlace { kept, moved } = self else { return None };
        if moved.is_some() {
            return None;
        }
        if tasks.get(*kept).is_some_and(|e| e.key == *key) {
            *kept += 1;
            return tasks.get_mut(*kept - 1);
        }
        let rest = tasks.split_off(*kept);
        *moved = Some((Matcher::new(&rest), rest.into_iter().map(Some).collect()));
        None
    }

    /// The previous entry of `key` to reuse, with its runtime then, if there was one.
    fn take(&mut self, key: &TaskKey) -> Option<(TaskEntry, u64)> {
        match self {
            Previous::Borrowed(matcher, old) => matcher.find(key).and_then(|i| old.get(i)).map(|e| (TaskEntry::plain(*key, "", 'R'), e.runtime_ns)),
            Previous::InPlace { moved, .. } => {
                let (matcher, old) = moved.as_mut()?;
                let entry = matcher.find(key).and_then(|i| old.get_mut(i)).and_then(Option::take)?;
                let runtime = entry.runtime_ns;
                Some((entry, runtime))
            }
        }
    }
}

impl DomainSummary {
    /// Sets every field from `domain`'s facts and snapshot, with `tasks` read using
    /// `cpu_percent`, reusing the strings' allocations.
    fn set(&mut self, domain: &DomainFacts<'_>, snap: &DomainSnapshot, tasks: usize, cpu_percent: f64) {
        set_text(&mut self.name, domain.name);
        set_text(&mut self.release, domain.release);
        self.problems.clone_from(&snap.guest.problems);
        *self = DomainSummary {
            id: domain.id,
            name: std::mem::take(&mut self.name),
            release: std::mem::take(&mut self.release),
            vcpus: domain.vcpus,
            tasks,
            cpu_percent,
            pause_us: u64::try_from(snap.pause.as_micros()).unwrap_or(u64::MAX),
            read_us: u64::try_from(snap.read.as_micros()).unwrap_or(u64::MAX),
            paused_by_others: snap.held_by_others,
            problems: std::mem::take(&mut self.problems),
        };
    }
}

impl TaskEntry {
    /// Sets every field from `task` (of the domain `decoding` describes), its key `key` and CPU
    /// time `delta` over `elapsed_ns`, reusing the names' allocations.
    fn set(&mut self, key: TaskKey, task: &GuestTask, decoding: &Decoding, delta: u64, elapsed_ns: Option<f64>) {
        let r = &task.record;
        let policy = decoding.policy(r.policy);
        set_text(&mut self.comm, &r.comm);
        if self.comm_bytes != r.comm_bytes {
            self.comm_bytes.clone_from(&r.comm_bytes);
        }
        match (&mut self.cgroup, &task.cgroup) {
            (Some(mine), Some(path)) => set_text(mine, path),
            (mine, path) => *mine = path.as_deref().map(String::from),
        }
        *self = TaskEntry {
            key,
            tgid: r.tgid,
            comm: std::mem::take(&mut self.comm),
            comm_bytes: self.comm_bytes.take(),
            state: task.state,
            cpu: r.cpu,
            queued: task.queued,
            delayed: r.sched_delayed,
            running: task.running,
            parked: task.parked,
            policy,
            nice: if policy.is_realtime() { 0 } else { r.static_prio - decoding.default_prio },
            prio: r.prio,
            weight: r.weight >> decoding.weight_shift,
            runtime_ns: r.sum_exec_runtime,
            runtime_delta_ns: delta,
            cpu_percent: elapsed_ns.map_or(0.0, |ns| delta as f64 * 100.0 / ns),
            vruntime: r.vruntime,
            cgroup: self.cgroup.take(),
            task_group: r.task_group.raw(),
            uid: task.uid,
            kthread: u64::from(r.flags) & decoding.pf_kthread != 0,
            task_addr: r.addr.raw(),
        };
    }
}

/// Makes `text` hold `value`, reusing its allocation (none when it holds it already).
fn set_text(text: &mut String, value: &str) {
    if text != value {
        text.clear();
        text.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::linux::snapshot::GuestSnapshot;
    use crate::linux::synthetic::{self, GuestSpec};

    fn snapshot(tasks: Vec<GuestTask>) -> DomainSnapshot {
        DomainSnapshot { guest: GuestSnapshot { tasks: Arc::new(tasks), ..GuestSnapshot::default() }, pause: Duration::ZERO, read: Duration::ZERO, held_by_others: false }
    }

    /// The pass of `snaps`, domains numbered from 0.
    fn pass<'a>(profile: &'a Profile, snaps: &'a [DomainSnapshot]) -> Vec<(DomainFacts<'a>, &'a DomainSnapshot)> {
        (0u32..).zip(snaps).map(|(id, s)| (DomainFacts { id: DomainId(id), name: "g", release: &profile.release, vcpus: 2, profile }, s)).collect()
    }

    /// Both ways of making the table of `next` after `before`'s: built anew, rebuilt in place.
    fn both(profile: &Profile, before: &[Vec<GuestTask>], next: &[Vec<GuestTask>]) -> (TaskTable, TaskTable) {
        let snaps = |tasks: &[Vec<GuestTask>]| -> Vec<DomainSnapshot> { tasks.iter().map(|t| snapshot(t.clone())).collect() };
        let (first, second) = (snaps(before), snaps(next));
        let old = TaskTable::build_from(&pass(profile, &first), None);
        let built = TaskTable::build_from(&pass(profile, &second), Some((&old, Duration::from_millis(10))));
        let mut rebuilt = old.clone();
        rebuilt.rebuild_from(&pass(profile, &second), Some(Duration::from_millis(10)));
        (built, rebuilt)
    }

    #[test]
    fn a_rebuilt_table_is_the_built_one() {
        let profile = synthetic::lab_profile().expect("profile");
        let tasks = |seed| synthetic::build(&profile, &GuestSpec::typical(30, 2, seed)).expect("build").truth.tasks;
        let (a, b) = (tasks(1), tasks(2));
        // The same tasks, some of which ran.
        let mut ran = a.clone();
        for t in ran.iter_mut().step_by(3) {
            t.record.sum_exec_runtime += 1_000_000;
        }
        let (built, rebuilt) = both(&profile, &[a.clone(), b.clone()], &[ran.clone(), b.clone()]);
        assert_eq!(built, rebuilt);
        assert!(built.tasks.iter().any(|t| t.runtime_delta_ns == 1_000_000));
        // In the first domain a task exits, another forks in the middle, one is renamed and
        // moves to another cgroup: the second domain's entries all move.
        let mut changed = ran.clone();
        changed.remove(4);
        let mut newcomer = changed[7].clone();
        newcomer.record.pid = 4242;
        changed.insert(10, newcomer);
        changed[2].record.comm = "renamed".into();
        changed[2].cgroup = Some("/elsewhere".into());
        let (built, rebuilt) = both(&profile, &[ran.clone(), b.clone()], &[changed.clone(), b.clone()]);
        assert_eq!(built, rebuilt);
        assert_eq!(built.tasks.iter().find(|t| t.key.pid == 4242).map(|t| t.runtime_delta_ns), Some(0), "a new task has no delta");
        // Fewer tasks at the end, and a domain fewer.
        let (built, rebuilt) = both(&profile, &[changed.clone(), b.clone()], &[changed[..20].to_vec()]);
        assert_eq!(built, rebuilt);
        assert_eq!((built.domains.len(), built.tasks.len()), (1, 20));
    }

    #[test]
    fn a_rebuild_from_the_changes_is_a_build_from_every_task() {
        use crate::linux::incremental::SWEEP;
        use crate::linux::layout::Field;
        use crate::memory::Gva;
        let profile = synthetic::lab_profile().expect("profile");
        let mut g = synthetic::build(&profile, &GuestSpec::typical(40, 2, 3)).expect("build");
        let mut reader = g.reader(&profile).expect("reader");
        let runtime = Field::of(&profile, "task_struct", "se").expect("se").offset + Field::of(&profile, "sched_entity", "sum_exec_runtime").expect("field").offset;
        let comm = Field::of(&profile, "task_struct", "comm").expect("comm");
        let running = g.truth.tasks.iter().find(|t| t.running).expect("a running task").record.clone();
        let sleeper = g.truth.tasks.iter().find(|t| t.state == 'S' && !t.running).expect("a sleeper").record.clone();
        let period = Duration::from_millis(10);
        let (mut rebuilt, mut built) = (TaskTable::default(), TaskTable::default());
        let mut partial = 0;
        for round in 0..4 * SWEEP {
            // The running task runs every other period; the sleeper ran once, and was renamed.
            if round % 2 == 1 {
                g.write_u64(Gva(running.addr.raw() + runtime), running.sum_exec_runtime + round * 1000).expect("write");
            }
            if round == 5 {
                g.write_u64(Gva(sleeper.addr.raw() + runtime), sleeper.sum_exec_runtime + 77).expect("write");
                g.write_bytes(comm.at(sleeper.addr).expect("va"), b"renamed\0").expect("write");
            }
            let snaps = [DomainSnapshot { guest: reader.read(&g.memory), pause: Duration::ZERO, read: Duration::ZERO, held_by_others: false }];
            let elapsed = (round > 0).then_some(period);
            rebuilt.rebuild_from(&pass(&profile, &snaps), elapsed);
            built = TaskTable::build_from(&pass(&profile, &snaps), elapsed.map(|e| (&built, e)));
            assert_eq!(rebuilt, built, "round {round}");
            if let Some(updated) = &rebuilt.changes.updated {
                assert!(updated.len() < built.tasks.len() / 2, "round {round}: {} of {} set", updated.len(), built.tasks.len());
                partial += 1;
            }
        }
        assert!(partial >= 4 * SWEEP - 2, "only {partial} rebuilds set the changed entries alone");
        assert!(built.tasks.iter().any(|t| t.comm == "renamed"));
    }
}
