//! The read side against synthetic guest images (`linux::synthetic`): a clean image reads back
//! exactly its ground truth; hostile images (cycles, wild pointers, garbage, absurd depths) end
//! within fixed bounds with an error or a flagged partial snapshot, never a panic or a hang; and
//! thousands of random corruptions of a clean image all end in bounded time.

use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use xsched::linux::layout::Field;
use xsched::linux::runqueue::{read_runqueue, RqLayout};
use xsched::linux::snapshot::{GuestSnapshot, SnapshotReader};
use xsched::linux::synthetic::{self, GuestSpec, SyntheticGuest};
use xsched::memory::Gva;
use xsched::profile::Profile;

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| synthetic::lab_profile().expect("committed profile"))
}

fn field(strukt: &str, name: &str) -> Field {
    Field::of(profile(), strukt, name).expect("profile field")
}

fn guest(processes: usize, cpus: u32, seed: u64) -> SyntheticGuest {
    synthetic::build(profile(), &GuestSpec::typical(processes, cpus, seed)).expect("build")
}

fn reader(g: &SyntheticGuest) -> SnapshotReader {
    g.reader(profile()).expect("reader")
}

/// How long any read of a hostile image may take (a debug build reads a clean 300-process image
/// in a few milliseconds).
const HOSTILE_BOUND: Duration = Duration::from_secs(5);

/// Reads `g` on another thread and requires the read to end within `bound`: a hang fails the
/// test instead of blocking it. Returns the guest with the snapshot.
fn read_bounded(g: SyntheticGuest, bound: Duration) -> (SyntheticGuest, GuestSnapshot) {
    let (tx, rx) = mpsc::channel();
    let mut reader = reader(&g);
    let worker = std::thread::spawn(move || {
        let snap = reader.read(&g.memory);
        let _ = tx.send(());
        (g, snap)
    });
    match rx.recv_timeout(bound) {
        Ok(()) => worker.join().expect("reader thread"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the read did not end within {bound:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(_) => unreachable!("the reader sends before it ends"),
            Err(panic) => std::panic::resume_unwind(panic),
        },
    }
}

/// Reads `g`, requiring the read to end within `bound`.
fn read_within(g: &SyntheticGuest, bound: Duration) -> GuestSnapshot {
    let started = Instant::now();
    let snap = reader(g).read(&g.memory);
    let took = started.elapsed();
    assert!(took < bound, "read took {took:?}");
    snap
}

/// Requires the read of a clean image to match its ground truth exactly.
fn assert_reads_truth(g: &SyntheticGuest) {
    let snap = read_within(g, Duration::from_secs(10));
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_eq!(snap.tasks.len(), g.truth.tasks.len());
    for (read, truth) in snap.tasks.iter().zip(&g.truth.tasks) {
        assert_eq!(read, truth, "task at {}", truth.record.addr);
    }
    assert_eq!(snap.runqueues.len(), g.truth.runqueues.len());
    for (read, truth) in snap.runqueues.iter().zip(&g.truth.runqueues) {
        let mut cfs_queued = read.cfs_queued.clone();
        cfs_queued.sort();
        let mut cfs_rqs = read.cfs_rqs.clone();
        cfs_rqs.sort_by_key(|c| c.addr);
        let cpu = truth.cpu;
        assert_eq!((read.cpu, read.addr, read.locked, read.nr_running), (cpu, truth.addr, truth.locked, truth.nr_running), "CPU {cpu}");
        assert_eq!((read.curr, read.idle, read.clock_task, read.rt_nr_running), (truth.curr, truth.idle, truth.clock_task, truth.rt_nr_running), "CPU {cpu}");
        assert_eq!(cfs_queued, truth.cfs_queued, "CPU {cpu}");
        assert_eq!(cfs_rqs, truth.cfs_rqs, "CPU {cpu}");
        assert_eq!(read.rt_queued, truth.rt_queued, "CPU {cpu}");
    }
}

#[test]
fn a_clean_image_reads_back_its_ground_truth() {
    for (processes, cpus, seed) in [(0, 1, 0), (1, 1, 1), (40, 2, 2), (300, 4, 3), (1200, 8, 4)] {
        let g = guest(processes, cpus, seed);
        assert_reads_truth(&g);
    }
}

#[test]
fn the_typical_image_covers_what_the_reader_must_handle() {
    let g = guest(300, 4, 3);
    let t = &g.truth;
    let letters: String = ['R', 'S', 'D', 'I', 'Z'].into_iter().filter(|l| t.tasks.iter().any(|x| x.state == *l)).collect();
    assert_eq!(letters, "RSDIZ");
    assert!(t.tasks.iter().filter(|x| x.running).count() == 4);
    assert!(t.runqueues.iter().all(|r| !r.rt_queued.is_empty() || r.rt_nr_running == 0));
    assert!(t.runqueues.iter().any(|r| r.rt_queued.len() > 1));
    assert!(t.runqueues.iter().any(|r| r.cfs_rqs.iter().any(|c| c.depth == 2)), "a queued task two group levels down");
    assert!(t.tasks.iter().any(|x| x.cgroup.as_deref().is_some_and(|p| p.len() > 64)));
    assert!(t.processes.iter().any(|p| p.threads.len() > 2));
    assert!(t.processes.iter().any(|p| !p.threads.contains(&p.leader)), "an exited leader");
    assert!(t.tasks.iter().any(|x| x.record.comm.len() == 15), "a cut comm");
}

// --- Hostile images -------------------------------------------------------------------------

/// `va` + the offset of `strukt.name`.
fn at(va: Gva, strukt: &str, name: &str) -> Gva {
    field(strukt, name).at(va).expect("address")
}

fn ptr(g: &SyntheticGuest, va: Gva) -> Gva {
    Gva(g.read_u64(va).expect("in image"))
}

/// Reads a corrupted image: it must end within the bound with a problem containing `why`.
/// Returns the (partial) snapshot.
fn assert_partial(g: SyntheticGuest, why: &str) -> GuestSnapshot {
    let (_, snap) = read_bounded(g, HOSTILE_BOUND);
    assert!(snap.problems.iter().any(|p| p.contains(why)), "want a problem with {why:?}, got {:?}", snap.problems);
    snap
}

/// A multi-threaded process of `g` with at least `threads` threads on its list.
fn threaded(g: &SyntheticGuest, threads: usize) -> usize {
    g.truth.processes.iter().position(|p| p.threads.len() >= threads && p.threads.contains(&p.leader)).expect("threaded process")
}

/// Pointers a guest can write that lead nowhere: null, non-canonical, beyond RAM, unaligned into
/// the middle of a structure, the top of the address space (where `+ offset` overflows).
fn wild_pointers(g: &SyntheticGuest) -> Vec<u64> {
    let end = g.scratch.raw() + synthetic::SCRATCH_BYTES;
    vec![0, 0x1234_5678_9abc_def0, end + 0x10_0000, g.truth.processes[1].leader.raw() + 0x333, u64::MAX - 4, synthetic::DIRECT_MAP_BASE.raw() - 0x1000]
}

#[test]
fn a_cycle_in_the_task_list_ends_the_walk() {
    let clean = guest(60, 2, 11);
    let (j, k) = (5, 40);
    for consistent_back_link in [false, true] {
        let mut g = guest(60, 2, 11);
        let node_j = at(g.truth.processes[j].leader, "task_struct", "tasks");
        let node_k = at(g.truth.processes[k].leader, "task_struct", "tasks");
        g.write_u64(at(node_k, "list_head", "next"), node_j.raw()).expect("write");
        if consistent_back_link {
            g.write_u64(at(node_j, "list_head", "prev"), node_k.raw()).expect("write");
        }
        let snap = assert_partial(g, "broken link");
        assert!(snap.tasks.len() <= clean.truth.tasks.len());
        assert_eq!(snap.tasks.first(), clean.truth.tasks.first(), "what came before the break is kept");
        assert_eq!(snap.runqueues.len(), 2, "runqueues are read all the same");
    }
}

#[test]
fn a_cycle_in_a_thread_list_ends_that_process() {
    let mut g = guest(60, 2, 12);
    let p = threaded(&g, 3);
    let threads = g.truth.processes[p].threads.clone();
    let second = at(threads[1], "task_struct", "thread_node");
    let last = at(threads[threads.len() - 1], "task_struct", "thread_node");
    g.write_u64(at(last, "list_head", "next"), second.raw()).expect("write");
    let total = g.truth.tasks.len();
    let snap = assert_partial(g, "broken link");
    // Every other process is read whole.
    assert!(snap.tasks.len() >= total - threads.len() && snap.tasks.len() <= total, "{} of {total}", snap.tasks.len());
}

#[test]
fn a_thread_list_pointing_to_itself_in_a_loop_is_bounded() {
    // A thread node whose next and prev both point to itself: a one-node loop off the head.
    let mut g = guest(60, 2, 13);
    let p = threaded(&g, 2);
    let node = at(g.truth.processes[p].threads[1], "task_struct", "thread_node");
    g.write_u64(at(node, "list_head", "next"), node.raw()).expect("write");
    g.write_u64(at(node, "list_head", "prev"), node.raw()).expect("write");
    assert_partial(g, "broken link");
}

#[test]
fn a_cycle_in_a_cfs_tree_is_detected() {
    let pick = |g: &SyntheticGuest| g.truth.trees.iter().find(|t| t.nodes.len() >= 3).cloned().expect("a tree of 3");
    // The rightmost node's right child is the root (an ancestor), its parent pointer unchanged.
    let mut g = guest(300, 2, 14);
    let tree = pick(&g);
    let root = ptr(&g, at(tree.cfs_rq, "cfs_rq", "tasks_timeline.rb_root.rb_node"));
    let last = *tree.nodes.last().expect("node");
    g.write_u64(at(last, "rb_node", "rb_right"), root.raw()).expect("write");
    assert_partial(g, "records parent");
    // The same, with the root's parent forged to point back at that node.
    let mut g = guest(300, 2, 14);
    g.write_u64(at(last, "rb_node", "rb_right"), root.raw()).expect("write");
    g.write_u64(at(root, "rb_node", "__rb_parent_color"), last.raw() | 1).expect("write");
    assert_partial(g, "records parent");
    // A node that is its own left child.
    let mut g = guest(300, 2, 14);
    let first = tree.nodes[0];
    g.write_u64(at(first, "rb_node", "rb_left"), first.raw()).expect("write");
    g.write_u64(at(first, "rb_node", "__rb_parent_color"), first.raw()).expect("write");
    let snap = assert_partial(g, "rbtree");
    assert_eq!(snap.runqueues.len(), 1, "only the broken CPU's runqueue is lost");
    assert!(snap.problems.iter().any(|p| p.contains(&format!("CPU {}", tree.cpu))), "{:?}", snap.problems);
}

#[test]
fn wild_list_and_tree_pointers_are_errors() {
    let base = guest(60, 2, 15);
    let p = threaded(&base, 2);
    let tree = base.truth.trees[0].clone();
    let rq0 = base.truth.runqueues[0].addr;
    let rt_head = at(rq0, "rq", "rt");
    // Each place a pointer is followed from, and what the reader should say about it.
    let places: Vec<(&str, Gva)> = vec![
        ("task list head", at(at(base.init_task, "task_struct", "tasks"), "list_head", "next")),
        ("a leader's task-list link", at(at(base.truth.processes[30].leader, "task_struct", "tasks"), "list_head", "next")),
        ("a thread-list head", at(at(base.truth.processes[p].signal, "signal_struct", "thread_head"), "list_head", "next")),
        ("a thread-list link", at(at(base.truth.processes[p].threads[1], "task_struct", "thread_node"), "list_head", "next")),
        ("a CFS tree root", at(tree.cfs_rq, "cfs_rq", "tasks_timeline.rb_root.rb_node")),
        ("a CFS tree child", at(tree.nodes[tree.nodes.len() / 2], "rb_node", "rb_left")),
        ("the RT queue of priority 0", at(at(rt_head, "rt_rq", "active"), "rt_prio_array", "queue")),
        ("rq.cfs.curr", at(at(rq0, "rq", "cfs"), "cfs_rq", "curr")),
    ];
    for (what, place) in places {
        for wild in wild_pointers(&base) {
            let mut g = guest(60, 2, 15);
            g.write_u64(place, wild).expect("write");
            if what.starts_with("the RT queue") {
                // Flag the queue so the reader follows it.
                let bitmap = at(at(rt_head, "rt_rq", "active"), "rt_prio_array", "bitmap");
                let b = g.read_u64(bitmap).expect("bitmap");
                g.write_u64(bitmap, b | 1).expect("write");
            }
            let (_, snap) = read_bounded(g, HOSTILE_BOUND);
            // Forgeries the reader cannot tell from the truth: a null child is a missing subtree,
            // and a pointer into zeroed bytes is a well-formed leaf with a null parent. What the
            // task list says is unaffected.
            let tree = what.starts_with("a CFS tree") || what == "rq.cfs.curr";
            let forged = tree && (wild == 0 || wild == wild_pointers(&base)[3]);
            if forged && snap.problems.is_empty() {
                assert_eq!(snap.tasks.len(), base.truth.tasks.len(), "{what} = {wild:#x}");
            } else {
                assert!(!snap.problems.is_empty(), "{what} = {wild:#x}: no problem noted");
            }
        }
    }
}

#[test]
fn garbage_in_the_rt_bitmap_is_bounded() {
    let clean = guest(300, 2, 16);
    let bitmap = field("rt_prio_array", "bitmap");
    let queue = field("rt_prio_array", "queue");
    let array = |rq: Gva| at(at(rq, "rq", "rt"), "rt_rq", "active");
    // Every bit set over empty queues: the same tasks as before.
    let mut g = guest(300, 2, 16);
    for r in &clean.truth.runqueues {
        g.write_bytes(bitmap.at(array(r.addr)).expect("va"), &vec![0xff; usize::try_from(bitmap.size).expect("size")]).expect("write");
    }
    let (_, snap) = read_bounded(g, HOSTILE_BOUND);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_eq!(*snap.tasks, clean.truth.tasks);
    // Every bit set over garbage queue heads: that CPU's runqueue is lost, nothing else.
    let mut g = guest(300, 2, 16);
    let rq = clean.truth.runqueues[1].addr;
    g.write_bytes(bitmap.at(array(rq)).expect("va"), &vec![0xff; usize::try_from(bitmap.size).expect("size")]).expect("write");
    let garbage: Vec<u8> = (0..queue.size).map(|i| (i * 37 % 251) as u8).collect();
    g.write_bytes(queue.at(array(rq)).expect("va"), &garbage).expect("write");
    let snap = assert_partial(g, "CPU 1 runqueue");
    assert_eq!(snap.tasks.len(), clean.truth.tasks.len());
}

#[test]
fn comm_without_a_nul_is_cut_at_the_field() {
    let mut g = guest(30, 1, 17);
    let comm = field("task_struct", "comm");
    let leader = g.truth.processes[5].leader;
    g.write_bytes(comm.at(leader).expect("va"), &vec![b'A'; usize::try_from(comm.size).expect("size")]).expect("write");
    let other = g.truth.processes[6].leader;
    g.write_bytes(comm.at(other).expect("va"), &[0xff; 16]).expect("write");
    let (_, snap) = read_bounded(g, HOSTILE_BOUND);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    let comm_of = |addr: Gva| snap.tasks.iter().find(|t| t.record.addr == addr).map(|t| t.record.comm.clone()).expect("task");
    let cut = comm_of(leader);
    assert!((15..=16).contains(&cut.len()) && cut.bytes().all(|b| b == b'A'), "{cut:?}");
    assert!(comm_of(other).chars().count() <= 16, "non-UTF-8 bytes decode lossily");
}

/// A process of `g` in cgroup `path`.
fn task_in(g: &SyntheticGuest, path: &str) -> Gva {
    g.truth.tasks.iter().find(|t| t.cgroup.as_deref() == Some(path)).expect("a task in the cgroup").record.addr
}

#[test]
fn cgroup_kernfs_cycles_and_bad_names_are_errors() {
    let base = guest(300, 2, 18);
    let sub = base.truth.cgroups.iter().find(|c| c.path == "/g1/sub").expect("/g1/sub").clone();
    let g1 = base.truth.cgroups.iter().find(|c| c.path == "/g1").expect("/g1").clone();
    let parent = field("kernfs_node", "parent");
    let name = field("kernfs_node", "name");
    let victim = task_in(&base, "/g1/sub");
    let check = |g: SyntheticGuest, why: &str| {
        let snap = assert_partial(g, why);
        let t = snap.tasks.iter().find(|t| t.record.addr == victim).expect("the task is still read");
        assert_eq!(t.cgroup, None);
        assert!(snap.tasks.iter().any(|t| t.cgroup.as_deref() == Some("/g2")), "other cgroups resolve");
    };
    // A node that is its own parent.
    let mut g = guest(300, 2, 18);
    g.write_u64(parent.at(sub.kn).expect("va"), sub.kn.raw()).expect("write");
    check(g, "deeper than");
    // Two nodes that are each other's parent.
    let mut g = guest(300, 2, 18);
    g.write_u64(parent.at(g1.kn).expect("va"), sub.kn.raw()).expect("write");
    check(g, "deeper than");
    // A name without a NUL: a page of 'x'.
    let mut g = guest(300, 2, 18);
    let scratch = g.scratch;
    g.write_bytes(scratch, &[b'x'; 4096]).expect("write");
    g.write_u64(name.at(sub.kn).expect("va"), scratch.raw()).expect("write");
    check(g, "longer than");
    // A name running off the end of memory.
    let mut g = guest(300, 2, 18);
    let end = Gva(g.scratch.raw() + synthetic::SCRATCH_BYTES - 8);
    g.write_bytes(end, b"xxxxxxxx").expect("write");
    g.write_u64(name.at(sub.kn).expect("va"), end.raw()).expect("write");
    check(g, "outside");
    // Wild pointers anywhere on the way from task to name.
    for (strukt, f, base_of) in [
        ("task_struct", "cgroups", victim),
        ("css_set", "dfl_cgrp", sub.css_set),
        ("cgroup", "kn", sub.cgroup),
        ("kernfs_node", "parent", sub.kn),
        ("kernfs_node", "name", sub.kn),
    ] {
        for wild in wild_pointers(&base) {
            let mut g = guest(300, 2, 18);
            g.write_u64(at(base_of, strukt, f), wild).expect("write");
            let (_, snap) = read_bounded(g, HOSTILE_BOUND);
            // Forgeries: a null parent ends the path early, a pointer into zeroed bytes is a
            // root; wrong but well-formed paths.
            let forged = (f == "parent" && wild == 0) || wild == wild_pointers(&base)[3];
            if forged && snap.problems.is_empty() {
                assert!(snap.tasks.iter().all(|t| t.cgroup.is_some()), "{strukt}.{f} = {wild:#x}");
            } else {
                assert!(snap.problems.iter().any(|p| p.contains("cgroup")), "{strukt}.{f} = {wild:#x}: {:?}", snap.problems);
            }
        }
    }
}

/// A spec with one process queued on CPU 0 in a cgroup `depth` levels deep.
fn deep_spec(depth: usize) -> GuestSpec {
    let mut spec = GuestSpec::typical(20, 1, 19);
    let first = spec.cgroups.len();
    for level in 0..depth {
        let parent = if level == 0 { None } else { Some(first + level - 1) };
        spec.cgroups.push(synthetic::CgroupSpec { name: format!("d{level}"), parent });
    }
    spec.processes.push(synthetic::ProcessSpec {
        comm: "deep".into(),
        uid: 0,
        cgroup: Some(first + depth - 1),
        kthread: false,
        nice: 0,
        threads: vec![synthetic::TaskSched::Queued { cpu: 0 }],
        leader_exited: false,
    });
    spec
}

#[test]
fn absurd_depths_are_errors() {
    // Moderate depths read back exactly.
    assert_reads_truth(&synthetic::build(profile(), &deep_spec(20)).expect("build"));
    // A cgroup 100 levels down: its path is refused, and the task group nesting too.
    let g = synthetic::build(profile(), &deep_spec(100)).expect("build");
    let deep = g.truth.tasks.last().expect("task").record.addr;
    let snap = assert_partial(g, "deeper than");
    assert!(snap.problems.iter().any(|p| p.contains("nested deeper")), "{:?}", snap.problems);
    assert_eq!(snap.tasks.iter().find(|t| t.record.addr == deep).expect("read").cgroup, None);
}

#[test]
fn garbage_signal_pointers_are_errors() {
    let base = guest(60, 2, 20);
    let p = threaded(&base, 2);
    for wild in wild_pointers(&base).into_iter().chain([base.truth.processes[p + 1].leader.raw()]) {
        let mut g = guest(60, 2, 20);
        g.write_u64(at(g.truth.processes[p].leader, "task_struct", "signal"), wild).expect("write");
        let snap = assert_partial(g, "process at");
        assert!(snap.tasks.len() < base.truth.tasks.len() + 60);
    }
}

/// A guest whose CPU 0 has several group entities in its root tree.
fn groups_spec() -> GuestSpec {
    let mut spec = GuestSpec::typical(0, 1, 21);
    spec.cgroups = (0..4).map(|i| synthetic::CgroupSpec { name: format!("g{i}"), parent: None }).collect();
    for i in 0..4 {
        spec.processes.push(synthetic::ProcessSpec {
            comm: format!("q{i}"),
            uid: 0,
            cgroup: Some(i),
            kthread: false,
            nice: 0,
            threads: vec![synthetic::TaskSched::Queued { cpu: 0 }; 3],
            leader_exited: false,
        });
    }
    spec
}

#[test]
fn group_entities_looping_back_are_bounded() {
    let clean = synthetic::build(profile(), &groups_spec()).expect("build");
    assert_reads_truth(&clean);
    let root_cfs_rq = clean.truth.cgroups[0].cfs_rqs[0];
    // Every group entity's runqueue is the root runqueue again: a naive recursion would walk
    // 4^33 trees.
    let mut g = synthetic::build(profile(), &groups_spec()).expect("build");
    for c in &clean.truth.cgroups[1..] {
        g.write_u64(at(c.entities[0], "sched_entity", "my_q"), root_cfs_rq.raw()).expect("write");
    }
    assert_partial(g, "CPU 0 runqueue");
    // Each group's runqueue is its parent's: a chain that never ends.
    let mut g = synthetic::build(profile(), &groups_spec()).expect("build");
    let own = clean.truth.cgroups[1].cfs_rqs[0];
    let tree = field("cfs_rq", "tasks_timeline.rb_root.rb_node");
    let root_tree = ptr(&g, tree.at(root_cfs_rq).expect("va"));
    g.write_u64(tree.at(own).expect("va"), root_tree.raw()).expect("write");
    assert_partial(g, "CPU 0 runqueue");
}

/// One task queued on CPU 0 at each level of a `depth`-deep chain of cgroups.
fn chain_spec(depth: usize) -> GuestSpec {
    let mut spec = GuestSpec::typical(0, 1, 22);
    spec.cgroups = (0..depth).map(|i| synthetic::CgroupSpec { name: format!("c{i}"), parent: i.checked_sub(1) }).collect();
    for i in 0..depth {
        spec.processes.push(synthetic::ProcessSpec {
            comm: format!("t{i}"),
            uid: 0,
            cgroup: Some(i),
            kthread: false,
            nice: 0,
            threads: vec![synthetic::TaskSched::Queued { cpu: 0 }],
            leader_exited: false,
        });
    }
    spec
}

#[test]
fn group_entities_sharing_a_runqueue_are_not_walked_twice() {
    // Each level's tree holds a task and the next level's group entity. Turning each task into
    // a second "group" entity with the same runqueue makes a DAG whose naive walk visits the
    // deepest runqueue 2^30 times.
    let clean = synthetic::build(profile(), &chain_spec(30)).expect("build");
    assert_reads_truth(&clean);
    let mut g = synthetic::build(profile(), &chain_spec(30)).expect("build");
    for level in 0..29 {
        let task = task_in(&clean, &clean.truth.cgroups[level + 1].path);
        let child_q = clean.truth.cgroups[level + 2].cfs_rqs[0];
        g.write_u64(at(at(task, "task_struct", "se"), "sched_entity", "my_q"), child_q.raw()).expect("write");
    }
    assert_partial(g, "CPU 0 runqueue");
}

#[test]
fn runqueues_sharing_one_tree_share_one_budget() {
    // Group 0 queues ten tasks, groups 1-3 one each; then every group's runqueue is made to hold
    // group 0's tree. The walk is then 4 group entities + 4 x 10 tasks, over a limit of 30.
    let mut spec = groups_spec();
    spec.processes[0].threads = vec![synthetic::TaskSched::Queued { cpu: 0 }; 10];
    for p in &mut spec.processes[1..] {
        p.threads.truncate(1);
    }
    let layout = RqLayout::from_profile(profile()).expect("layout");
    let clean = synthetic::build(profile(), &spec).expect("build");
    let rq = clean.truth.runqueues[0].addr;
    let read = read_runqueue(&clean.memory, &layout, 0, rq, 30).expect("a clean runqueue fits");
    assert_eq!(read.cfs_queued.len(), 13);
    let mut g = synthetic::build(profile(), &spec).expect("build");
    let tree = field("cfs_rq", "tasks_timeline.rb_root.rb_node");
    let shared = ptr(&g, tree.at(clean.truth.cgroups[1].cfs_rqs[0]).expect("va"));
    for c in &clean.truth.cgroups[2..] {
        g.write_u64(tree.at(c.cfs_rqs[0]).expect("va"), shared.raw()).expect("write");
    }
    let err = read_runqueue(&g.memory, &layout, 0, rq, 30).expect_err("over the budget");
    assert!(err.to_string().contains("more than"), "{err}");
}

// --- Random corruption -----------------------------------------------------------------------

/// A value to overwrite a word with: random bits, a bit flip, null, all ones, a pointer to
/// another written field or object of the image (possibly off by a few bytes), or non-canonical.
fn mutation(rng: &mut synthetic::Rng, g: &SyntheticGuest, old: u64) -> u64 {
    let fields = &g.truth.fields;
    let objects = &g.truth.objects;
    match rng.below(9) {
        0 => rng.next_u64(),
        1 => old ^ (1 << rng.below(64)),
        2 => 0,
        3 => u64::MAX,
        4 => fields[rng.index(fields.len())].raw(),
        5 => objects[rng.index(objects.len())].addr.raw(),
        6 => old.wrapping_add(rng.below(64)).wrapping_sub(32),
        7 => 0x8000_0000_0000_0000 | rng.next_u64() >> 16,
        _ => fields[rng.index(fields.len())].raw() & !7,
    }
}

#[test]
fn random_corruption_always_ends() {
    const ITERATIONS: usize = 2000;
    const SEED: u64 = 0x5eed_2026;
    let mut rng = synthetic::Rng::new(SEED);
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let bound = Duration::from_secs(10);
    // The reads run on a worker, which reports each iteration's corruption before reading; the
    // test fails on the first read that does not end within the bound.
    let worker = std::thread::spawn(move || {
        let mut g = guest(200, 4, 23);
        let mut reader = reader(&g);
        let mut partial = 0usize;
        for i in 0..ITERATIONS {
            let mut undo = Vec::new();
            let mut what = format!("iteration {i} (seed {SEED:#x}):");
            for _ in 0..1 + rng.below(4) {
                let va = Gva(g.truth.fields[rng.index(g.truth.fields.len())].raw() & !7);
                let old = g.read_u64(va).expect("field in image");
                let new = mutation(&mut rng, &g, old);
                what += &format!(" [{va}] {old:#x} -> {new:#x};");
                g.write_u64(va, new).expect("write");
                undo.push((va, old));
            }
            if tx.send(Ok(what)).is_err() {
                return;
            }
            let snap = reader.read(&g.memory);
            partial += usize::from(!snap.problems.is_empty());
            assert!(snap.tasks.len() <= 4 * g.truth.tasks.len(), "{} tasks", snap.tasks.len());
            for (va, old) in undo.into_iter().rev() {
                g.write_u64(va, old).expect("restore");
            }
        }
        // Restored, the image reads clean again (at a walk: a probe re-reads only what changes
        // while a task lives, and the last walk may have read a corrupted policy).
        reader.set_rewalk_interval(Duration::ZERO);
        let snap = reader.read(&g.memory);
        assert!(snap.problems.is_empty() && *snap.tasks == g.truth.tasks);
        let _ = tx.send(Err(format!("{partial} of {ITERATIONS} corrupted images read as partial")));
    });
    let mut last = String::from("before the first iteration");
    loop {
        match rx.recv_timeout(bound) {
            Ok(Ok(what)) => last = what,
            Ok(Err(summary)) => {
                eprintln!("{summary}");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a read did not end within {bound:?}: {last}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
                Ok(()) => unreachable!("the worker reports its end"),
                Err(panic) => {
                    eprintln!("panicked after {last}");
                    std::panic::resume_unwind(panic)
                }
            },
        }
    }
    worker.join().expect("worker");
}

#[test]
fn a_forged_list_of_broken_processes_yields_few_problems() {
    // 4000 list_heads packed 16 bytes apart in the scratch space, linked into the task list: each
    // is a "process" whose task_struct overlaps its neighbours and whose thread list is garbage.
    let mut g = guest(10, 1, 24);
    let head = at(g.init_task, "task_struct", "tasks");
    let (next, prev) = (field("list_head", "next"), field("list_head", "prev"));
    let nodes: Vec<Gva> = (0..4000u64).map(|i| Gva(g.scratch.raw() + 16 * i)).collect();
    let ring: Vec<Gva> = std::iter::once(head).chain(nodes.iter().copied()).collect();
    for (i, &node) in ring.iter().enumerate() {
        g.write_u64(next.at(node).expect("va"), ring[(i + 1) % ring.len()].raw()).expect("write");
        g.write_u64(prev.at(node).expect("va"), ring[(i + ring.len() - 1) % ring.len()].raw()).expect("write");
    }
    let (_, snap) = read_bounded(g, HOSTILE_BOUND);
    // At most 100 problems, a line saying the list was abandoned, one counting the rest.
    assert!(!snap.problems.is_empty() && snap.problems.len() <= 102, "{} problems, first: {:?}", snap.problems.len(), snap.problems.first());
    // Each forged task is read once (the N x N reads of shared thread lists are refused).
    assert!(snap.tasks.len() <= 10 + 2 * nodes.len(), "{} tasks", snap.tasks.len());
}
