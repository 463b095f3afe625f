#!/usr/bin/env python3
"""sched_check: an independent oracle for a guest kernel's fair-scheduler state.

Reads an ELF core of a Linux guest (QEMU ``dump-guest-memory``, with the kernel's VMCOREINFO
note) together with that kernel's vmlinux (DWARF) through drgn, recomputes what the fair
scheduler keeps incrementally (red-black trees, EEVDF augmented values and sums, counts,
lists, PSI task counts) from the trees themselves, and reports every mismatch as JSON on stdout.

It shares no code with xsched's own reader on purpose: every rule below is written from the
kernel source of Linux 6.1 (CFS), 6.12.117 (EEVDF) and 7.3.4 (EEVDF over a flat runqueue) and
names the function it mirrors. What a
kernel has is decided by its DWARF (which members ``struct cfs_rq`` and ``struct sched_entity``
have), never by its version string: fields moved within 6.12.y.

The state is only consistent where the kernel is not in the middle of changing it. Everything
checked here is changed under the CPU's runqueue lock (``rq->__lock``), so a CPU whose lock is
held in the dump is reported as skipped, not checked.

Rules (rule ids as reported; each is checked on every cfs_rq reachable from rq->cfs through
group entities, the group of cfs_rq->curr included, on every online CPU whose rq lock is free):

  rb.root_black rb.parent rb.red_red rb.black_height rb.duplicate rb.leftmost rb.order
      tasks_timeline is a valid red-black tree (lib/rbtree.c) ordered by entity_before():
      deadline (EEVDF) or vruntime (CFS), signed difference, equal keys allowed
  eevdf.min_vruntime   every node: min of its vruntime and its children's (min_vruntime_update)
  eevdf.min_slice      only what the kernel keeps: <= the node's slice, == it at a leaf
  eevdf.avg_load eevdf.avg_vruntime   sums over the tree (avg_vruntime_add/sub), exact mod 2^64
  eevdf.sum_weight eevdf.sum_w_vruntime   7.3: the same over avg_vruntime_weight(h_load.weight)
  eevdf.max_slice      7.3 (min_slice exact too there): the subtree's largest slice
  entity.flat          7.3: only task entities in rq->cfs's tree; the group levels (counts,
                       load, on_rq, depth, parent) are recomputed from the tasks' parent chains
  count.<nr_running|load_weight|idle_nr_running>   flat counts over tree + queued curr
  count.<h_nr_running|h_nr_queued|h_nr_runnable|h_nr_delayed|idle_h_nr_running>
      hierarchical counts recomputed over the tasks below (enqueue_task_fair/dequeue_entities)
  rq.nr_running        root hierarchical count + rt (if rt_queued) + dl_nr_running + stop
  cfs_rq.rq entity.on_rq entity.cfs_rq entity.parent entity.depth entity.curr_in_tree
  entity.delayed task.on_rq task.cpu task.state group.my_q     per-entity consistency
  list.leaf_cfs_rq list.tmp_alone_branch list.cfs_tasks list.corrupt     the rq's lists
  psi.nr_running psi.flags     psi_system's per-CPU TSK_RUNNING count and the tasks' flags
  fault                unreadable memory where the state points (that CPU's checks stop)

Exit status: 0 no violation, 1 violations, 2 usage or I/O error (one line on stderr).
"""

import argparse
import json
import logging
import sys
import time
import traceback

U64 = 1 << 64

# include/linux/sched.h (6.1 and 6.12 alike): task_struct.__state values and on_rq values.
TASK_RUNNING = 0x0000
TASK_DEAD = 0x0080
TASK_WAKING = 0x0200
# kernel/sched/sched.h
TASK_ON_RQ_QUEUED = 1
# include/uapi/linux/sched.h
SCHED_IDLE = 5
# kernel/sched/sched.h: SCHED_FIXEDPOINT_SHIFT; scale_load_down() shifts by it on 64-bit.
SCHED_FIXEDPOINT_SHIFT = 10
# include/linux/rbtree_augmented.h
RB_BLACK = 1
# A tree deeper than this is corrupt (a valid red-black tree of 2^32 nodes is 64 deep).
MAX_RB_DEPTH = 128
# A list longer than this is corrupt or cyclic (more than the guest can have tasks).
MAX_LIST = 1 << 20
# The deepest task-group nesting followed up a parent chain (CONFIG_FAIR_GROUP_SCHED).
MAX_GROUP_DEPTH = 32


def u64(x):
    """x modulo 2^64 (C unsigned 64-bit wraparound)."""
    return x % U64


def s64(x):
    """x as a C s64 after wraparound."""
    x %= U64
    return x - U64 if x >= 1 << 63 else x


def hexaddr(addr):
    """An address as the report prints it."""
    return None if addr is None else f"{addr:#x}"


class Fault(Exception):
    """Unreadable memory where the scheduler's state points: stops the checks of one CPU."""


class Report:
    """Collects violations and notes (allowed observations)."""

    def __init__(self):
        self.violations = []
        self.notes = []

    def violation(self, cpu, rule, expected, found, cfs_rq=None, entity=None, task=None, detail=None):
        """Records one mismatch: rule id, expected and found value, where."""
        v = {
            "cpu": cpu,
            "rule": rule,
            "cfs_rq": hexaddr(cfs_rq),
            "entity": hexaddr(entity),
            "pid": None,
            "comm": None,
            "expected": expected,
            "found": found,
        }
        if task is not None:
            v["pid"], v["comm"] = task
        if detail:
            v["detail"] = detail
        self.violations.append(v)


class Kernel:
    """The guest kernel seen through drgn: types, features from DWARF, readers."""

    def __init__(self, prog):
        import drgn

        self.drgn = drgn
        self.prog = prog
        self.cfs_rq_type = prog.type("struct cfs_rq")
        self.se_type = prog.type("struct sched_entity")
        self.task_type = prog.type("struct task_struct")
        self.rq_type = prog.type("struct rq")
        self.rb_node_type = prog.type("struct rb_node")
        self.list_head_type = prog.type("struct list_head")
        has_cfs = self.cfs_rq_type.has_member
        has_se = self.se_type.has_member
        # EEVDF (6.6+): the tree is ordered by deadline and carries avg_vruntime/avg_load sums;
        # over a flat runqueue (7.3) sum_w_vruntime/sum_weight, weighed by each task's h_load.
        self.flat = has_cfs("sum_w_vruntime") and has_se("h_load")
        self.eevdf = has_se("deadline") and (has_cfs("avg_vruntime") or self.flat)
        self.has_max_slice = has_se("max_slice")
        # entity_key()'s base: zero_vruntime in 6.12.117, cfs_rq->min_vruntime in earlier EEVDF.
        self.key_base = "zero_vruntime" if has_cfs("zero_vruntime") else "min_vruntime"
        self.has_min_slice = has_se("min_slice")
        self.has_delayed = has_se("sched_delayed")
        self.group_sched = has_se("my_q")
        # The flat count: nr_running (6.1, 6.12), nr_queued (later).
        self.nr_field = "nr_queued" if has_cfs("nr_queued") else "nr_running"
        # The hierarchical counts this build has, with what each counts (enqueue_task_fair,
        # dequeue_entities, set_delayed, clear_delayed of 6.12.117; enqueue/dequeue_task_fair 6.1).
        self.h_fields = []
        if has_cfs("h_nr_queued"):
            self.h_fields.append("h_nr_queued")
        elif has_cfs("h_nr_running"):
            self.h_fields.append("h_nr_running")
        if has_cfs("h_nr_runnable"):
            self.h_fields.append("h_nr_runnable")
        if has_cfs("h_nr_delayed"):
            self.h_fields.append("h_nr_delayed")
        self.idle_h_field = next((f for f in ("idle_h_nr_running", "h_nr_idle") if has_cfs(f)), None)
        self.idle_nr_field = "idle_nr_running" if has_cfs("idle_nr_running") else None
        self.queued_field = self.h_fields[0] if self.h_fields else None
        self.has_tg_idle = has_cfs("idle")
        self.has_throttle = has_cfs("throttle_count")
        self.task_cpu_in_task = self.task_type.has_member("cpu")
        self.has_psi = self.task_type.has_member("psi_flags") and self._has_object("psi_system")

    def _has_object(self, name):
        try:
            self.prog[name]
            return True
        except (KeyError, LookupError):
            return False

    def features(self):
        """What the checker decided from DWARF, for the report."""
        return {
            "eevdf": self.eevdf,
            "flat": self.flat,
            "entity_key_base": self.key_base if self.eevdf else None,
            "min_slice": self.has_min_slice,
            "sched_delayed": self.has_delayed,
            "fair_group_sched": self.group_sched,
            "flat_count": self.nr_field,
            "hierarchical_counts": self.h_fields,
            "idle_h_count": self.idle_h_field,
            "idle_count": self.idle_nr_field,
            "psi": self.has_psi,
        }

    def value(self, obj):
        """obj.value_(), with unreadable memory turned into Fault."""
        try:
            return obj.value_()
        except self.drgn.FaultError as e:
            raise Fault(f"unreadable memory: {e}") from e

    def obj(self, type_, addr):
        """An object of type_ at addr."""
        return self.drgn.Object(self.prog, type_, address=addr)

    def se_at(self, addr):
        """The sched_entity at addr."""
        return self.obj(self.se_type, addr)

    def cfs_rq_at(self, addr):
        """The cfs_rq at addr."""
        return self.obj(self.cfs_rq_type, addr)

    def member_offset(self, type_, member):
        """Byte offset of member in type_ (offsetof)."""
        return self.drgn.offsetof(type_, member)


# ---------------------------------------------------------------------------------------------
# Red-black trees (lib/rbtree.c, include/linux/rbtree.h, include/linux/rbtree_augmented.h)
# ---------------------------------------------------------------------------------------------


class RbNode:
    """One node's raw fields: __rb_parent_color, rb_right, rb_left (struct rb_node)."""

    __slots__ = ("addr", "parent_color", "right", "left")

    def __init__(self, k, addr):
        node = k.obj(k.rb_node_type, addr)
        self.addr = addr
        self.parent_color = k.value(node.member_("__rb_parent_color"))
        self.right = k.value(node.rb_right)
        self.left = k.value(node.rb_left)

    def rb_parent(self):
        """rb_parent(): the parent pointer without the colour bits."""
        return self.parent_color & ~3

    def rb_is_black(self):
        """rb_is_black(): colour bit set."""
        return self.parent_color & 1 == RB_BLACK


def rb_first(k, root_node):
    """rb_first(): follow rb_left from the root (None for an empty tree); bounded."""
    node = root_node
    for _ in range(MAX_RB_DEPTH):
        if not node:
            return None
        left = RbNode(k, node).left
        if not left:
            return node
        node = left
    return None


def rb_check_tree(k, report, cpu, cfs_rq, root_node, leftmost, entity_before):
    """Validates a tree and returns its nodes in order.

    Checks (lib/rbtree.c's invariants, as __rb_insert()/__rb_erase_color() keep them): the root
    is black with a null parent; every child's parent pointer is its parent; no red node has a
    red child; every path has the same number of black nodes; no node is reached twice;
    rb_leftmost is rb_first(); in-order neighbours are ordered by entity_before() (equal keys
    allowed: rb_add_cached() sends equal keys right).
    """
    nodes = {}
    order = []
    dup_reported = set()

    def visit(addr, parent, depth):
        """Returns the black height of the subtree at addr (nil = 1); appends in order."""
        if not addr:
            return 1
        if addr in nodes or depth > MAX_RB_DEPTH:
            if addr not in dup_reported:
                dup_reported.add(addr)
                where = f"from {parent:#x}" if parent else "as the root"
                why = "reached again" if addr in nodes else f"deeper than {MAX_RB_DEPTH} levels"
                report.violation(cpu, "rb.duplicate", "each node once", hexaddr(addr), cfs_rq=cfs_rq,
                                 detail=f"{why} {where}")
            return None
        node = RbNode(k, addr)
        nodes[addr] = node
        if node.rb_parent() != parent:
            report.violation(cpu, "rb.parent", hexaddr(parent) if parent else "0x0", hexaddr(node.rb_parent()),
                             cfs_rq=cfs_rq, entity=addr)
        if not node.rb_is_black():
            for child in (node.left, node.right):
                if child and child not in nodes:
                    try:
                        child_black = RbNode(k, child).rb_is_black()
                    except Fault:
                        continue
                    if not child_black:
                        report.violation(cpu, "rb.red_red", "black child of a red node", "red",
                                         cfs_rq=cfs_rq, entity=child, detail=f"parent {addr:#x}")
        left_h = visit(node.left, addr, depth + 1)
        order.append(addr)
        right_h = visit(node.right, addr, depth + 1)
        if left_h is None or right_h is None:
            return None
        if left_h != right_h:
            report.violation(cpu, "rb.black_height", left_h, right_h, cfs_rq=cfs_rq, entity=addr,
                             detail="black height of the left subtree (expected) vs the right (found)")
            return None
        return left_h + (1 if node.rb_is_black() else 0)

    if root_node:
        root = RbNode(k, root_node)
        if not root.rb_is_black():
            report.violation(cpu, "rb.root_black", "black", "red", cfs_rq=cfs_rq, entity=root_node)
        visit(root_node, 0, 0)
    first = order[0] if order else None
    if (leftmost or None) != first:
        report.violation(cpu, "rb.leftmost", hexaddr(first), hexaddr(leftmost or None), cfs_rq=cfs_rq)
    for a, b in zip(order, order[1:]):
        if entity_before(b, a):
            report.violation(cpu, "rb.order", f"{a:#x} not after {b:#x}", f"{b:#x} before {a:#x}",
                             cfs_rq=cfs_rq, entity=b)
    return order, nodes


# ---------------------------------------------------------------------------------------------
# The fair scheduler (kernel/sched/fair.c, kernel/sched/sched.h)
# ---------------------------------------------------------------------------------------------


def scale_load_down(w):
    """scale_load_down() on 64-bit (kernel/sched/sched.h): w >> 10, but at least 2 if w != 0."""
    if w:
        return max(2, w >> SCHED_FIXEDPOINT_SHIFT)
    return 0


class Entity:
    """A sched_entity's fields the rules need."""

    def __init__(self, k, addr, run_node_offset):
        se = k.se_at(addr)
        self.addr = addr
        self.run_node = addr + run_node_offset
        self.on_rq = k.value(se.on_rq)
        self.weight = k.value(se.load.weight)
        self.vruntime = k.value(se.vruntime)
        self.my_q = k.value(se.my_q) if k.group_sched else 0
        self.cfs_rq = k.value(se.cfs_rq) if k.group_sched else None
        self.parent = k.value(se.parent) if k.group_sched else None
        self.depth = k.value(se.depth) if k.group_sched else None
        self.deadline = k.value(se.deadline) if k.eevdf else None
        self.min_vruntime = k.value(se.min_vruntime) if k.eevdf else None
        self.slice = k.value(se.slice) if k.has_min_slice else None
        self.min_slice = k.value(se.min_slice) if k.has_min_slice else None
        self.max_slice = k.value(se.max_slice) if k.has_max_slice else None
        self.h_weight = k.value(se.h_load.weight) if k.flat else None
        self.sched_delayed = bool(k.value(se.sched_delayed)) if k.has_delayed else False
        self.task = None
        if not self.my_q:
            self.task = Task(k, addr - k.member_offset(k.task_type, "se"))

    def entity_is_task(self):
        """entity_is_task(): no my_q (kernel/sched/sched.h)."""
        return not self.my_q

    def who(self):
        """(pid, comm) of a task entity, else None."""
        return (self.task.pid, self.task.comm) if self.task else None


class Task:
    """A task_struct's fields the rules need."""

    def __init__(self, k, addr):
        t = k.obj(k.task_type, addr)
        self.addr = addr
        self.pid = k.value(t.pid)
        try:
            self.comm = t.comm.string_().decode(errors="replace")
        except k.drgn.FaultError as e:
            raise Fault(f"unreadable task at {addr:#x}: {e}") from e
        self.on_rq = k.value(t.on_rq)
        self.state = k.value(t.member_("__state"))
        self.policy = k.value(t.policy)
        self.cpu = k.value(t.cpu) if k.task_cpu_in_task else k.value(t.thread_info.cpu)
        self.psi_flags = k.value(t.psi_flags) if k.has_psi else None
        self.delayed = bool(k.value(t.se.sched_delayed)) if k.has_delayed else False

    def task_has_idle_policy(self):
        """task_has_idle_policy(): SCHED_IDLE (kernel/sched/sched.h)."""
        return self.policy == SCHED_IDLE


def avg_vruntime_weight(sum_shift, w):
    """avg_vruntime_weight() (7.3 fair.c, 64-bit): w >> sum_shift, at least 2, when shifted."""
    if sum_shift:
        return max(2, w >> sum_shift)
    return w


def entity_key(cfs_rq_base, se):
    """entity_key() (6.12.117 fair.c): (s64)(se->vruntime - cfs_rq->zero_vruntime)."""
    return s64(se.vruntime - cfs_rq_base)


def entity_before(k, a, b):
    """entity_before(): (s64)(a->deadline - b->deadline) < 0 for EEVDF, vruntime for 6.1 CFS."""
    if k.eevdf:
        return s64(a.deadline - b.deadline) < 0
    return s64(a.vruntime - b.vruntime) < 0


def vruntime_gt(a, b):
    """vruntime_gt(min_vruntime, a, b): (s64)(a - b) > 0 (6.12 fair.c)."""
    return s64(a - b) > 0


def min_vruntime_update(se, left, right):
    """What min_vruntime_update() (6.12 fair.c) computes for se: (min_vruntime, min_slice).

    Same order as the kernel: own value, then the right child, then the left child, each
    compared as __min_vruntime_update() (signed difference) / __min_slice_update() (unsigned).
    """
    min_v = se.vruntime
    min_s = se.slice
    for child in (right, left):
        if child is not None:
            if vruntime_gt(min_v, child.min_vruntime):
                min_v = child.min_vruntime
            if min_s is not None and child.min_slice < min_s:
                min_s = child.min_slice
    return min_v, min_s


class CfsRqResult:
    """Recomputed counts of one cfs_rq (over the tree and curr), for the parent's sums."""

    def __init__(self):
        self.h = {}
        self.idle_h = 0
        self.nr = 0


class CpuChecker:
    """Checks one CPU's runqueue."""

    def __init__(self, k, report, cpu, rq):
        self.k = k
        self.report = report
        self.cpu = cpu
        self.rq = rq
        self.rq_addr = rq.address_
        self.run_node_offset = k.member_offset(k.se_type, "run_node")
        self.group_node_offset = k.member_offset(k.se_type, "group_node")
        self.leaf_offset = k.member_offset(k.cfs_rq_type, "leaf_cfs_rq_list") if k.group_sched else None
        self.seen_cfs_rqs = set()
        self.queued_tasks = {}  # task_struct address -> Task (in a tree, or curr with on_rq)
        self.summary_trees = []

    def violation(self, rule, expected, found, **kw):
        """Shorthand for report.violation on this CPU."""
        self.report.violation(self.cpu, rule, expected, found, **kw)

    def cfs_rq_is_idle(self, cfs_rq):
        """cfs_rq_is_idle(): cfs_rq->idle > 0 (fair.c, FAIR_GROUP_SCHED)."""
        return self.k.has_tg_idle and self.k.value(cfs_rq.idle) > 0

    def se_is_idle(self, se):
        """se_is_idle() (fair.c): a SCHED_IDLE task, or a group whose cfs_rq is idle."""
        if se.entity_is_task():
            return se.task.task_has_idle_policy()
        return self.cfs_rq_is_idle(self.k.cfs_rq_at(se.my_q))

    def check_cfs_rq(self, addr, owner, depth):
        """Checks the cfs_rq at addr (owned by group entity owner, None for rq->cfs) and every
        cfs_rq below it; returns its recomputed CfsRqResult."""
        k = self.k
        result = CfsRqResult()
        if addr in self.seen_cfs_rqs:
            self.violation("rb.duplicate", "each cfs_rq once", hexaddr(addr), cfs_rq=addr,
                           detail="cfs_rq reached twice through group entities")
            return result
        self.seen_cfs_rqs.add(addr)
        cfs_rq = k.cfs_rq_at(addr)
        summary = {"cfs_rq": hexaddr(addr), "group": self.group_name(cfs_rq, owner), "depth": depth}
        self.summary_trees.append(summary)
        if k.group_sched and k.value(cfs_rq.rq) != self.rq_addr:
            self.violation("cfs_rq.rq", hexaddr(self.rq_addr), hexaddr(k.value(cfs_rq.rq)), cfs_rq=addr)

        timeline = cfs_rq.tasks_timeline
        root_node = k.value(timeline.rb_root.rb_node)
        leftmost = k.value(timeline.rb_leftmost)
        entities = {}

        def entity(node_addr):
            if node_addr not in entities:
                entities[node_addr] = Entity(k, node_addr - self.run_node_offset, self.run_node_offset)
            return entities[node_addr]

        order, rbnodes = rb_check_tree(
            k, self.report, self.cpu, addr, root_node, leftmost,
            lambda a, b: entity_before(k, entity(a), entity(b)),
        )
        tree = [entity(n) for n in order]

        curr_addr = k.value(cfs_rq.curr)
        curr = Entity(k, curr_addr, self.run_node_offset) if curr_addr else None
        if curr is not None and curr.run_node in rbnodes:
            # set_next_entity(): 'current' is not kept within the tree.
            self.violation("entity.curr_in_tree", "curr out of the tree", "curr in the tree",
                           cfs_rq=addr, entity=curr_addr, task=curr.who())
        queued = list(tree)
        if curr is not None and curr.on_rq and curr.run_node not in rbnodes:
            queued.append(curr)

        if k.eevdf:
            self.check_eevdf(addr, cfs_rq, tree, rbnodes, entities)

        for se in tree:
            self.check_entity(addr, owner, depth, se, in_tree=True)
        if curr is not None and curr.on_rq:
            self.check_entity(addr, owner, depth, curr, in_tree=False)

        # Counts (account_entity_enqueue()/account_entity_dequeue()).
        nr = len(queued)
        result.nr = nr
        found_nr = k.value(getattr(cfs_rq, k.nr_field))
        if found_nr != nr:
            self.violation(f"count.{k.nr_field}", nr, found_nr, cfs_rq=addr,
                           detail="entities in the tree + curr if curr->on_rq")
        load = sum(se.weight for se in queued)
        found_load = k.value(cfs_rq.load.weight)
        if u64(found_load) != u64(load):
            self.violation("count.load_weight", load, found_load, cfs_rq=addr,
                           detail="sum of se->load.weight over the tree + curr")
        if k.idle_nr_field:
            idle_nr = sum(1 for se in queued if self.se_is_idle(se))
            found = k.value(getattr(cfs_rq, k.idle_nr_field))
            if found != idle_nr:
                self.violation(f"count.{k.idle_nr_field}", idle_nr, found, cfs_rq=addr,
                               detail="entities with se_is_idle()")

        # Hierarchical counts: each task counts once in every cfs_rq above it
        # (enqueue_task_fair(), dequeue_entities(), set_delayed(), clear_delayed()).
        h = {f: 0 for f in k.h_fields}
        idle_h = 0
        children = []
        for se in queued:
            if se.entity_is_task():
                for f in k.h_fields:
                    h[f] += self.task_counts_in(f, se)
                if se.task.task_has_idle_policy():
                    idle_h += 1
                self.queued_tasks[se.task.addr] = (se.task, addr, se)
            else:
                children.append(se)
        for se in children:
            child = self.check_cfs_rq(se.my_q, se, depth + 1)
            for f in k.h_fields:
                h[f] += child.h.get(f, 0)
            # A task below an idle group counts as idle above it (enqueue_task_fair():
            # "if (cfs_rq_is_idle(cfs_rq)) idle_h_nr_running = 1").
            if self.cfs_rq_is_idle(k.cfs_rq_at(se.my_q)):
                idle_h += child.h.get(k.queued_field, 0)
            else:
                idle_h += child.idle_h
            # A queued group entity has work below it, unless it is delayed: set_delayed() only
            # delays a group whose cfs_rq emptied ("Delayed se of cfs_rq have no tasks queued").
            if se.sched_delayed != (child.nr == 0):
                self.violation("group.my_q", "empty" if se.sched_delayed else "non-empty",
                               f"{child.nr} entities", cfs_rq=addr, entity=se.addr,
                               detail="delayed" if se.sched_delayed else "not delayed")
        for f in k.h_fields:
            found = k.value(getattr(cfs_rq, f))
            if found != h[f]:
                self.violation(f"count.{f}", h[f], found, cfs_rq=addr)
        if k.idle_h_field:
            found = k.value(getattr(cfs_rq, k.idle_h_field))
            if found != idle_h:
                self.violation(f"count.{k.idle_h_field}", idle_h, found, cfs_rq=addr)
        result.h = h
        result.idle_h = idle_h

        if nr > 0 and k.group_sched:
            # enqueue_entity(): list_add_leaf_cfs_rq() once nr_running becomes 1.
            if not k.value(cfs_rq.on_list):
                self.violation("list.leaf_cfs_rq", "on_list 1", "on_list 0", cfs_rq=addr)
            elif addr not in self.leaf_list:
                self.violation("list.leaf_cfs_rq", "on rq->leaf_cfs_rq_list", "missing", cfs_rq=addr)

        summary.update(tree_size=len(tree), curr=hexaddr(curr_addr or None), nr=nr, h=h)
        return result

    def task_counts_in(self, field, se):
        """Whether a queued task entity counts in field (6.12.117: h_nr_queued counts every
        queued task, delayed ones too; h_nr_runnable those not delayed; h_nr_delayed the delayed
        ones. 6.1's h_nr_running counts every queued task)."""
        if field == "h_nr_runnable":
            return 0 if se.sched_delayed else 1
        if field == "h_nr_delayed":
            return 1 if se.sched_delayed else 0
        return 1

    def check_entity(self, cfs_rq_addr, owner, depth, se, in_tree):
        """Rules for one queued entity (in the tree, or curr with on_rq)."""
        k = self.k
        who = se.who()
        if se.on_rq != 1:
            self.violation("entity.on_rq", 1, se.on_rq, cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if k.group_sched:
            # set_task_rq()/init_tg_cfs_entry(): se->cfs_rq is the cfs_rq it is queued on,
            # se->parent the group entity owning that cfs_rq, se->depth one more than the parent's.
            if se.cfs_rq != cfs_rq_addr:
                self.violation("entity.cfs_rq", hexaddr(cfs_rq_addr), hexaddr(se.cfs_rq), cfs_rq=cfs_rq_addr,
                               entity=se.addr, task=who)
            want_parent = owner.addr if owner else 0
            if se.parent != want_parent:
                self.violation("entity.parent", hexaddr(want_parent), hexaddr(se.parent), cfs_rq=cfs_rq_addr,
                               entity=se.addr, task=who)
            if se.depth != depth:
                self.violation("entity.depth", depth, se.depth, cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if se.sched_delayed and not in_tree:
            # pick_next_entity() dequeues a delayed entity instead of running it; put_prev_entity()
            # puts a prev that was delayed back into the tree, all under the rq lock.
            self.violation("entity.delayed", "a delayed entity is not curr", "delayed curr",
                           cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if se.task is None:
            return
        self.check_task(cfs_rq_addr, se, in_tree)

    def check_task(self, cfs_rq_addr, se, in_tree):
        """Rules for a queued task entity: its task's on_rq, CPU and state."""
        t = se.task
        who = se.who()
        # activate_task(): p->on_rq = TASK_ON_RQ_QUEUED once enqueued.
        if t.on_rq != TASK_ON_RQ_QUEUED:
            self.violation("task.on_rq", TASK_ON_RQ_QUEUED, t.on_rq, cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        # set_task_cpu() before every enqueue on another CPU.
        if t.cpu != self.cpu:
            self.violation("task.cpu", self.cpu, t.cpu, cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        self.check_task_state(cfs_rq_addr, se, in_tree)

    def check_task_state(self, cfs_rq_addr, se, in_tree):
        """__state of a queued task.

        Allowed: curr may have any state (set_current_state() precedes schedule()); a queued
        task that is not delayed is normally TASK_RUNNING but may keep a sleeping state if it
        was preempted between set_current_state() and schedule() (__schedule() only blocks
        on a non-preempt switch), so that is noted, not a violation. Never allowed: TASK_WAKING
        (try_to_wake_up() sets it only for tasks with on_rq == 0), TASK_DEAD on a task that is
        not curr (do_task_dead() runs with preemption off), and a delayed task in TASK_RUNNING
        (ttwu_runnable() requeues a delayed task under the rq lock before ttwu_do_wakeup()).
        """
        t = se.task
        who = se.who()
        if t.state & TASK_WAKING:
            self.violation("task.state", "not TASK_WAKING", hex(t.state), cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if not in_tree:
            return
        if t.state & TASK_DEAD:
            self.violation("task.state", "not TASK_DEAD", hex(t.state), cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if se.sched_delayed and t.state == TASK_RUNNING:
            self.violation("task.state", "a sleeping state (delayed dequeue)", "TASK_RUNNING",
                           cfs_rq=cfs_rq_addr, entity=se.addr, task=who)
        if not se.sched_delayed and t.state != TASK_RUNNING:
            self.report.notes.append(
                f"cpu {self.cpu}: task {t.pid} ({t.comm}) queued with __state {t.state:#x} "
                "(preempted on its way to sleep)")

    def check_eevdf(self, addr, cfs_rq, tree, rbnodes, entities):
        """EEVDF augmented values and sums of one cfs_rq."""
        k = self.k
        # Augmented values: RB_DECLARE_CALLBACKS(min_vruntime_cb, ..., min_vruntime,
        # min_vruntime_update). The callbacks' copy and rotate copy only RBAUGMENTED, i.e.
        # se->min_vruntime, and then recompute the old node; min_vruntime_update() recomputes
        # both values on every propagate. So min_vruntime is exact at every node, but min_slice
        # is not: after a rotation the node that moved up keeps the min_slice of its smaller,
        # former subtree until a later propagate passes it, and a propagate that stops early
        # (both values unchanged) can leave an ancestor's min_slice below every slice left in
        # its subtree after an erase. What the kernel does guarantee: a node's min_slice is
        # never above its own slice (set to slice by __enqueue_entity(), recomputed by every
        # min_vruntime_update() on the node, and every change of an in-tree se->slice is
        # followed by min_vruntime_cb_propagate() from that node), and a leaf's min_slice is
        # its slice (a node that loses children is recomputed by the erase's propagate or as
        # the old node of a rotation). Only that is checked.
        # A link to the root is no child (the root has no parent): rb.duplicate reports it, and
        # the subtree minimum is taken over the real children only.
        root = cfs_rq.tasks_timeline.rb_root.rb_node.value_()
        if k.flat:
            return self.check_flat_eevdf(addr, cfs_rq, tree, rbnodes, entities, root)
        for se in tree:
            node = rbnodes[se.run_node]
            left = entities.get(node.left) if node.left in rbnodes and node.left != root else None
            right = entities.get(node.right) if node.right in rbnodes and node.right != root else None
            want_v, _ = min_vruntime_update(se, left, right)
            if u64(se.min_vruntime) != u64(want_v):
                self.violation("eevdf.min_vruntime", want_v, se.min_vruntime, cfs_rq=addr, entity=se.addr,
                               task=se.who(), detail="min(vruntime, children's min_vruntime)")
            if k.has_min_slice:
                if left is None and right is None:
                    if se.min_slice != se.slice:
                        self.violation("eevdf.min_slice", se.slice, se.min_slice, cfs_rq=addr, entity=se.addr,
                                       task=se.who(), detail="a leaf's min_slice is its slice")
                elif se.min_slice > se.slice:
                    self.violation("eevdf.min_slice", f"<= {se.slice}", se.min_slice, cfs_rq=addr,
                                   entity=se.addr, task=se.who(), detail="min_slice above the node's own slice")
        if k.has_min_slice:
            self.note_inexact_min_slice(tree, rbnodes, entities)
        # avg_vruntime_add()/avg_vruntime_sub(): over the entities in the tree (curr is out of it),
        # avg_load = sum of scale_load_down(weight), avg_vruntime = sum of entity_key() * that,
        # in u64/s64 wraparound arithmetic; update_zero_vruntime() keeps the sum exact when the
        # base moves.
        base = k.value(getattr(cfs_rq, k.key_base))
        want_load = sum(scale_load_down(se.weight) for se in tree)
        want_avg = sum(entity_key(base, se) * scale_load_down(se.weight) for se in tree)
        found_load = k.value(cfs_rq.avg_load)
        found_avg = k.value(cfs_rq.avg_vruntime)
        if u64(found_load) != u64(want_load):
            self.violation("eevdf.avg_load", want_load, found_load, cfs_rq=addr)
        if u64(found_avg) != u64(want_avg):
            self.violation("eevdf.avg_vruntime", s64(want_avg), s64(found_avg), cfs_rq=addr,
                           detail=f"base {k.key_base} = {base}")

    def check_flat_eevdf(self, addr, cfs_rq, tree, rbnodes, entities, root):
        """7.3's augmented values and sums. RB_DECLARE_CALLBACKS_MULTI(min_vruntime_cb, ...,
        min_vruntime_copy, min_vruntime_update): copy and rotate copy all three values, so
        min_vruntime, min_slice and max_slice are exact at every node. __enqueue_entity() and
        __dequeue_entity() add and remove avg_vruntime_weight(cfs_rq, se->h_load.weight) and
        entity_key() times it (sum_w_vruntime_add/sub), relative to zero_vruntime."""
        k = self.k
        for se in tree:
            node = rbnodes[se.run_node]
            kids = [entities.get(c) for c in (node.right, node.left) if c in rbnodes and c != root]
            kids = [c for c in kids if c is not None]
            want_v, _ = min_vruntime_update(se, kids[0] if kids else None, kids[1] if len(kids) > 1 else None)
            if u64(se.min_vruntime) != u64(want_v):
                self.violation("eevdf.min_vruntime", want_v, se.min_vruntime, cfs_rq=addr, entity=se.addr,
                               task=se.who(), detail="min(vruntime, children's min_vruntime)")
            want_min = min([se.slice] + [c.min_slice for c in kids])
            if se.min_slice != want_min:
                self.violation("eevdf.min_slice", want_min, se.min_slice, cfs_rq=addr, entity=se.addr,
                               task=se.who(), detail="min(slice, children's min_slice)")
            if k.has_max_slice:
                want_max = max([se.slice] + [c.max_slice for c in kids])
                if se.max_slice != want_max:
                    self.violation("eevdf.max_slice", want_max, se.max_slice, cfs_rq=addr, entity=se.addr,
                                   task=se.who(), detail="max(slice, children's max_slice)")
        shift = k.value(cfs_rq.sum_shift)
        base = k.value(cfs_rq.zero_vruntime)
        want_weight = sum(avg_vruntime_weight(shift, se.h_weight) for se in tree)
        want_sum = sum(entity_key(base, se) * avg_vruntime_weight(shift, se.h_weight) for se in tree)
        found_weight = k.value(cfs_rq.sum_weight)
        found_sum = k.value(cfs_rq.sum_w_vruntime)
        if u64(found_weight) != u64(want_weight):
            self.violation("eevdf.sum_weight", want_weight, found_weight, cfs_rq=addr, detail=f"sum_shift {shift}")
        if u64(found_sum) != u64(want_sum):
            self.violation("eevdf.sum_w_vruntime", s64(want_sum), s64(found_sum), cfs_rq=addr,
                           detail=f"base zero_vruntime = {base}, sum_shift {shift}")

    def check_flat(self, addr):
        """7.3's flat runqueue rq->cfs at addr: its tree holds every queued task entity (of any
        group; __enqueue_entity() warns on anything else) and curr is the running task's; group
        entities are in no tree. enqueue_hierarchy()/dequeue_hierarchy() keep, per cfs_rq on a
        task's parent chain, nr_queued and load.weight over the entities queued directly on it
        (account_entity_enqueue()), h_nr_queued/h_nr_runnable/h_nr_idle over the tasks below; a
        group entity stays queued while anything is queued below it (dequeue_hierarchy():
        "Don't dequeue parent if it has other entities besides us"), and only task entities are
        ever delayed (set_delayed() in dequeue_entity()). So every level is recomputed from the
        queued tasks' parent chains."""
        k = self.k
        result = CfsRqResult()
        self.seen_cfs_rqs.add(addr)
        cfs_rq = k.cfs_rq_at(addr)
        summary = {"cfs_rq": hexaddr(addr), "group": "/", "depth": 0}
        self.summary_trees.append(summary)
        timeline = cfs_rq.tasks_timeline
        entities = {}

        def entity(node_addr):
            if node_addr not in entities:
                entities[node_addr] = Entity(k, node_addr - self.run_node_offset, self.run_node_offset)
            return entities[node_addr]

        order, rbnodes = rb_check_tree(
            k, self.report, self.cpu, addr, k.value(timeline.rb_root.rb_node), k.value(timeline.rb_leftmost),
            lambda a, b: entity_before(k, entity(a), entity(b)),
        )
        tree = [entity(n) for n in order]
        curr_addr = k.value(cfs_rq.curr)
        curr = Entity(k, curr_addr, self.run_node_offset) if curr_addr else None
        if curr is not None and curr.run_node in rbnodes:
            self.violation("entity.curr_in_tree", "curr out of the tree", "curr in the tree",
                           cfs_rq=addr, entity=curr_addr, task=curr.who())
        self.check_eevdf(addr, cfs_rq, tree, rbnodes, entities)
        queued = [(se, True) for se in tree]
        if curr is not None and curr.on_rq and curr.run_node not in rbnodes:
            queued.append((curr, False))

        levels = {addr: {"entities": {}, "h_nr_queued": 0, "h_nr_runnable": 0, "h_nr_idle": 0}}
        for se, in_tree in queued:
            if not se.entity_is_task():
                self.violation("entity.flat", "only task entities queued on rq->cfs", "a group entity",
                               cfs_rq=addr, entity=se.addr)
                continue
            self.check_task(se.cfs_rq, se, in_tree)
            self.queued_tasks[se.task.addr] = (se.task, se.cfs_rq, se)
            chain = [se]
            while chain[-1].parent and len(chain) <= MAX_GROUP_DEPTH:
                chain.append(Entity(k, chain[-1].parent, self.run_node_offset))
            idle = 1 if se.task.task_has_idle_policy() else 0
            for i, e in enumerate(chain):
                want_depth = len(chain) - 1 - i
                if e.depth != want_depth:
                    self.violation("entity.depth", want_depth, e.depth, cfs_rq=e.cfs_rq, entity=e.addr, task=e.who())
                if e.on_rq != 1:
                    self.violation("entity.on_rq", 1, e.on_rq, cfs_rq=e.cfs_rq, entity=e.addr, task=e.who(),
                                   detail="on the parent chain of a queued task")
                if i + 1 < len(chain) and chain[i + 1].my_q != e.cfs_rq:
                    self.violation("entity.parent", hexaddr(e.cfs_rq), hexaddr(chain[i + 1].my_q), cfs_rq=e.cfs_rq,
                                   entity=e.addr, task=e.who(), detail="the parent's my_q is the entity's cfs_rq")
                if i + 1 == len(chain) and e.cfs_rq != addr:
                    self.violation("entity.cfs_rq", hexaddr(addr), hexaddr(e.cfs_rq), cfs_rq=addr, entity=e.addr,
                                   task=e.who(), detail="the top entity is on rq->cfs")
                lv = levels.setdefault(e.cfs_rq, {"entities": {}, "h_nr_queued": 0, "h_nr_runnable": 0, "h_nr_idle": 0})
                lv["entities"][e.addr] = e
                lv["h_nr_queued"] += 1
                lv["h_nr_runnable"] += 0 if se.sched_delayed else 1
                lv["h_nr_idle"] += idle
                if self.cfs_rq_is_idle(k.cfs_rq_at(e.cfs_rq)):
                    idle = 1
        for c, lv in levels.items():
            obj = k.cfs_rq_at(c)
            if c != addr:
                self.seen_cfs_rqs.add(c)
                if k.value(obj.rq) != self.rq_addr:
                    self.violation("cfs_rq.rq", hexaddr(self.rq_addr), hexaddr(k.value(obj.rq)), cfs_rq=c)
            nr = len(lv["entities"])
            found = k.value(getattr(obj, k.nr_field))
            if found != nr:
                self.violation(f"count.{k.nr_field}", nr, found, cfs_rq=c,
                               detail="entities on it of the queued tasks' parent chains")
            load = sum(e.weight for e in lv["entities"].values())
            found = k.value(obj.load.weight)
            if u64(found) != u64(load):
                self.violation("count.load_weight", load, found, cfs_rq=c, detail="sum of their se->load.weight")
            for f in k.h_fields + ([k.idle_h_field] if k.idle_h_field else []):
                found = k.value(getattr(obj, f))
                if found != lv.get(f, 0):
                    self.violation(f"count.{f}", lv.get(f, 0), found, cfs_rq=c)
            if nr > 0 and k.group_sched:
                if not k.value(obj.on_list):
                    self.violation("list.leaf_cfs_rq", "on_list 1", "on_list 0", cfs_rq=c)
                elif c not in self.leaf_list:
                    self.violation("list.leaf_cfs_rq", "on rq->leaf_cfs_rq_list", "missing", cfs_rq=c)
        root = levels[addr]
        result.nr = len(root["entities"])
        result.h = {f: root[f] for f in k.h_fields if f in root}
        result.idle_h = root["h_nr_idle"]
        summary.update(tree_size=len(tree), curr=hexaddr(curr_addr or None), nr=result.nr, h=result.h,
                       group_levels=len(levels) - 1)
        return result

    def note_inexact_min_slice(self, tree, rbnodes, entities):
        """Notes (not violations) the nodes whose min_slice is not their subtree's minimum slice,
        which the kernel allows (see check_eevdf)."""
        exact = {}

        def subtree_min(node_addr):
            if node_addr not in rbnodes:
                return None
            if node_addr not in exact:
                exact[node_addr] = None  # a cycle (already reported) ends here
                node = rbnodes[node_addr]
                mins = [entities[node_addr].slice] + [
                    m for m in (subtree_min(node.left), subtree_min(node.right)) if m is not None
                ]
                exact[node_addr] = min(mins)
            return exact[node_addr]

        for se in tree:
            want = subtree_min(se.run_node)
            if want is not None and se.min_slice != want:
                self.report.notes.append(
                    f"cpu {self.cpu}: se {se.addr:#x} min_slice {se.min_slice}, subtree minimum {want} "
                    "(the kernel does not keep min_slice exact)")

    def group_name(self, cfs_rq, owner):
        """A readable name for the task group of cfs_rq ('/' for the root)."""
        if owner is None:
            return "/"
        try:
            tg = cfs_rq.tg
            if hasattr(tg, "autogroup") and self.k.value(tg.autogroup):
                return f"autogroup-{self.k.value(tg.autogroup.id)}"
            return tg.css.cgroup.kn.name.string_().decode(errors="replace")
        except (self.k.drgn.FaultError, AttributeError, Fault):
            return None

    def walk_list(self, head_addr, name):
        """The entries of the list_head at head_addr (addresses of their list_head), checking
        that every next->prev points back (list_add()/list_del() keep it; DEBUG_LIST checks it)."""
        k = self.k
        lh = k.list_head_type
        entries = []
        seen = set()
        prev = head_addr
        node = k.value(k.obj(lh, head_addr).next)
        while node != head_addr:
            if node in seen or len(entries) > MAX_LIST:
                self.violation("list.corrupt", f"{name} ends at its head", f"cycle at {node:#x}")
                break
            seen.add(node)
            back = k.value(k.obj(lh, node).prev)
            if back != prev:
                self.violation("list.corrupt", hexaddr(prev), hexaddr(back), detail=f"{name}: prev of {node:#x}")
            entries.append(node)
            prev = node
            node = k.value(k.obj(lh, node).next)
        else:
            back = k.value(k.obj(lh, head_addr).prev)
            if back != prev:
                self.violation("list.corrupt", hexaddr(prev), hexaddr(back), detail=f"{name}: prev of the head")
        return entries

    def run(self):
        """All rules for this CPU; returns its summary."""
        k = self.k
        rq = self.rq
        if k.group_sched:
            head = self.rq_addr + k.member_offset(k.rq_type, "leaf_cfs_rq_list")
            self.leaf_list = {e - self.leaf_offset for e in self.walk_list(head, "rq->leaf_cfs_rq_list")}
            # assert_list_leaf_cfs_rq(): after every enqueue/unthrottle.
            tmp = k.value(rq.tmp_alone_branch)
            if tmp != head:
                self.violation("list.tmp_alone_branch", hexaddr(head), hexaddr(tmp))
        else:
            self.leaf_list = set()
        root_addr = self.rq_addr + k.member_offset(k.rq_type, "cfs")
        root = self.check_flat(root_addr) if k.flat else self.check_cfs_rq(root_addr, None, 0)

        # rq->cfs_tasks: account_entity_enqueue() adds every queued task entity, dequeue removes
        # it, set_next_entity()/pick_next_task_fair() only move it. Tasks queued under a
        # throttled cfs_rq stay on it while their group is off the tree.
        head = self.rq_addr + k.member_offset(k.rq_type, "cfs_tasks")
        listed = {}
        for node in self.walk_list(head, "rq->cfs_tasks"):
            se_addr = node - self.group_node_offset
            listed[se_addr - k.member_offset(k.task_type, "se")] = se_addr
        for task_addr, (t, cfs_rq_addr, se) in self.queued_tasks.items():
            if task_addr not in listed:
                self.violation("list.cfs_tasks", "on rq->cfs_tasks", "missing", cfs_rq=cfs_rq_addr,
                               entity=se.addr, task=(t.pid, t.comm))
        for task_addr, se_addr in listed.items():
            if task_addr in self.queued_tasks:
                continue
            se = k.se_at(se_addr)
            throttled = False
            if k.has_throttle:
                throttled = k.value(k.cfs_rq_at(k.value(se.cfs_rq)).throttle_count) > 0
            if not throttled:
                t = Task(k, task_addr)
                self.violation("list.cfs_tasks", "only queued tasks", "not queued", entity=se_addr,
                               task=(t.pid, t.comm), detail="on rq->cfs_tasks but in no reachable tree")

        # rq->nr_running: add_nr_running()/sub_nr_running() callers: enqueue_task_fair() (+1 per
        # task, the root's hierarchical count), enqueue_top_rt_rq() (rt_nr_running while
        # rt_queued), inc_dl_tasks() (dl_nr_running; in 6.12 that includes a queued fair_server),
        # enqueue_task_stop() (1).
        rt = k.value(rq.rt.rt_nr_running) if k.value(rq.rt.rt_queued) else 0
        dl = k.value(rq.dl.dl_nr_running)
        stop = 0
        stop_addr = k.value(rq.stop)
        if stop_addr:
            stop = 1 if Task(k, stop_addr).on_rq == TASK_ON_RQ_QUEUED else 0
        cfs_h = root.h.get(k.queued_field, root.nr)
        want = cfs_h + rt + dl + stop
        found = k.value(rq.nr_running)
        if found != want:
            self.violation("rq.nr_running", want, found, cfs_rq=root_addr,
                           detail=f"cfs {cfs_h} + rt {rt} + dl {dl} + stop {stop}")
        curr = k.value(rq.curr)
        return {
            "cpu": self.cpu,
            "rq": hexaddr(self.rq_addr),
            "checked": True,
            "nr_running": found,
            "cfs_h": cfs_h,
            "rt": rt,
            "dl": dl,
            "stop": stop,
            "curr": Task(k, curr).pid if curr else None,
            "cfs_rqs": self.summary_trees,
        }


def rq_locked(k, rq):
    """Whether rq->__lock (a qspinlock) is held or contended: raw_lock.val != 0."""
    return k.value(rq.member_("__lock").raw_lock.val.counter) != 0


def for_each_task(k):
    """Every task (every thread of every process), from init_task.tasks and signal->thread_head."""
    from drgn.helpers.linux.pid import for_each_task as drgn_for_each_task

    return drgn_for_each_task(k.prog)


def check_psi(k, report, checked, found_queued, summaries):
    """PSI task counts on the CPUs checked.

    psi_enqueue() sets TSK_RUNNING on every enqueue that is not a same-rq restore (6.12.117:
    not for a delayed task migrating; enqueue_task() calls it after ->enqueue_task(), so a
    delayed task's requeue on wakeup, which clears sched_delayed, sets it), psi_task_switch() clears it when prev goes to sleep (6.12:
    a delayed dequeue counts as sleep), psi_dequeue() clears all flags on a migration; so in a
    settled state TSK_RUNNING is set exactly on the tasks queued on a runqueue and not delayed,
    and psi_system's per-CPU tasks[NR_RUNNING] counts them (psi_group_change()), idle tasks
    (pid 0) never counted (psi_task_switch()).
    """
    from drgn.helpers.linux.percpu import per_cpu_ptr

    prog = k.prog
    enum = prog.type("enum psi_task_count")
    nr_running = next(v for n, v in enum.enumerators if n == "NR_RUNNING")
    tsk_running = 1 << nr_running
    counted = {cpu: 0 for cpu in checked}
    for t_obj in for_each_task(k):
        t = Task(k, t_obj.value_())
        if t.pid == 0:
            continue
        # A task found queued counts on the CPU whose tree holds it (psi_task_change() runs on
        # task_cpu() under that rq's lock); any other task on its task_cpu().
        where = found_queued.get(t.addr)
        cpu = where[0] if where else t.cpu
        if cpu not in checked:
            continue
        if where:
            runnable = not where[1]
        else:
            runnable = t.on_rq == TASK_ON_RQ_QUEUED and not t.delayed
        has = bool(t.psi_flags & tsk_running)
        if has:
            counted[cpu] += 1
        if has != runnable:
            report.violation(cpu, "psi.flags", "TSK_RUNNING" if runnable else "no TSK_RUNNING",
                             hex(t.psi_flags), entity=t.addr, task=(t.pid, t.comm),
                             detail="queued, not delayed" if runnable else "not queued, or delayed")
    for cpu in checked:
        groupc = per_cpu_ptr(prog["psi_system"].pcpu, cpu)
        found = k.value(groupc.tasks[nr_running])
        if found != counted[cpu]:
            report.violation(cpu, "psi.nr_running", counted[cpu], found,
                             detail="psi_system tasks[NR_RUNNING] vs tasks with TSK_RUNNING")
        summaries[cpu]["psi_nr_running"] = found


def psi_enabled(k):
    """PSI compiled in and not switched off (psi_disabled static key, 'psi=0')."""
    if not k.has_psi:
        return False
    return k.value(k.prog["psi_disabled"].key.enabled.counter) == 0


def check(prog):
    """Runs every rule on prog; returns the report as a dict."""
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.percpu import per_cpu

    k = Kernel(prog)
    report = Report()
    summaries = {}
    checked = []
    found_queued = {}
    for cpu in for_each_online_cpu(prog):
        rq = per_cpu(prog["runqueues"], cpu)
        if rq_locked(k, rq):
            summaries[cpu] = {"cpu": cpu, "rq": hexaddr(rq.address_), "checked": False,
                              "skipped": "rq->__lock held: the state may be mid-update"}
            continue
        checker = CpuChecker(k, report, cpu, rq)
        try:
            summaries[cpu] = checker.run()
            checked.append(cpu)
            for addr, (t, _, se) in checker.queued_tasks.items():
                found_queued[addr] = (cpu, se.sched_delayed)
        except Fault as e:
            report.violation(cpu, "fault", "readable scheduler state", str(e))
            summaries[cpu] = {"cpu": cpu, "rq": hexaddr(rq.address_), "checked": False, "skipped": str(e)}
    psi = psi_enabled(k)
    if psi:
        try:
            check_psi(k, report, set(checked), found_queued, summaries)
        except Fault as e:
            report.violation(None, "fault", "readable task list", str(e))
    else:
        report.notes.append("PSI not compiled in or disabled: PSI rules not checked")
    return {
        "kernel": prog["init_uts_ns"].name.release.string_().decode(),
        "features": dict(k.features(), psi_checked=psi),
        "cpus": [summaries[c] for c in sorted(summaries)],
        "cpus_checked": len(checked),
        "violations": report.violations,
        "notes": report.notes,
    }


def open_program(core, vmlinux):
    """A drgn Program for core with vmlinux's debug info; exits 2 naming the file on failure."""
    try:
        import drgn
    except ImportError:
        fail(f"python module drgn not found (interpreter {sys.executable}); run scripts/install-deps.sh")
    for path in (core, vmlinux):
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror}")
    prog = drgn.Program()
    try:
        prog.set_core_dump(core)
    except Exception as e:  # OSError, ValueError, drgn's own errors for malformed cores
        fail(f"cannot open core {core}: {e}")
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        fail(f"core {core} is not a Linux kernel core (no VMCOREINFO note)")
    # drgn logs a mismatched file as a warning; the check below says it in one line instead.
    logging.getLogger("drgn").setLevel(logging.ERROR)
    try:
        prog.load_debug_info([vmlinux])
    except drgn.MissingDebugInfoError:
        pass  # modules without debug info: irrelevant here; the vmlinux is checked below
    except Exception as e:
        fail(f"cannot load debug info from {vmlinux}: {e}")
    try:
        prog["runqueues"]
        prog.type("struct cfs_rq")
    except LookupError:
        fail(f"vmlinux {vmlinux} does not match core {core} (no runqueues/struct cfs_rq: wrong build id or no DWARF)")
    return prog


def fail(message):
    """Usage or I/O error: one line on stderr, exit 2."""
    print(f"sched_check: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="sched_check.py",
        description="Recompute a Linux guest's fair-scheduler state from its trees in an ELF core "
        "(QEMU dump-guest-memory) and report every mismatch as JSON. Exit 0: no violation, "
        "1: violations, 2: usage or I/O error.",
    )
    parser.add_argument("core", help="ELF core of the guest (with VMCOREINFO)")
    parser.add_argument("vmlinux", help="the guest kernel's vmlinux with DWARF")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    prog = open_program(args.core, args.vmlinux)
    try:
        result = check(prog)
    except LookupError as e:
        fail(f"vmlinux {args.vmlinux}: unsupported kernel layout: {e}")
    except Exception as e:  # a bug here, not a finding: say so, with the traceback above it
        traceback.print_exc()
        fail(f"internal error checking {args.core}: {type(e).__name__}: {e}")
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    json.dump(result, sys.stdout, indent=2 if args.pretty else None)
    sys.stdout.write("\n")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
