//! Laying a synthetic guest out: the image writer and the builder that fills it from a spec.

use crate::memory::{Gva, ImageMemory};

use super::super::incremental::ForkCounters;
use super::super::layout::Field;
use super::super::runqueue::{CfsRqState, RunqueueSnapshot};
use super::super::snapshot::GuestTask;
use super::super::tasks::TaskRecord;
use super::super::virt::DirectMapped;
use super::offsets::Offsets;
use super::{
    CgroupTruth, GroundTruth, GuestSpec, Object, ProcessSpec, ProcessTruth, Rng, SyntheticError, SyntheticGuest, TaskSched, TreeTruth,
    ALIGN, COMM_BYTES, DIRECT_MAP_BASE, FIRST_OBJECT, SCRATCH_BYTES,
};

/// The image under construction: bytes from physical 0, and a record of what was laid out.
#[derive(Default)]
pub(super) struct Image {
    bytes: Vec<u8>,
    objects: Vec<Object>,
    fields: Vec<Gva>,
}

/// `base + offset` inside the image (which lies far below the top of the address space).
fn at(base: Gva, offset: u64) -> Gva {
    base.checked_add(offset).unwrap_or(Gva(u64::MAX))
}

impl Image {
    /// Allocates a zeroed object of `size` bytes.
    fn alloc(&mut self, kind: &'static str, size: u64) -> Gva {
        let start = (self.bytes.len() as u64).max(FIRST_OBJECT).next_multiple_of(ALIGN);
        self.bytes.resize(usize::try_from(start + size).unwrap_or(usize::MAX), 0);
        let addr = at(DIRECT_MAP_BASE, start);
        self.objects.push(Object { kind, addr, size });
        addr
    }

    /// The byte range of `len` bytes at `va`.
    fn range(&self, va: Gva, len: usize) -> std::ops::Range<usize> {
        let start = va.checked_offset_from(DIRECT_MAP_BASE).and_then(|o| usize::try_from(o).ok()).unwrap_or(usize::MAX);
        start..start.saturating_add(len)
    }

    /// Writes `value` (its low `field.size` bytes) into `field` of the struct at `base`.
    fn set(&mut self, base: Gva, field: Field, value: u64) {
        let n = usize::try_from(field.size.min(8)).unwrap_or(8);
        let va = at(base, field.offset);
        let range = self.range(va, n);
        self.bytes[range].copy_from_slice(&value.to_le_bytes()[..n]);
        self.fields.push(va);
    }

    /// Writes a pointer-valued `field`.
    fn set_ptr(&mut self, base: Gva, field: Field, value: Gva) {
        self.set(base, field, value.raw());
    }

    /// Writes `data` at `va`.
    fn set_bytes(&mut self, va: Gva, data: &[u8]) {
        let range = self.range(va, data.len());
        self.bytes[range].copy_from_slice(data);
        self.fields.push(va);
    }

    /// A NUL-terminated copy of `text`.
    fn string(&mut self, text: &str) -> Gva {
        let va = self.alloc("string", text.len() as u64 + 1);
        self.set_bytes(va, text.as_bytes());
        va
    }
}

/// A task under construction: its expected record and how it is scheduled.
struct TaskBuild {
    record: TaskRecord,
    sched: TaskSched,
    group: usize,
    uid: u32,
}

/// A cgroup under construction (index 0: the root).
struct GroupBuild {
    truth: CgroupTruth,
    parent: Option<usize>,
    level: usize,
}

/// A queued entity of a CFS runqueue.
#[derive(Clone, Copy)]
enum Entity {
    Task(usize),
    Group(usize),
}

pub(super) struct Builder<'a> {
    pub(super) o: Offsets,
    pub(super) img: Image,
    pub(super) rng: Rng,
    pub(super) spec: &'a GuestSpec,
}

impl Builder<'_> {
    pub(super) fn build(mut self) -> Result<SyntheticGuest, SyntheticError> {
        let cpus = self.spec.cpus;
        let rqs: Vec<Gva> = (0..cpus).map(|cpu| self.runqueue(cpu)).collect();
        let init_cred = self.cred(0);
        let mut groups = self.cgroups(&rqs);
        let init_task = self.img.alloc("task_struct", self.o.task_size);
        // kernel/fork.c's `total_forks` and `nr_threads`, set once the tasks are counted.
        let counters = ForkCounters { total_forks: self.img.alloc("total_forks", 8), nr_threads: self.img.alloc("nr_threads", 4) };
        let mut tasks = Vec::new();
        let mut processes = Vec::new();
        let mut leaders = Vec::new();
        let mut next_pid = 1i32;
        let spec = self.spec;
        for p in &spec.processes {
            let truth = self.process(p, init_task, &groups, &mut next_pid, &mut tasks);
            leaders.push(at(truth.leader, self.o.t.tasks.offset));
            processes.push(truth);
        }
        // init_task and the other CPUs' idle tasks (not on the task list).
        let init_signal = self.img.alloc("signal_struct", self.o.signal_size);
        let mut idles = vec![init_task];
        for cpu in 1..cpus {
            idles.push(self.img.alloc("task_struct", self.o.task_size));
            debug_assert_eq!(idles.len(), cpu as usize + 1);
        }
        for (cpu, &idle) in (0u32..).zip(&idles) {
            self.idle_task(idle, cpu, init_signal, init_cred, &groups, &rqs);
        }
        let head = at(init_task, self.o.t.tasks.offset);
        self.link(head, &leaders);
        let thread_head = at(init_signal, self.o.signal_thread_head.offset);
        self.link(thread_head, &[at(init_task, self.o.t.thread_node.offset)]);

        let mut runqueues = Vec::new();
        let mut trees = Vec::new();
        for (cpu, (&rq, &idle)) in (0u32..).zip(rqs.iter().zip(&idles)) {
            runqueues.push(self.fill_runqueue(cpu, rq, idle, &mut groups, &mut tasks, &mut trees));
        }
        for t in &tasks {
            self.write_task(t);
        }
        // Every task but the idle ones came from a fork; none exited yet.
        let listed = tasks.len() as u64;
        self.img.set(counters.total_forks, Field { offset: 0, size: 8 }, listed);
        self.img.set(counters.nr_threads, Field { offset: 0, size: 4 }, listed);

        let running: Vec<Gva> = runqueues.iter().map(|r| r.curr).collect();
        let queued: Vec<Gva> = runqueues.iter().flat_map(|r| r.cfs_queued.iter().chain(&r.rt_queued)).copied().collect();
        let mut truth_tasks = Vec::with_capacity(tasks.len());
        for p in &processes {
            let exited_leader = !p.threads.contains(&p.leader);
            let order = p.threads.iter().copied().chain(exited_leader.then_some(p.leader));
            for addr in order {
                let Some(t) = tasks.iter().find(|t| t.record.addr == addr) else { continue };
                truth_tasks.push(GuestTask {
                    record: t.record.clone(),
                    state: t.sched.letter(),
                    // Synthetic guests hold no task in xsched's parked state.
                    parked: false,
                    queued: queued.contains(&addr),
                    running: running.contains(&addr),
                    cgroup: Some(groups[t.group].truth.path.as_str().into()),
                    uid: Some(t.uid),
                });
            }
        }
        let scratch = self.img.alloc("scratch", SCRATCH_BYTES);
        let Image { bytes, objects, fields } = self.img;
        Ok(SyntheticGuest {
            memory: DirectMapped::new(ImageMemory::from_bytes(bytes), DIRECT_MAP_BASE),
            init_task,
            counters,
            runqueues: (0u32..).zip(rqs).collect(),
            scratch,
            truth: GroundTruth {
                tasks: truth_tasks,
                processes,
                cgroups: groups.into_iter().map(|g| g.truth).collect(),
                runqueues,
                trees,
                objects,
                fields,
            },
        })
    }

    /// Links `nodes` (`list_head` addresses) into a circular list headed at `head`.
    fn link(&mut self, head: Gva, nodes: &[Gva]) {
        let (next, prev) = (self.o.list_next, self.o.list_prev);
        let ring: Vec<Gva> = std::iter::once(head).chain(nodes.iter().copied()).collect();
        for (i, &node) in ring.iter().enumerate() {
            self.img.set_ptr(node, next, ring[(i + 1) % ring.len()]);
            self.img.set_ptr(node, prev, ring[(i + ring.len() - 1) % ring.len()]);
        }
    }

    /// A `cred` with `uid` (and `euid`) set.
    fn cred(&mut self, uid: u32) -> Gva {
        let cred = self.img.alloc("cred", self.o.cred_size);
        self.img.set(cred, self.o.cred_uid, u64::from(uid));
        self.img.set(cred, self.o.cred_euid, u64::from(uid));
        cred
    }

    /// An empty `struct rq` for `cpu`: empty CFS tree and RT queues, counters zero.
    fn runqueue(&mut self, cpu: u32) -> Gva {
        let rq = self.img.alloc("rq", self.o.rq_size);
        let r = &self.o.rq;
        let (cpu_field, online, clock, clock_task, cfs_tasks, queue, bitmap) = (r.cpu, r.online, r.clock, r.clock_task, r.cfs_tasks, r.rt_queue, r.rt_bitmap);
        self.img.set(rq, cpu_field, u64::from(cpu));
        self.img.set(rq, online, 1);
        let now = 5_000_000_000 + self.rng.below(1_000_000);
        self.img.set(rq, clock, now + 1000);
        self.img.set(rq, clock_task, now);
        self.link(at(rq, cfs_tasks.offset), &[]);
        let list_size = self.o.list_prev.end().max(self.o.list_next.end());
        for prio in 0..queue.size / list_size.max(1) {
            self.link(at(rq, queue.offset + prio * list_size), &[]);
        }
        // The kernel sets the bit after the last priority as a search delimiter.
        self.set_bit(at(rq, bitmap.offset), self.o.max_rt_prio);
        rq
    }

    /// Sets bit `bit` of the bitmap at `va`.
    fn set_bit(&mut self, va: Gva, bit: u64) {
        let byte = at(va, bit / 8);
        let range = self.img.range(byte, 1);
        self.img.bytes[range.start] |= 1 << (bit % 8);
        self.img.fields.push(byte);
    }

    /// The root cgroup and the spec's, each with its kernfs node, `css_set` and task group with
    /// one `cfs_rq` and group entity per CPU.
    fn cgroups(&mut self, rqs: &[Gva]) -> Vec<GroupBuild> {
        let cpus = rqs.len() as u64;
        let specs: Vec<(String, Option<usize>)> =
            std::iter::once((String::new(), None)).chain(self.spec.cgroups.iter().map(|c| (c.name.clone(), Some(c.parent.map_or(0, |p| p + 1))))).collect();
        let mut groups: Vec<GroupBuild> = Vec::with_capacity(specs.len());
        for (i, (name, parent)) in specs.into_iter().enumerate() {
            let (parent_kn, parent_tg, level, path) = match parent {
                None => (Gva(0), Gva(0), 0, "/".to_string()),
                Some(p) => {
                    let g = &groups[p];
                    let path = if g.level == 0 { format!("/{name}") } else { format!("{}/{name}", g.truth.path) };
                    (g.truth.kn, g.truth.task_group, g.level + 1, path)
                }
            };
            let kn = self.img.alloc("kernfs_node", self.o.kn_size);
            let name_va = self.img.string(&name);
            self.img.set_ptr(kn, self.o.kn_name, name_va);
            self.img.set_ptr(kn, self.o.kn_parent, parent_kn);
            self.img.set(kn, self.o.kn_id, i as u64 + 1);
            let cgroup = self.img.alloc("cgroup", self.o.cgroup_size);
            self.img.set_ptr(cgroup, self.o.cgroup_kn, kn);
            self.img.set(cgroup, self.o.cgroup_level, level as u64);
            let css_set = self.img.alloc("css_set", self.o.css_set_size);
            self.img.set_ptr(css_set, self.o.css_set_dfl_cgrp, cgroup);
            let tg = self.img.alloc("task_group", self.o.tg_size);
            self.img.set_ptr(tg, self.o.tg_css_cgroup, cgroup);
            self.img.set_ptr(tg, self.o.tg_parent, parent_tg);
            self.img.set(tg, self.o.tg_shares, self.o.nice_0_load);
            let cfs_array = self.img.alloc("cfs_rq pointers", 8 * cpus);
            let se_array = self.img.alloc("sched_entity pointers", 8 * cpus);
            self.img.set_ptr(tg, self.o.tg_cfs_rq, cfs_array);
            self.img.set_ptr(tg, self.o.tg_se, se_array);
            let mut cfs_rqs = Vec::new();
            let mut entities = Vec::new();
            for (cpu, &rq) in (0u64..).zip(rqs) {
                let slot = Field { offset: 8 * cpu, size: 8 };
                let (cfs_rq, se) = if parent.is_none() {
                    (at(rq, self.o.rq.cfs), Gva(0))
                } else {
                    (self.img.alloc("cfs_rq", self.o.cfs_rq_size), self.img.alloc("sched_entity", self.o.se_size))
                };
                self.img.set_ptr(cfs_rq, self.o.cfs.tg, tg);
                self.img.set_ptr(cfs_rq, self.o.cfs.rq, rq);
                self.img.set(cfs_rq, self.o.cfs.min_vruntime, 1 << 20);
                self.img.set_ptr(cfs_array, slot, cfs_rq);
                self.img.set_ptr(se_array, slot, se);
                if let Some(p) = parent {
                    let parent_cfs_rq = groups[p].truth.cfs_rqs[usize::try_from(cpu).unwrap_or(0)];
                    let parent_se = groups[p].truth.entities[usize::try_from(cpu).unwrap_or(0)];
                    self.img.set_ptr(se, self.o.se.my_q, cfs_rq);
                    self.img.set_ptr(se, self.o.se.cfs_rq, parent_cfs_rq);
                    self.img.set_ptr(se, self.o.se.parent, parent_se);
                    self.img.set(se, self.o.se.depth, level as u64 - 1);
                    self.img.set(se, self.o.se.weight, self.o.nice_0_load);
                }
                cfs_rqs.push(cfs_rq);
                entities.push(se);
            }
            groups.push(GroupBuild {
                truth: CgroupTruth { path, css_set, cgroup, kn, task_group: tg, cfs_rqs, entities },
                parent,
                level,
            });
        }
        groups
    }

    /// Lays out process `p`'s `signal_struct`, `cred` and threads (their records go to `tasks`,
    /// written later); returns where they lie.
    fn process(&mut self, p: &ProcessSpec, init_task: Gva, groups: &[GroupBuild], next_pid: &mut i32, tasks: &mut Vec<TaskBuild>) -> ProcessTruth {
        let first = tasks.len();
        let signal = self.img.alloc("signal_struct", self.o.signal_size);
        let cred = self.cred(p.uid);
        let group = p.cgroup.map_or(0, |c| c + 1);
        let tgid = *next_pid;
        let comm_bytes = &p.comm.as_bytes()[..p.comm.len().min(COMM_BYTES)];
        let comm: std::sync::Arc<str> = String::from_utf8_lossy(comm_bytes).into();
        let mut addrs = Vec::new();
        for &sched in &p.threads {
            let addr = self.img.alloc("task_struct", self.o.task_size);
            let pid = *next_pid;
            *next_pid += 1;
            let cpu = sched.cpu().unwrap_or_else(|| u32::try_from(self.rng.below(u64::from(self.spec.cpus))).unwrap_or(0));
            let cpu_index = cpu as usize;
            let (state, exit_state) = self.o.state_of(sched);
            let on_rq = sched.cpu().is_some();
            let rt_prio = match sched {
                TaskSched::RtQueued { prio, .. } => Some(prio),
                _ => None,
            };
            let static_prio = 120 + p.nice;
            let flags = if p.kthread { self.o.pf_kthread } else { 0 } | 0x40;
            let ti_flags = if self.rng.chance(10) { 1 << self.o.tif_need_resched } else { 0 };
            let record = TaskRecord {
                addr,
                pid,
                tgid,
                comm: comm.clone(),
                comm_bytes: None,
                state: u32::try_from(state).unwrap_or(u32::MAX),
                exit_state: u32::try_from(exit_state).unwrap_or(u32::MAX),
                flags: u32::try_from(flags).unwrap_or(u32::MAX),
                ti_flags,
                cpu,
                on_cpu: matches!(sched, TaskSched::Running { .. }),
                on_rq: u32::from(on_rq),
                prio: rt_prio.map_or(static_prio, |p| i32::try_from(p).unwrap_or(0)),
                static_prio,
                rt_priority: rt_prio.map_or(0, |p| u32::try_from(self.o.max_rt_prio).unwrap_or(100) - 1 - p),
                policy: u32::try_from(if rt_prio.is_some() { self.o.sched_fifo } else { self.o.sched_normal }).unwrap_or(0),
                start_time: 1_000_000_000 + u64::try_from(pid).unwrap_or(0) * 1_000_000 + self.rng.below(1_000_000),
                weight: self.o.weight(p.nice),
                se_on_rq: matches!(sched, TaskSched::Running { .. } | TaskSched::Queued { .. }),
                sum_exec_runtime: self.rng.below(10_000_000_000),
                vruntime: self.rng.below(1 << 40),
                cfs_rq: groups[group].truth.cfs_rqs[cpu_index],
                sched_delayed: false,
                task_group: groups[group].truth.task_group,
                pi_locked: self.rng.chance(2),
                cred,
                css_set: groups[group].truth.css_set,
            };
            tasks.push(TaskBuild { record, sched, group, uid: p.uid });
            addrs.push(addr);
        }
        let leader = addrs[0];
        for (&addr, t) in addrs.iter().zip(&tasks[first..]) {
            self.img.set_ptr(addr, self.o.t.signal, signal);
            self.img.set_ptr(addr, self.o.t.cred, cred);
            self.img.set_ptr(addr, self.o.t.cgroups, groups[t.group].truth.css_set);
            self.img.set_ptr(addr, self.o.t.group_leader, leader);
            self.img.set_ptr(addr, self.o.t.real_parent, init_task);
        }
        let threads: Vec<Gva> = if p.leader_exited { addrs[1..].to_vec() } else { addrs.clone() };
        let nodes: Vec<Gva> = threads.iter().map(|&t| at(t, self.o.t.thread_node.offset)).collect();
        self.link(at(signal, self.o.signal_thread_head.offset), &nodes);
        if p.leader_exited {
            // list_del_init: the node points at itself.
            self.link(at(leader, self.o.t.thread_node.offset), &[]);
        }
        self.img.set(signal, self.o.signal_nr_threads, threads.len() as u64);
        ProcessTruth { leader, signal, cred, threads }
    }

    /// `init_task` (CPU 0) or another CPU's idle task: pid 0, `swapper/N`, never on a list but
    /// its own thread list.
    fn idle_task(&mut self, task: Gva, cpu: u32, signal: Gva, cred: Gva, groups: &[GroupBuild], rqs: &[Gva]) {
        let t = &self.o.t;
        let (comm, cpu_field, flags, prio, static_prio, normal_prio, signal_f, cred_f, cgroups, tg, group_leader) =
            (t.comm, t.cpu, t.flags, t.prio, t.static_prio, t.normal_prio, t.signal, t.cred, t.cgroups, t.sched_task_group, t.group_leader);
        let name = format!("swapper/{cpu}");
        self.img.set_bytes(at(task, comm.offset), name.as_bytes());
        self.img.set(task, cpu_field, u64::from(cpu));
        self.img.set(task, flags, self.o.pf_kthread | 0x2);
        for f in [prio, static_prio, normal_prio] {
            self.img.set(task, f, 120);
        }
        self.img.set_ptr(task, signal_f, signal);
        self.img.set_ptr(task, cred_f, cred);
        self.img.set_ptr(task, cgroups, groups[0].truth.css_set);
        self.img.set_ptr(task, tg, groups[0].truth.task_group);
        self.img.set_ptr(task, group_leader, task);
        let se = at(task, self.o.t.se);
        self.img.set_ptr(se, self.o.se.cfs_rq, at(rqs[cpu as usize], self.o.rq.cfs));
        self.img.set(se, self.o.se.weight, self.o.weight(0));
        if cpu != 0 {
            self.link(at(task, self.o.t.thread_node.offset), &[]);
        }
    }

    /// Lays out CPU `cpu`'s runqueue state: the CFS trees at every group level with the running
    /// chain as `curr`, the RT queues, the counters. Returns the runqueue a reader should see.
    fn fill_runqueue(&mut self, cpu: u32, rq: Gva, idle: Gva, groups: &mut [GroupBuild], tasks: &mut [TaskBuild], trees: &mut Vec<TreeTruth>) -> RunqueueSnapshot {
        let c = cpu as usize;
        let n = groups.len();
        let mut direct: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut h = vec![0u64; n];
        let mut running = None;
        let mut rt: Vec<(u32, usize)> = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            match t.sched {
                TaskSched::Running { cpu: on } if on == cpu => {
                    running = Some(i);
                    h[t.group] += 1;
                }
                TaskSched::Queued { cpu: on } if on == cpu => {
                    direct[t.group].push(i);
                    h[t.group] += 1;
                }
                TaskSched::RtQueued { cpu: on, prio } if on == cpu => rt.push((prio, i)),
                _ => {}
            }
        }
        for g in (1..n).rev() {
            if let Some(p) = groups[g].parent {
                h[p] += h[g];
            }
        }
        // The groups from the running task's up to the root: their entities are `curr`s.
        let mut on_run_path = vec![false; n];
        let mut g = running.map(|i| tasks[i].group);
        while let Some(i) = g {
            on_run_path[i] = true;
            g = groups[i].parent;
        }
        let mut cfs_rqs = Vec::new();
        let mut cfs_queued = Vec::new();
        for g in 0..n {
            if g != 0 && h[g] == 0 {
                continue;
            }
            let cfs_rq = groups[g].truth.cfs_rqs[c];
            let mut entities: Vec<Entity> = direct[g].iter().map(|&i| Entity::Task(i)).collect();
            let children = (g + 1..n).filter(|&ch| groups[ch].parent == Some(g) && h[ch] > 0);
            let mut curr = None;
            for ch in children {
                if on_run_path[ch] {
                    curr = Some(Entity::Group(ch));
                } else {
                    entities.push(Entity::Group(ch));
                }
            }
            if let Some(i) = running.filter(|&i| tasks[i].group == g) {
                curr = Some(Entity::Task(i));
            }
            self.rng.shuffle(&mut entities);
            let min_vruntime = (1 << 30) * (g as u64 + 1) + self.rng.below(1 << 20);
            let mut vruntime = min_vruntime;
            let mut load = 0;
            let mut nodes = Vec::with_capacity(entities.len());
            // The queued entities in vruntime order, then the running one (not in the tree).
            for (k, &e) in entities.iter().chain(&curr).enumerate() {
                let in_tree = k < entities.len();
                let (se, weight) = self.entity(e, tasks, groups, c);
                vruntime += 1 + self.rng.below(3_000_000);
                match e {
                    Entity::Task(i) => {
                        tasks[i].record.vruntime = vruntime;
                        if in_tree {
                            cfs_queued.push(tasks[i].record.addr);
                        }
                    }
                    Entity::Group(_) => {
                        self.img.set(se, self.o.se.vruntime, vruntime);
                        self.img.set(se, self.o.se.on_rq, 1);
                    }
                }
                load += weight;
                if in_tree {
                    nodes.push(at(se, self.o.se.run_node.offset));
                }
            }
            let root = self.tree(&nodes);
            let curr_se = curr.map_or(Gva(0), |e| self.entity(e, tasks, groups, c).0);
            let nr_running = entities.len() as u64 + u64::from(curr.is_some());
            let f = &self.o.cfs;
            let (w, nr, hnr, minv, root_f, leftmost, curr_f) = (f.weight, f.nr_running, f.h_nr_running, f.min_vruntime, f.root, f.leftmost, f.curr);
            self.img.set(cfs_rq, w, load);
            self.img.set(cfs_rq, nr, nr_running);
            self.img.set(cfs_rq, hnr, h[g]);
            self.img.set(cfs_rq, minv, min_vruntime);
            self.img.set_ptr(cfs_rq, root_f, root);
            self.img.set_ptr(cfs_rq, leftmost, nodes.first().copied().unwrap_or(Gva(0)));
            self.img.set_ptr(cfs_rq, curr_f, curr_se);
            cfs_rqs.push(CfsRqState {
                addr: cfs_rq,
                tg: groups[g].truth.task_group,
                nr_running: u32::try_from(nr_running).unwrap_or(u32::MAX),
                h_nr_queued: u32::try_from(h[g]).unwrap_or(u32::MAX),
                load_weight: load,
                vruntime_base: min_vruntime,
                curr: curr_se,
                depth: groups[g].level,
            });
            if !nodes.is_empty() {
                trees.push(TreeTruth { cpu, cfs_rq, nodes });
            }
        }
        // Real-time queues: one list per priority, highest priority (lowest number) first.
        rt.sort_by_key(|&(prio, _)| prio);
        let r = &self.o.rq;
        let (queue, bitmap, rt_nr, nr, curr_f, idle_f, lock, clock_task) = (r.rt_queue, r.rt_bitmap, r.rt_nr_running, r.nr_running, r.curr, r.idle, r.lock, r.clock_task);
        let list_size = self.o.list_prev.end().max(self.o.list_next.end());
        let mut rt_queued = Vec::new();
        for chunk in rt.chunk_by(|a, b| a.0 == b.0) {
            let prio = u64::from(chunk[0].0);
            let nodes: Vec<Gva> = chunk.iter().map(|&(_, i)| at(tasks[i].record.addr, self.o.t.rt_run_list)).collect();
            self.link(at(rq, queue.offset + prio * list_size), &nodes);
            self.set_bit(at(rq, bitmap.offset), prio);
            rt_queued.extend(chunk.iter().map(|&(_, i)| tasks[i].record.addr));
        }
        let curr = running.map_or(idle, |i| tasks[i].record.addr);
        let nr_running = h[0] + rt.len() as u64;
        self.img.set(rq, rt_nr, rt.len() as u64);
        self.img.set(rq, nr, nr_running);
        self.img.set_ptr(rq, curr_f, curr);
        self.img.set_ptr(rq, idle_f, idle);
        self.img.set(rq, lock, 0);
        let clock_task = self.memory_u64(at(rq, clock_task.offset));
        cfs_queued.sort();
        cfs_rqs.sort_by_key(|s| s.addr);
        RunqueueSnapshot {
            cpu,
            addr: rq,
            locked: false,
            nr_running: u32::try_from(nr_running).unwrap_or(u32::MAX),
            curr,
            idle,
            clock_task,
            cfs_queued,
            cfs_rqs,
            rt_queued,
            rt_nr_running: u32::try_from(rt.len()).unwrap_or(u32::MAX),
        }
    }

    /// A `u64` already written to the image.
    fn memory_u64(&self, va: Gva) -> u64 {
        let range = self.img.range(va, 8);
        self.img.bytes.get(range).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
    }

    /// The `sched_entity` of `e` on CPU `c` and its weight.
    fn entity(&self, e: Entity, tasks: &[TaskBuild], groups: &[GroupBuild], c: usize) -> (Gva, u64) {
        match e {
            Entity::Task(i) => (at(tasks[i].record.addr, self.o.t.se), tasks[i].record.weight),
            Entity::Group(g) => (groups[g].truth.entities[c], self.o.nice_0_load),
        }
    }

    /// Lays the `rb_node`s `nodes` (in key order) out as a balanced red-black tree: built by
    /// halving, black but for the deepest level when that is incomplete (which satisfies the
    /// red-black rules). Returns the root (null for no node).
    fn tree(&mut self, nodes: &[Gva]) -> Gva {
        /// A node's `(parent, left, right, depth)`, by index.
        type Shape = (Option<usize>, Option<usize>, Option<usize>, usize);
        fn shape(lo: usize, hi: usize, parent: Option<usize>, depth: usize, out: &mut [Shape]) -> Option<usize> {
            if lo >= hi {
                return None;
            }
            let mid = lo + (hi - lo) / 2;
            let left = shape(lo, mid, Some(mid), depth + 1, out);
            let right = shape(mid + 1, hi, Some(mid), depth + 1, out);
            out[mid] = (parent, left, right, depth);
            Some(mid)
        }
        let mut out = vec![(None, None, None, 0); nodes.len()];
        let Some(root) = shape(0, nodes.len(), None, 0, &mut out) else { return Gva(0) };
        let max_depth = out.iter().map(|s| s.3).max().unwrap_or(0);
        let at_max = out.iter().filter(|s| s.3 == max_depth).count();
        let perfect = u32::try_from(max_depth).ok().and_then(|d| 1usize.checked_shl(d)) == Some(at_max);
        let va = |i: Option<usize>| i.map_or(Gva(0), |i| nodes[i]);
        for (i, &(parent, left, right, depth)) in out.iter().enumerate() {
            let black = u64::from(perfect || depth < max_depth);
            self.img.set(nodes[i], self.o.rb_parent_color, va(parent).raw() | black);
            self.img.set_ptr(nodes[i], self.o.rb_left, va(left));
            self.img.set_ptr(nodes[i], self.o.rb_right, va(right));
        }
        nodes[root]
    }

    /// Writes a task's expected record into its `task_struct`.
    fn write_task(&mut self, t: &TaskBuild) {
        let r = &t.record;
        let a = r.addr;
        let o = &self.o.t;
        let se = at(a, o.se);
        let s = &self.o.se;
        let scalars = [
            (o.pid, u64::from(r.pid.unsigned_abs())),
            (o.tgid, u64::from(r.tgid.unsigned_abs())),
            (o.state, u64::from(r.state)),
            (o.exit_state, u64::from(r.exit_state)),
            (o.flags, u64::from(r.flags)),
            (o.ti_flags, r.ti_flags),
            (o.cpu, u64::from(r.cpu)),
            (o.on_cpu, u64::from(r.on_cpu)),
            (o.on_rq, u64::from(r.on_rq)),
            (o.prio, u64::from(r.prio.unsigned_abs())),
            (o.static_prio, u64::from(r.static_prio.unsigned_abs())),
            (o.normal_prio, u64::from(r.prio.unsigned_abs())),
            (o.rt_priority, u64::from(r.rt_priority)),
            (o.policy, u64::from(r.policy)),
            (o.start_time, r.start_time),
            (o.start_boottime, r.start_time),
            (o.sched_task_group, r.task_group.raw()),
            (o.pi_lock, u64::from(r.pi_locked)),
        ];
        let comm = o.comm;
        for (field, value) in scalars {
            self.img.set(a, field, value);
        }
        self.img.set_bytes(at(a, comm.offset), &r.comm.as_bytes()[..r.comm.len().min(COMM_BYTES)]);
        let entity = [
            (s.weight, r.weight),
            (s.on_rq, u64::from(r.se_on_rq)),
            (s.sum_exec_runtime, r.sum_exec_runtime),
            (s.vruntime, r.vruntime),
            (s.cfs_rq, r.cfs_rq.raw()),
            (s.depth, 0),
        ];
        for (field, value) in entity {
            self.img.set(se, field, value);
        }
    }
}
