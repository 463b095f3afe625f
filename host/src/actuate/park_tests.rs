//! Unit tests of the write side's flavour-neutral part ([`super::park`]) on small synthetic
//! images laid out from the committed profiles of both scheduler flavours (CFS 6.1, EEVDF 6.12):
//! what a park writes (and nothing else), and every refusal, which writes nothing.
//!
//! The images are independent of the code under test: every offset and constant is looked up in
//! the profile here, and an outcome is checked against the bytes of the whole image before and
//! after. A full unpark (the runqueue arithmetic and tree of each flavour) needs a whole runqueue
//! hierarchy; it is tested on real guests (`tests/tests/park.rs`) and, for the trees, in
//! [`super::rbtree`]; the checks an unpark makes before it writes are tested here.

use std::path::Path;

use crate::linux::layout::Field;
use crate::linux::virt::{KernelMemory, KernelMemoryMut};
use crate::linux::LinuxError;
use crate::memory::{to_usize, Gpa, GuestMemory, Gva, ImageMemory, MemoryError};
use crate::profile::Profile;

use super::park::{park, unpark, Deferred, ParkLayout, ParkOutcome, Refused, Retry, TaskIdentity, UnparkOutcome};

/// The committed profiles, one per scheduler flavour.
const RELEASES: [&str; 2] = ["6.1.0-56-cloud-amd64", "6.12.117+deb12-cloud-amd64"];
/// Where the per-CPU area of CPU 0 is (its `__per_cpu_offset`).
const PER_CPU: Gva = Gva(0xffff_c900_0000_0000);
/// Bytes of the per-CPU area: beyond every per-CPU symbol the tests use.
const PER_CPU_BYTES: usize = 0x40000;
/// Where the tasks are (in the direct map).
const TASKS: Gva = Gva(0xffff_8880_0010_0000);
/// Bytes kept for each task.
const TASK_STRIDE: u64 = 0x4000;
/// The task under test and another task of the same CPU.
const TASK: Gva = TASKS;
const OTHER: Gva = Gva(TASKS.0 + TASK_STRIDE);
/// Its pid and start time.
const PID: i32 = 4242;
const START: u64 = 123_456_789;

/// Kernel-virtual memory made of a few regions, each a zeroed image at its own base.
struct Regions(Vec<(Gva, ImageMemory)>);

impl Regions {
    fn find(&self, va: Gva, len: usize) -> Result<(usize, Gpa), LinuxError> {
        for (i, (base, image)) in self.0.iter().enumerate() {
            if let Some(off) = va.checked_offset_from(*base) {
                if off.checked_add(len as u64).is_some_and(|end| end <= image.bytes().len() as u64) {
                    return Ok((i, Gpa(off)));
                }
            }
        }
        Err(MemoryError::OutOfRange { gpa: Gpa(va.raw()), len: len as u64 }.into())
    }

    /// Every byte of every region.
    fn bytes(&self) -> Vec<Vec<u8>> {
        self.0.iter().map(|(_, image)| image.bytes().to_vec()).collect()
    }
}

impl KernelMemory for Regions {
    fn read_virt(&self, va: Gva, buf: &mut [u8]) -> Result<(), LinuxError> {
        let (i, at) = self.find(va, buf.len())?;
        Ok(self.0[i].1.read_phys(at, buf)?)
    }
}

impl KernelMemoryMut for Regions {
    fn write_virt(&mut self, va: Gva, data: &[u8]) -> Result<(), LinuxError> {
        let (i, at) = self.find(va, data.len())?;
        Ok(self.0[i].1.write_phys(at, data)?)
    }
}

/// One CPU's kernel: a runqueue, its preempt count, and two user tasks on it (the one under test
/// and another), laid out from a profile.
struct Guest {
    p: Profile,
    mem: Regions,
    layout: ParkLayout,
}

impl Guest {
    /// The task under test sleeps (`TASK_INTERRUPTIBLE`, off its runqueue); the other task is the
    /// CPU's current one; no lock is held; the preempt count says no reschedule is pending.
    fn new(release: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../kernels/{release}.json"));
        let p = Profile::load(&path).unwrap_or_else(|e| panic!("{release}: {e}"));
        let mem = Regions(vec![(PER_CPU, ImageMemory::zeroed(PER_CPU_BYTES)), (TASKS, ImageMemory::zeroed(to_usize(2 * TASK_STRIDE)))]);
        let layout = ParkLayout::new(&p, 0, vec![PER_CPU.raw()]).unwrap_or_else(|e| panic!("{release}: {e}"));
        let mut g = Self { p, mem, layout };
        assert!(g.p.struct_layout("task_struct").expect("task_struct").size <= TASK_STRIDE, "{release}: a task fits its slot");
        for (task, pid) in [(TASK, PID), (OTHER, PID + 1)] {
            g.set_task(task, "pid", pid as u64);
            g.set_task(task, "start_time", START);
            g.set_task(task, "policy", g.k("SCHED_NORMAL"));
            g.set_task(task, "sched_class", g.p.symbol("fair_sched_class").expect("fair_sched_class"));
            if g.p.field("task_struct", "numa_preferred_nid").is_ok() {
                g.set_task(task, "numa_preferred_nid", u64::MAX);
            }
        }
        g.set_task(TASK, "__state", g.k("TASK_INTERRUPTIBLE"));
        g.set_task(OTHER, "__state", g.k("TASK_RUNNING"));
        g.set_task(OTHER, "on_rq", g.k("TASK_ON_RQ_QUEUED"));
        g.set(g.rq(), "rq", "curr", OTHER.raw());
        let count = g.preempt_count();
        g.put(count, 4, g.k("PREEMPT_NEED_RESCHED"));
        g
    }

    /// The value of a kernel constant.
    fn k(&self, name: &str) -> u64 {
        self.p.constant(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn field(&self, strukt: &str, field: &str) -> Field {
        Field::of(&self.p, strukt, field).unwrap_or_else(|e| panic!("{e}"))
    }

    /// CPU 0's `struct rq`.
    fn rq(&self) -> Gva {
        Gva(PER_CPU.raw() + self.p.symbol("runqueues").expect("runqueues"))
    }

    /// CPU 0's preempt count: the per-CPU `__preempt_count` (6.1) or `pcpu_hot.preempt_count`
    /// (6.12).
    fn preempt_count(&self) -> Gva {
        match self.p.symbol("__preempt_count") {
            Ok(offset) => Gva(PER_CPU.raw() + offset),
            Err(_) => Gva(PER_CPU.raw() + self.p.symbol("pcpu_hot").expect("pcpu_hot") + self.field("pcpu_hot", "preempt_count").offset),
        }
    }

    /// Writes the low `size` bytes of `value` at `va`.
    fn put(&mut self, va: Gva, size: u64, value: u64) {
        let bytes = value.to_le_bytes();
        self.mem.write_virt(va, &bytes[..to_usize(size)]).expect("write");
    }

    fn get(&self, va: Gva, size: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.mem.read_virt(va, &mut bytes[..to_usize(size)]).expect("read");
        u64::from_le_bytes(bytes)
    }

    fn set(&mut self, base: Gva, strukt: &str, field: &str, value: u64) {
        let f = self.field(strukt, field);
        // A lock is set by its first word; a wider field (a debug spinlock) keeps the rest.
        self.put(Gva(base.raw() + f.offset), f.size.min(8), value);
    }

    fn set_task(&mut self, task: Gva, field: &str, value: u64) {
        self.set(task, "task_struct", field, value);
    }

    fn task_field(&self, task: Gva, field: &str) -> u64 {
        let f = self.field("task_struct", field);
        self.get(Gva(task.raw() + f.offset), f.size.min(8))
    }

    fn identity(&self) -> TaskIdentity {
        TaskIdentity { addr: TASK, pid: PID, start_time: START }
    }

    fn park(&mut self) -> ParkOutcome {
        let id = self.identity();
        park(&mut self.mem, &self.layout, &id).unwrap_or_else(|e| panic!("{}: {e}", self.p.release))
    }

    fn unpark(&mut self) -> UnparkOutcome {
        let id = self.identity();
        unpark(&mut self.mem, &self.layout, &id).unwrap_or_else(|e| panic!("{}: {e}", self.p.release))
    }

    /// The addresses of the bytes that differ between two copies of the regions.
    fn changed(&self, before: &[Vec<u8>]) -> Vec<Gva> {
        let after = self.mem.bytes();
        let mut changed = Vec::new();
        for ((base, _), (old, new)) in self.mem.0.iter().zip(before.iter().zip(&after)) {
            changed.extend(old.iter().zip(new).zip(0u64..).filter(|((a, b), _)| a != b).map(|(_, i)| Gva(base.raw() + i)));
        }
        changed
    }

    /// The bytes of field `strukt.field` of the object at `base`.
    fn bytes_of(&self, base: Gva, strukt: &str, field: &str) -> Vec<Gva> {
        let f = self.field(strukt, field);
        (0..f.size).map(|i| Gva(base.raw() + f.offset + i)).collect()
    }
}

/// Runs `f` on a fresh guest of each flavour.
fn each_flavour(mut f: impl FnMut(&mut Guest)) {
    for release in RELEASES {
        f(&mut Guest::new(release));
    }
}

#[test]
fn parking_a_sleeping_task_writes_its_state_and_nothing_else() {
    each_flavour(|g| {
        let before = g.mem.bytes();
        let was = g.k("TASK_INTERRUPTIBLE");
        assert_eq!(g.park(), ParkOutcome::Parked { state: u32::try_from(was).expect("state"), runnable: false }, "{}", g.p.release);
        assert_eq!(g.task_field(TASK, "__state"), g.k("TASK_PARKED") | g.k("TASK_WAKEKILL"), "{}", g.p.release);
        let changed = g.changed(&before);
        let state = g.bytes_of(TASK, "task_struct", "__state");
        assert!(!changed.is_empty() && changed.iter().all(|va| state.contains(va)), "{}: only __state changes: {changed:?}", g.p.release);
        // What it parked, it refuses to park again.
        assert_eq!(g.park(), ParkOutcome::Deferred(Deferred::Refused(Refused::AlreadyParked)), "{}", g.p.release);
    });
}

#[test]
fn parking_the_running_task_asks_its_cpu_to_reschedule() {
    each_flavour(|g| {
        g.set_task(TASK, "__state", g.k("TASK_RUNNING"));
        g.set_task(TASK, "on_rq", g.k("TASK_ON_RQ_QUEUED"));
        let rq = g.rq();
        g.set(rq, "rq", "curr", TASK.raw());
        let before = g.mem.bytes();
        assert_eq!(g.park(), ParkOutcome::Parked { state: 0, runnable: true }, "{}", g.p.release);
        let release = g.p.release.clone();
        assert_eq!(g.task_field(TASK, "__state"), g.k("TASK_PARKED") | g.k("TASK_WAKEKILL"), "{release}");
        assert_eq!(g.task_field(TASK, "thread_info.flags"), 1 << g.k("TIF_NEED_RESCHED"), "{release}: TIF_NEED_RESCHED set");
        let count = g.preempt_count();
        assert_eq!(g.get(count, 4) & g.k("PREEMPT_NEED_RESCHED"), 0, "{release}: the inverted PREEMPT_NEED_RESCHED bit cleared");
        let mut expected = g.bytes_of(TASK, "task_struct", "__state");
        expected.extend(g.bytes_of(TASK, "task_struct", "thread_info.flags"));
        expected.extend((0..4).map(|i| Gva(count.raw() + i)));
        let changed = g.changed(&before);
        assert!(changed.iter().all(|va| expected.contains(va)), "{release}: only the state, the flag and the preempt count change: {changed:?}");
    });
}

#[test]
fn parking_a_queued_task_that_is_not_current_leaves_its_cpu_alone() {
    each_flavour(|g| {
        g.set_task(TASK, "__state", g.k("TASK_RUNNING"));
        g.set_task(TASK, "on_rq", g.k("TASK_ON_RQ_QUEUED"));
        let before = g.mem.bytes();
        assert_eq!(g.park(), ParkOutcome::Parked { state: 0, runnable: true }, "{}", g.p.release);
        let state = g.bytes_of(TASK, "task_struct", "__state");
        let changed = g.changed(&before);
        assert!(changed.iter().all(|va| state.contains(va)), "{}: it dequeues itself when it next runs: {changed:?}", g.p.release);
    });
}

/// A change to the guest made before an operation, and the deferral it must get.
type Case = (&'static str, fn(&mut Guest), Deferred);

/// What makes both park and unpark wait or refuse, before they look at the state.
fn shared_refusals() -> Vec<Case> {
    vec![
        ("its pi_lock held", |g| g.set_task(TASK, "pi_lock", 1), Deferred::Retry(Retry::PiLockHeld)),
        ("its runqueue's lock held", |g| {
            let rq = g.rq();
            g.set(rq, "rq", "__lock", 1);
        }, Deferred::Retry(Retry::RunqueueLocked { cpu: 0 })),
        ("its pid reused", |g| g.set_task(TASK, "pid", (PID + 7) as u64), Deferred::Gone),
        ("another task at its address", |g| g.set_task(TASK, "start_time", START + 1), Deferred::Gone),
        ("exited", |g| {
            let zombie = g.k("EXIT_ZOMBIE");
            g.set_task(TASK, "exit_state", zombie);
        }, Deferred::Gone),
        ("a kernel thread", |g| {
            let kthread = g.k("PF_KTHREAD");
            g.set_task(TASK, "flags", kthread);
        }, Deferred::Refused(Refused::KernelThread)),
        ("real-time", |g| {
            let fifo = g.k("SCHED_FIFO");
            g.set_task(TASK, "policy", fifo);
        }, Deferred::Refused(Refused::NotFair { policy: 1 })),
        ("of another scheduling class", |g| g.set_task(TASK, "sched_class", 0xffff_ffff_8100_0000), Deferred::Refused(Refused::NotFair { policy: 0 })),
        ("on a CPU the kernel lacks", |g| g.set_task(TASK, "thread_info.cpu", 5), Deferred::Refused(Refused::NoSuchCpu { cpu: 5 })),
    ]
}

#[test]
fn park_refusals_write_nothing() {
    let mut cases = shared_refusals();
    cases.push(("asleep uninterruptibly", |g| {
        let d = g.k("TASK_UNINTERRUPTIBLE");
        g.set_task(TASK, "__state", d);
    }, Deferred::Retry(Retry::State { state: 2 })));
    cases.push(("sleeping but still queued", |g| {
        let queued = g.k("TASK_ON_RQ_QUEUED");
        g.set_task(TASK, "on_rq", queued);
    }, Deferred::Retry(Retry::State { state: 1 })));
    for (what, change, expected) in cases {
        each_flavour(|g| {
            change(g);
            let before = g.mem.bytes();
            assert_eq!(g.park(), ParkOutcome::Deferred(expected.clone()), "{}: a task {what}", g.p.release);
            assert_eq!(g.changed(&before), vec![], "{}: a task {what}: nothing written", g.p.release);
        });
    }
}

#[test]
fn a_task_whose_address_does_not_read_is_gone() {
    each_flavour(|g| {
        let id = TaskIdentity { addr: Gva(0xffff_8880_7000_0000), pid: PID, start_time: START };
        assert_eq!(park(&mut g.mem, &g.layout, &id).expect("park"), ParkOutcome::Deferred(Deferred::Gone), "{}", g.p.release);
        assert_eq!(unpark(&mut g.mem, &g.layout, &id).expect("unpark"), UnparkOutcome::Deferred(Deferred::Gone), "{}", g.p.release);
    });
}

#[test]
fn unpark_refusals_write_nothing() {
    let parked = |g: &mut Guest| {
        let state = g.k("TASK_PARKED") | g.k("TASK_WAKEKILL");
        g.set_task(TASK, "__state", state);
    };
    for (what, change, expected) in shared_refusals() {
        each_flavour(|g| {
            parked(g);
            change(g);
            let before = g.mem.bytes();
            assert_eq!(g.unpark(), UnparkOutcome::Deferred(expected.clone()), "{}: a task {what}", g.p.release);
            assert_eq!(g.changed(&before), vec![], "{}: a task {what}: nothing written", g.p.release);
        });
    }
    each_flavour(|g| {
        let before = g.mem.bytes();
        assert_eq!(g.unpark(), UnparkOutcome::NotParked { state: 1 }, "{}: a task xsched did not park", g.p.release);
        assert_eq!(g.changed(&before), vec![], "{}", g.p.release);
        parked(g);
        let queued = g.k("TASK_ON_RQ_QUEUED");
        g.set_task(TASK, "on_rq", queued);
        let before = g.mem.bytes();
        assert_eq!(g.unpark(), UnparkOutcome::Deferred(Deferred::Retry(Retry::StillQueued)), "{}: parked, not yet off its runqueue", g.p.release);
        assert_eq!(g.changed(&before), vec![], "{}", g.p.release);
    });
}

#[test]
fn a_task_with_a_numa_preference_is_not_unparked() {
    each_flavour(|g| {
        let state = g.k("TASK_PARKED") | g.k("TASK_WAKEKILL");
        g.set_task(TASK, "__state", state);
        g.set_task(TASK, "numa_preferred_nid", 0);
        let before = g.mem.bytes();
        assert_eq!(g.unpark(), UnparkOutcome::Deferred(Deferred::Refused(Refused::NumaPreference)), "{}", g.p.release);
        assert_eq!(g.changed(&before), vec![], "{}", g.p.release);
    });
}
