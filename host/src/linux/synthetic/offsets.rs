//! The profile's offsets and constants, resolved for writing a synthetic image.
//!
//! Resolved here independently of the reader's own layouts, so that a wrong field name on either
//! side shows up as a mismatch between what is written and what is read.

use crate::profile::Profile;

use super::super::layout::Field;
use super::{SyntheticError, TaskSched};

/// `sched_prio_to_weight` (kernel/sched/core.c): the load weight of nice -20 ..= 19, unscaled.
const NICE_WEIGHTS: [u64; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904, 3906, 3121, 2501,
    1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
];

/// The profile's offsets and constants, resolved for writing.
pub(super) struct Offsets {
    pub(super) list_next: Field,
    pub(super) list_prev: Field,
    pub(super) rb_parent_color: Field,
    pub(super) rb_left: Field,
    pub(super) rb_right: Field,
    pub(super) task_size: u64,
    pub(super) t: TaskOffsets,
    pub(super) se_size: u64,
    pub(super) se: EntityOffsets,
    pub(super) cfs_rq_size: u64,
    pub(super) cfs: CfsRqOffsets,
    pub(super) rq_size: u64,
    pub(super) rq: RqOffsets,
    pub(super) tg_size: u64,
    pub(super) tg_css_cgroup: Field,
    pub(super) tg_se: Field,
    pub(super) tg_cfs_rq: Field,
    pub(super) tg_shares: Field,
    pub(super) tg_parent: Field,
    pub(super) cgroup_size: u64,
    pub(super) cgroup_kn: Field,
    pub(super) cgroup_level: Field,
    pub(super) kn_size: u64,
    pub(super) kn_name: Field,
    pub(super) kn_parent: Field,
    pub(super) kn_id: Field,
    pub(super) css_set_size: u64,
    pub(super) css_set_dfl_cgrp: Field,
    pub(super) signal_size: u64,
    pub(super) signal_thread_head: Field,
    pub(super) signal_nr_threads: Field,
    pub(super) cred_size: u64,
    pub(super) cred_uid: Field,
    pub(super) cred_euid: Field,
    pub(super) max_rt_prio: u64,
    pub(super) nice_0_load: u64,
    pub(super) states: [u64; 7],
    pub(super) pf_kthread: u64,
    pub(super) tif_need_resched: u64,
    pub(super) sched_normal: u64,
    pub(super) sched_fifo: u64,
}

/// `task_struct` fields (those of `se` and `rt` relative to the task).
pub(super) struct TaskOffsets {
    pub(super) ti_flags: Field,
    pub(super) cpu: Field,
    pub(super) state: Field,
    pub(super) flags: Field,
    pub(super) on_cpu: Field,
    pub(super) on_rq: Field,
    pub(super) prio: Field,
    pub(super) static_prio: Field,
    pub(super) normal_prio: Field,
    pub(super) rt_priority: Field,
    pub(super) policy: Field,
    pub(super) tasks: Field,
    pub(super) exit_state: Field,
    pub(super) pid: Field,
    pub(super) tgid: Field,
    pub(super) real_parent: Field,
    pub(super) group_leader: Field,
    pub(super) thread_node: Field,
    pub(super) start_time: Field,
    pub(super) start_boottime: Field,
    pub(super) comm: Field,
    pub(super) pi_lock: Field,
    pub(super) cgroups: Field,
    pub(super) cred: Field,
    pub(super) signal: Field,
    pub(super) sched_task_group: Field,
    pub(super) se: u64,
    pub(super) rt_run_list: u64,
}

/// `sched_entity` fields.
pub(super) struct EntityOffsets {
    pub(super) weight: Field,
    pub(super) run_node: Field,
    pub(super) on_rq: Field,
    pub(super) sum_exec_runtime: Field,
    pub(super) vruntime: Field,
    pub(super) depth: Field,
    pub(super) parent: Field,
    pub(super) cfs_rq: Field,
    pub(super) my_q: Field,
}

/// `cfs_rq` fields.
pub(super) struct CfsRqOffsets {
    pub(super) weight: Field,
    pub(super) nr_running: Field,
    pub(super) h_nr_running: Field,
    pub(super) min_vruntime: Field,
    pub(super) root: Field,
    pub(super) leftmost: Field,
    pub(super) curr: Field,
    pub(super) rq: Field,
    pub(super) tg: Field,
}

/// `struct rq` fields (`cfs` and `rt` members relative to the rq).
pub(super) struct RqOffsets {
    pub(super) lock: Field,
    pub(super) nr_running: Field,
    pub(super) curr: Field,
    pub(super) idle: Field,
    pub(super) cpu: Field,
    pub(super) online: Field,
    pub(super) clock: Field,
    pub(super) clock_task: Field,
    pub(super) cfs: u64,
    pub(super) cfs_tasks: Field,
    pub(super) rt_nr_running: Field,
    pub(super) rt_bitmap: Field,
    pub(super) rt_queue: Field,
}

/// `field` moved `by` bytes further (a member of an embedded struct).
pub(super) fn shifted(field: Field, by: u64) -> Field {
    Field { offset: field.offset + by, ..field }
}

impl Offsets {
    pub(super) fn from_profile(p: &Profile) -> Result<Self, SyntheticError> {
        let f = |s: &str, name: &str| Field::of(p, s, name);
        let size = |s: &str| p.struct_layout(s).map(|l| l.size);
        let t = |name: &str| f("task_struct", name);
        let e = |name: &str| f("sched_entity", name);
        let c = |name: &str| f("cfs_rq", name);
        let r = |name: &str| f("rq", name);
        let constant = |name: &str| p.constant(name);
        let rt = r("rt")?.offset;
        let active = rt + f("rt_rq", "active")?.offset;
        Ok(Self {
            list_next: f("list_head", "next")?,
            list_prev: f("list_head", "prev")?,
            rb_parent_color: f("rb_node", "__rb_parent_color")?,
            rb_left: f("rb_node", "rb_left")?,
            rb_right: f("rb_node", "rb_right")?,
            task_size: size("task_struct")?,
            t: TaskOffsets {
                ti_flags: t("thread_info.flags")?,
                cpu: t("thread_info.cpu")?,
                state: t("__state")?,
                flags: t("flags")?,
                on_cpu: t("on_cpu")?,
                on_rq: t("on_rq")?,
                prio: t("prio")?,
                static_prio: t("static_prio")?,
                normal_prio: t("normal_prio")?,
                rt_priority: t("rt_priority")?,
                policy: t("policy")?,
                tasks: t("tasks")?,
                exit_state: t("exit_state")?,
                pid: t("pid")?,
                tgid: t("tgid")?,
                real_parent: t("real_parent")?,
                group_leader: t("group_leader")?,
                thread_node: t("thread_node")?,
                start_time: t("start_time")?,
                start_boottime: t("start_boottime")?,
                comm: t("comm")?,
                pi_lock: t("pi_lock")?,
                cgroups: t("cgroups")?,
                cred: t("cred")?,
                signal: t("signal")?,
                sched_task_group: t("sched_task_group")?,
                se: t("se")?.offset,
                rt_run_list: t("rt")?.offset + f("sched_rt_entity", "run_list")?.offset,
            },
            se_size: size("sched_entity")?,
            se: EntityOffsets {
                weight: e("load.weight")?,
                run_node: e("run_node")?,
                on_rq: e("on_rq")?,
                sum_exec_runtime: e("sum_exec_runtime")?,
                vruntime: e("vruntime")?,
                depth: e("depth")?,
                parent: e("parent")?,
                cfs_rq: e("cfs_rq")?,
                my_q: e("my_q")?,
            },
            cfs_rq_size: size("cfs_rq")?,
            cfs: CfsRqOffsets {
                weight: c("load.weight")?,
                nr_running: c("nr_running")?,
                h_nr_running: c("h_nr_running")?,
                min_vruntime: c("min_vruntime")?,
                root: c("tasks_timeline.rb_root.rb_node")?,
                leftmost: c("tasks_timeline.rb_leftmost")?,
                curr: c("curr")?,
                rq: c("rq")?,
                tg: c("tg")?,
            },
            rq_size: size("rq")?,
            rq: RqOffsets {
                lock: r("__lock")?,
                nr_running: r("nr_running")?,
                curr: r("curr")?,
                idle: r("idle")?,
                cpu: r("cpu")?,
                online: r("online")?,
                clock: r("clock")?,
                clock_task: r("clock_task")?,
                cfs: r("cfs")?.offset,
                cfs_tasks: r("cfs_tasks")?,
                rt_nr_running: shifted(f("rt_rq", "rt_nr_running")?, rt),
                rt_bitmap: shifted(f("rt_prio_array", "bitmap")?, active),
                rt_queue: shifted(f("rt_prio_array", "queue")?, active),
            },
            tg_size: size("task_group")?,
            tg_css_cgroup: shifted(f("cgroup_subsys_state", "cgroup")?, f("task_group", "css")?.offset),
            tg_se: f("task_group", "se")?,
            tg_cfs_rq: f("task_group", "cfs_rq")?,
            tg_shares: f("task_group", "shares")?,
            tg_parent: f("task_group", "parent")?,
            cgroup_size: size("cgroup")?,
            cgroup_kn: f("cgroup", "kn")?,
            cgroup_level: f("cgroup", "level")?,
            kn_size: size("kernfs_node")?,
            kn_name: f("kernfs_node", "name")?,
            kn_parent: f("kernfs_node", "parent")?,
            kn_id: f("kernfs_node", "id")?,
            css_set_size: size("css_set")?,
            css_set_dfl_cgrp: f("css_set", "dfl_cgrp")?,
            signal_size: size("signal_struct")?,
            signal_thread_head: f("signal_struct", "thread_head")?,
            signal_nr_threads: f("signal_struct", "nr_threads")?,
            cred_size: size("cred")?,
            cred_uid: f("cred", "uid")?,
            cred_euid: f("cred", "euid")?,
            max_rt_prio: constant("MAX_RT_PRIO")?,
            nice_0_load: constant("NICE_0_LOAD")?,
            states: [
                constant("TASK_RUNNING")?,
                constant("TASK_INTERRUPTIBLE")?,
                constant("TASK_UNINTERRUPTIBLE")?,
                constant("TASK_NOLOAD")?,
                constant("TASK_DEAD")?,
                constant("EXIT_ZOMBIE")?,
                constant("TASK_WAKEKILL")?,
            ],
            pf_kthread: constant("PF_KTHREAD")?,
            tif_need_resched: constant("TIF_NEED_RESCHED")?,
            sched_normal: constant("SCHED_NORMAL")?,
            sched_fifo: constant("SCHED_FIFO")?,
        })
    }

    /// `(__state, exit_state)` of a task scheduled as `sched`.
    pub(super) fn state_of(&self, sched: TaskSched) -> (u64, u64) {
        let [running, interruptible, uninterruptible, noload, dead, zombie, _] = self.states;
        match sched {
            TaskSched::Running { .. } | TaskSched::Queued { .. } | TaskSched::RtQueued { .. } => (running, 0),
            TaskSched::Sleeping => (interruptible, 0),
            TaskSched::Blocked => (uninterruptible, 0),
            TaskSched::Idle => (uninterruptible | noload, 0),
            TaskSched::Zombie => (dead, zombie),
        }
    }

    /// `scale_load(sched_prio_to_weight[nice])`.
    pub(super) fn weight(&self, nice: i32) -> u64 {
        let unscaled = usize::try_from(nice + 20).ok().and_then(|i| NICE_WEIGHTS.get(i)).copied().unwrap_or(1024);
        unscaled * (self.nice_0_load / 1024).max(1)
    }
}
