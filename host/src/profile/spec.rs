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
                "tasks_timeline",
                "tasks_timeline.rb_root.rb_node",
                "tasks_timeline.rb_leftmost",
                "curr",
                "next",
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
        ("task_group", &["css", "cfs_rq", "shares", "parent", "siblings", "children", "idle"]),
        ("cgroup_subsys_state", &["cgroup", "parent", "id"]),
        // Since Linux 5.5 a cgroup's ID is its kernfs node's (`cgroup_id()` returns `cgrp->kn->id`,
        // commit 743210386c03, "cgroup: use cgrp->kn->id as the cgroup ID"): struct cgroup has no `id`.
        ("cgroup", &["kn", "level"]),
        ("kernfs_node", &["name", "id"]),
        ("css_set", &["dfl_cgrp", "subsys"]),
        ("signal_struct", &["thread_head", "nr_threads"]),
        ("cred", &["uid", "euid"]),
    ],
    constants: &[
        "PREEMPT_NEED_RESCHED",
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
        "SCHED_FIXEDPOINT_SHIFT",
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
        // kernel/fork.c's counters: `total_forks` grows with every fork (copy_process) and
        // `nr_threads` falls with every task unhashed (__unhash_process), both under
        // tasklist_lock: while neither moves, no task joined or left the task list, so the
        // reader re-reads known tasks instead of walking (see `linux::incremental`).
        "total_forks",
        "nr_threads",
    ],
    structs: &[
        // A group's per-CPU entities: `task_group.se` up to 6.x; 7.x keeps each beside its
        // runqueue (`struct cfs_tg_state`, reached through `tg_se()`), so there is none.
        ("task_group", &["se"]),
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
        // 7.x: whether the task blocked (`try_to_block_task`); its wakeup clears it.
        ("task_struct", &["is_blocked"]),
        // CONFIG_RT_GROUP_SCHED.
        ("sched_rt_entity", &["parent", "rt_rq", "my_q"]),
        // CONFIG_SCHED_CLASS_EXT (built into Debian's 7.x): a task whose `sched_class` is this one
        // belongs to a BPF scheduler and to no fair runqueue.
        ("rq", &["scx"]),
    ],
    constants: &[],
};

/// Symbols naming the scheduling classes a task's `sched_class` may point to besides
/// `fair_sched_class` (each where the kernel has it), so a reader can say which class a task is in.
pub const CLASSES: ProfileSpec = ProfileSpec {
    symbols: &["rt_sched_class", "dl_sched_class", "idle_sched_class", "stop_sched_class", "ext_sched_class"],
    structs: &[],
    // The policy of a task a BPF scheduler runs in partial mode (uapi since 6.12).
    constants: &["SCHED_EXT"],
};

/// Linux's CFS before EEVDF (6.1): the timeline ordered by `vruntime`, placement against
/// `min_vruntime` with `sysctl_sched_latency`, one hierarchical count.
pub const CFS: ProfileSpec = ProfileSpec {
    symbols: &["sysctl_sched_latency"],
    structs: &[("cfs_rq", &["nr_running", "idle_nr_running", "idle_h_nr_running", "h_nr_running", "min_vruntime"])],
    constants: &[],
};

/// EEVDF (6.6 and later; the layout of Debian's 6.12): the timeline ordered by `deadline` and
/// augmented with each subtree's `min_vruntime` and `min_slice`, the weighted sums
/// `avg_vruntime`/`avg_load` kept relative to `zero_vruntime`, lag-preserving placement, delayed
/// dequeue, and the hierarchical counts split into queued, runnable and delayed.
///
/// Within 6.12.y, stable updates moved fields (`zero_vruntime` replaced `min_vruntime` as the
/// sums' base; `h_nr_queued`/`h_nr_runnable` replaced `h_nr_running`, as in mainline 6.14): this
/// flavour is the layout after both, as 6.12.117 has it. An earlier 6.12 build matches neither
/// flavour and is refused with the fields it lacks.
pub const EEVDF: ProfileSpec = ProfileSpec {
    symbols: &["sysctl_sched_base_slice", "sysctl_sched_features"],
    structs: &[
        (
            "cfs_rq",
            &[
                "nr_running",
                "idle_nr_running",
                "idle_h_nr_running",
                "h_nr_queued",
                "h_nr_runnable",
                "h_nr_delayed",
                "avg_vruntime",
                "avg_load",
                "zero_vruntime",
            ],
        ),
        (
            "sched_entity",
            &["deadline", "min_vruntime", "min_slice", "vlag", "slice", "sched_delayed", "rel_deadline", "custom_slice"],
        ),
    ],
    constants: &["SCHED_FEAT_PLACE_LAG", "SCHED_FEAT_PLACE_REL_DEADLINE", "SCHED_FEAT_DELAY_ZERO", "TICK_NSEC"],
};

/// EEVDF over a flat runqueue (the layout of Debian's 7.3): every task's entity sits in its CPU's
/// root timeline, weighed by its hierarchical weight `h_load` (the group shares above it folded
/// in, `__calc_prop_weight`); group entities only carry weights and counts. The sums are
/// `sum_w_vruntime`/`sum_weight`, each weight shifted right by `sum_shift` (at least 2, see
/// `avg_vruntime_weight`), the augmented tree keeps `max_slice` too, the root runqueue's running
/// task is `h_curr`, and the counts are `nr_queued` and `h_nr_idle`.
pub const EEVDF_FLAT: ProfileSpec = ProfileSpec {
    symbols: &["sysctl_sched_base_slice", "sysctl_sched_features"],
    structs: &[
        (
            "cfs_rq",
            &[
                "nr_queued",
                "h_nr_queued",
                "h_nr_runnable",
                "h_nr_idle",
                "sum_w_vruntime",
                "sum_weight",
                "sum_shift",
                "zero_vruntime",
                "h_curr",
            ],
        ),
        (
            "sched_entity",
            &[
                "h_load",
                "h_load.weight",
                "h_load.inv_weight",
                "deadline",
                "min_vruntime",
                "min_slice",
                "max_slice",
                "vlag",
                "vprot",
                "slice",
                "sched_delayed",
                "rel_deadline",
                "custom_slice",
            ],
        ),
    ],
    constants: &[
        "SCHED_FEAT_PLACE_LAG",
        "SCHED_FEAT_PLACE_REL_DEADLINE",
        "SCHED_FEAT_PARANOID_AVG",
        "MIN_SHARES",
    ],
};

/// The scheduler flavours xsched can read and steer, by name: a profile must hold all of one.
pub const FLAVOURS: &[(&str, &ProfileSpec)] = &[("cfs", &CFS), ("eevdf", &EEVDF), ("eevdf-flat", &EEVDF_FLAT)];

/// Where x86's per-CPU preempt count lives: a profile must hold all of one of these.
///
/// Linux 6.2 moved it into `struct pcpu_hot` ("x86/percpu: Move preempt_count next to
/// current_task"); 7.x has the plain per-CPU `__preempt_count` again.
pub const PREEMPT_COUNT: &[(&str, &ProfileSpec)] = &[
    ("__preempt_count", &ProfileSpec { symbols: &["__preempt_count"], structs: &[], constants: &[] }),
    ("pcpu_hot", &ProfileSpec { symbols: &["pcpu_hot"], structs: &[("pcpu_hot", &["preempt_count"])], constants: &[] }),
];

/// Where a kernfs node names its parent: a profile must hold one of these. Linux 6.15 made it
/// RCU-protected and renamed it (commit 633488947ef6, "kernfs: Use RCU to access
/// kernfs_node::parent"); `linux::cgroup` takes whichever the profile holds.
pub const KERNFS_PARENT: &[(&str, &ProfileSpec)] = &[
    ("parent", &ProfileSpec { symbols: &[], structs: &[("kernfs_node", &["parent"])], constants: &[] }),
    ("__parent", &ProfileSpec { symbols: &[], structs: &[("kernfs_node", &["__parent"])], constants: &[] }),
];

impl ProfileSpec {
    /// What of this spec `profile` lacks, each entry named (`struct cfs_rq.avg_load`,
    /// `symbol pcpu_hot`, `constant X`); empty when it holds everything.
    pub fn missing_in(&self, profile: &super::Profile) -> Vec<String> {
        let symbols = self.symbols.iter().filter(|s| !profile.symbols.contains_key(**s)).map(|s| format!("symbol {s}"));
        let fields = self.structs.iter().flat_map(|(name, fields)| {
            let layout = profile.structs.get(*name);
            fields.iter().filter(move |f| layout.is_none_or(|l| !l.fields.contains_key(**f))).map(move |f| format!("struct {name}.{f}"))
        });
        let constants = self.constants.iter().filter(|c| !profile.constants.contains_key(**c)).map(|c| format!("constant {c}"));
        symbols.chain(fields).chain(constants).collect()
    }
}

/// The name of the first of `alternatives` that `profile` holds completely, or a sentence naming
/// what each one lacks.
pub fn first_complete(profile: &super::Profile, alternatives: &[(&'static str, &ProfileSpec)]) -> Result<&'static str, String> {
    let mut lacks = Vec::new();
    for (name, spec) in alternatives {
        let missing = spec.missing_in(profile);
        if missing.is_empty() {
            return Ok(name);
        }
        lacks.push(format!("{name} lacks {}", missing.join(", ")));
    }
    Err(lacks.join("; "))
}
