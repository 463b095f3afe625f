//! What xsched needs from a kernel: the symbols, struct fields and constants a profile carries.
//!
//! `profile gen` extracts exactly these; [`super::Profile::validate`] checks the required ones.
//! Fields are member paths relative to their struct; a dotted path (`se.run_node`) reaches through
//! embedded structs and anonymous unions. Optional entries exist only in some kernel versions or
//! configurations; a comment names what they depend on.

/// A list of symbols, struct fields and constants.
#[derive(Debug)]
pub struct ProfileSpec {
    /// Symbol names.
    pub symbols: &'static [&'static str],
    /// `(struct name, member paths)` pairs.
    pub structs: &'static [(&'static str, &'static [&'static str])],
    /// Constant names (see `profile::gen` for where each comes from).
    pub constants: &'static [&'static str],
}

/// What every supported kernel must provide.
pub const REQUIRED: ProfileSpec = ProfileSpec {
    symbols: &[
        "linux_banner",
        "_text",
        "_end",
        "init_task",
        "init_top_pgt",
        "page_offset_base",
        "phys_base",
        "__per_cpu_offset",
        "nr_cpu_ids",
        "__cpu_online_mask",
        "runqueues",
        "root_task_group",
        "sysctl_sched_latency",
        "sched_prio_to_weight",
        "jiffies_64",
        "fair_sched_class",
        "unknown_nmi_panic",
        "panic_on_unrecovered_nmi",
    ],
    structs: &[
        ("list_head", &["next", "prev"]),
        ("rb_node", &["__rb_parent_color", "rb_right", "rb_left"]),
        ("rb_root_cached", &["rb_root.rb_node", "rb_leftmost"]),
        ("load_weight", &["weight", "inv_weight"]),
        ("raw_spinlock", &["raw_lock"]),
        ("thread_info", &["flags", "cpu"]),
        (
            "task_struct",
            &[
                "thread_info",
                "thread_info.flags",
                "thread_info.cpu",
                "__state",
                "flags",
                "on_cpu",
                "on_rq",
                "prio",
                "static_prio",
                "normal_prio",
                "rt_priority",
                "sched_class",
                "se",
                "rt",
                "sched_task_group",
                "policy",
                "tasks",
                "exit_state",
                "pid",
                "tgid",
                "real_parent",
                "group_leader",
                "thread_node",
                "start_time",
                "start_boottime",
                "comm",
                "pi_lock",
                "cgroups",
                "cred",
                "signal",
            ],
        ),
        (
            "sched_entity",
            &[
                "load",
                "load.weight",
                "load.inv_weight",
                "run_node",
                "group_node",
                "on_rq",
                "exec_start",
                "sum_exec_runtime",
                "vruntime",
                "prev_sum_exec_runtime",
                "nr_migrations",
                "depth",
                "parent",
                "cfs_rq",
                "my_q",
                "runnable_weight",
            ],
        ),
        ("sched_rt_entity", &["run_list", "timeout", "time_slice", "on_rq", "on_list", "back"]),
        (
            "cfs_rq",
            &[
                "load",
                "load.weight",
                "load.inv_weight",
                "nr_running",
                "h_nr_running",
                "idle_nr_running",
                "idle_h_nr_running",
                "min_vruntime",
                "tasks_timeline",
                "tasks_timeline.rb_root.rb_node",
                "tasks_timeline.rb_leftmost",
                "curr",
                "next",
                "last",
                "skip",
                "rq",
                "on_list",
                "leaf_cfs_rq_list",
                "tg",
            ],
        ),
        (
            "rq",
            &[
                "__lock",
                "nr_running",
                "nr_switches",
                "nr_uninterruptible",
                "cfs",
                "rt",
                "curr",
                "idle",
                "stop",
                "clock",
                "clock_task",
                "cpu",
                "online",
                "cfs_tasks",
                "leaf_cfs_rq_list",
                "tmp_alone_branch",
            ],
        ),
        ("rt_rq", &["active", "rt_nr_running", "rr_nr_running", "rt_queued"]),
        ("rt_prio_array", &["bitmap", "queue"]),
        ("task_group", &["css", "se", "cfs_rq", "shares", "parent", "siblings", "children", "idle"]),
        ("cgroup_subsys_state", &["cgroup", "parent", "id"]),
        // Since Linux 5.5 a cgroup's ID is its kernfs node's (`cgroup_id()` returns `cgrp->kn->id`,
        // commit 743210386c03, "cgroup: use cgrp->kn->id as the cgroup ID"): struct cgroup has no `id`.
        ("cgroup", &["kn", "level"]),
        ("kernfs_node", &["name", "parent", "id"]),
        ("css_set", &["dfl_cgrp", "subsys"]),
        ("signal_struct", &["thread_head", "nr_threads"]),
        ("cred", &["uid", "euid"]),
    ],
    constants: &[
        "TASK_RUNNING",
        "TASK_INTERRUPTIBLE",
        "TASK_UNINTERRUPTIBLE",
        "__TASK_STOPPED",
        "__TASK_TRACED",
        "EXIT_DEAD",
        "EXIT_ZOMBIE",
        "TASK_PARKED",
        "TASK_DEAD",
        "TASK_WAKEKILL",
        "TASK_WAKING",
        "TASK_NOLOAD",
        "TASK_NEW",
        "TIF_NEED_RESCHED",
        "PF_KTHREAD",
        "SCHED_NORMAL",
        "SCHED_FIFO",
        "SCHED_RR",
        "SCHED_BATCH",
        "SCHED_IDLE",
        "SCHED_DEADLINE",
        "MAX_RT_PRIO",
        "NICE_0_LOAD",
        "START_KERNEL_MAP",
        "TASK_ON_RQ_QUEUED",
        "PSI_NR_RUNNING",
    ],
};

/// What xsched uses when the kernel has it.
pub const OPTIONAL: ProfileSpec = ProfileSpec {
    symbols: &[
        // CONFIG_PSI: the root pressure group and the static keys that switch PSI off.
        "psi_system",
        "psi_disabled",
        "psi_cgroups_enabled",
        // CONFIG_X86_5LEVEL: whether the running kernel uses 5-level paging.
        "__pgtable_l5_enabled",
        // CONFIG_SCHED_AUTOGROUP.
        "autogroup_default",
    ],
    structs: &[
        // CONFIG_SCHED_AUTOGROUP.
        ("autogroup", &["id", "tg"]),
        ("task_group", &["autogroup"]),
        ("signal_struct", &["autogroup"]),
        // CONFIG_CFS_BANDWIDTH: throttled runqueues are never written to.
        ("cfs_rq", &["throttled", "throttle_count"]),
        // CONFIG_PSI: pressure-stall accounting follows a task's runnable state.
        ("task_struct", &["psi_flags"]),
        ("psi_group", &["parent", "pcpu"]),
        ("psi_group_cpu", &["tasks"]),
        ("cgroup", &["psi"]),
        ("static_key", &["enabled"]),
        // CONFIG_NUMA_BALANCING.
        ("task_struct", &["numa_preferred_nid"]),
        // CONFIG_RT_GROUP_SCHED.
        ("sched_rt_entity", &["parent", "rt_rq", "my_q"]),
    ],
    constants: &[],
};
