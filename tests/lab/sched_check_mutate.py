#!/usr/bin/env python3
"""sched_check_mutate: corrupts one piece of scheduler state in a copy of a guest core.

Each mutation finds a suitable target in a real dump (through drgn, on a CPU whose runqueue
lock is free), changes one field (or a few that only make sense together) in a copy of the
core, and names the rules of sched_check.py that must then fail — exactly those. It is the
proof that each rule can fail; test_sched_check.py runs them all, the lab's Rust test a few.

It walks the runqueues on its own (no code shared with sched_check.py), so a bug in the
checker's walk is not hidden by the same bug here.

Exit status: 0 mutation written, 2 usage or I/O error, 3 no target for it in this dump.
"""

import argparse
import json
import shutil
import struct
import sys

RB_BLACK = 1
TASK_WAKING = 0x0200


class NoTarget(Exception):
    """The dump has nothing this mutation can corrupt (e.g. no tree with two nodes)."""


class NotApplicable(NoTarget):
    """The kernel has no such state (e.g. no EEVDF fields in a 6.1 kernel, PSI off)."""


class Patch:
    """New bytes for one field: (virtual address, size, new integer value, old value)."""

    def __init__(self, addr, size, new, old, what):
        self.addr = addr
        self.size = size
        self.new = new
        self.old = old
        self.what = what

    def to_json(self):
        """The patch as the CLI prints it."""
        return {"what": self.what, "address": f"{self.addr:#x}", "size": self.size, "old": self.old, "new": self.new}


class Dump:
    """A core opened with drgn, plus the ELF program headers to find a physical address's offset."""

    def __init__(self, core, vmlinux):
        import drgn
        from drgn.helpers.linux.cpumask import for_each_online_cpu
        from drgn.helpers.linux.percpu import per_cpu

        self.drgn = drgn
        self.path = core
        self.prog = drgn.Program()
        self.prog.set_core_dump(core)
        try:
            self.prog.load_debug_info([vmlinux])
        except drgn.MissingDebugInfoError:
            pass
        self.segments = read_load_segments(core)
        self.init_mm = self.prog["init_mm"].address_of_()
        self.cfs_has = self.prog.type("struct cfs_rq").has_member
        self.se_has = self.prog.type("struct sched_entity").has_member
        self.cpus = []
        for cpu in for_each_online_cpu(self.prog):
            rq = per_cpu(self.prog["runqueues"], cpu)
            if rq.member_("__lock").raw_lock.val.counter.value_() == 0:
                self.cpus.append((cpu, rq))

    def file_offset(self, vaddr):
        """The core file offset holding virtual address vaddr (page-table walk, then PT_LOAD)."""
        from drgn.helpers.linux.mm import follow_phys

        phys = follow_phys(self.init_mm, vaddr).value_()
        for paddr, offset, size in self.segments:
            if paddr <= phys < paddr + size:
                return offset + phys - paddr
        raise NoTarget(f"physical address {phys:#x} of {vaddr:#x} is not in the core")

    def patch(self, obj, new, what):
        """A Patch setting the integer field obj to new."""
        if obj.bit_field_size_ is not None:
            raise NoTarget(f"{what} is a bit field")
        size = self.drgn.sizeof(obj.type_)
        return Patch(obj.address_, size, new % (1 << (8 * size)), obj.value_(), what)

    def add(self, obj, delta, what):
        """A Patch adding delta to the integer field obj."""
        return self.patch(obj, obj.value_() + delta, what)

    # The scheduler's structures, walked independently of sched_check.py.

    def tree_nodes(self, cfs_rq):
        """The rb_node addresses of cfs_rq's tree, in order (child pointers only)."""
        out = []

        def walk(node):
            if node:
                n = self.rb_node(node)
                walk(n.rb_left.value_())
                out.append(node)
                walk(n.rb_right.value_())

        walk(cfs_rq.tasks_timeline.rb_root.rb_node.value_())
        return out

    def rb_node(self, addr):
        """The struct rb_node at addr."""
        return self.drgn.Object(self.prog, "struct rb_node", address=addr)

    def entity(self, node_addr):
        """The sched_entity whose run_node is at node_addr."""
        return self.drgn.container_of(
            self.drgn.Object(self.prog, "struct rb_node *", value=node_addr), "struct sched_entity", "run_node"
        )[0]

    def task_of(self, se):
        """The task_struct of a task entity."""
        return self.drgn.container_of(se.address_of_(), "struct task_struct", "se")[0]

    def cfs_rqs(self):
        """(cpu, rq, cfs_rq, tree rb_node addresses) for every reachable cfs_rq of the unlocked CPUs."""
        out = []
        for cpu, rq in self.cpus:
            todo = [rq.cfs]
            while todo:
                cfs_rq = todo.pop()
                nodes = self.tree_nodes(cfs_rq)
                out.append((cpu, rq, cfs_rq, nodes))
                ses = [self.entity(n) for n in nodes]
                if cfs_rq.curr.value_() and cfs_rq.curr.on_rq.value_():
                    ses.append(cfs_rq.curr[0])
                for se in ses:
                    if self.se_has("my_q") and se.my_q.value_():
                        todo.append(se.my_q[0])
        return out

    def tree_tasks(self):
        """(cpu, rq, cfs_rq, se, task) for every task entity in a tree (not curr)."""
        out = []
        for cpu, rq, cfs_rq, nodes in self.cfs_rqs():
            for n in nodes:
                se = self.entity(n)
                if not (self.se_has("my_q") and se.my_q.value_()):
                    out.append((cpu, rq, cfs_rq, se, self.task_of(se)))
        return out

    def is_black(self, node_addr):
        """The node's colour bit."""
        return self.rb_node(node_addr).member_("__rb_parent_color").value_() & 1 == RB_BLACK


def read_load_segments(core):
    """(p_paddr, p_offset, p_filesz) of each PT_LOAD in the ELF64 little-endian core."""
    with open(core, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise NoTarget(f"{core} is not a little-endian ELF64 file")
        phoff, = struct.unpack_from("<Q", ident, 32)
        phentsize, phnum = struct.unpack_from("<HH", ident, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    segments = []
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type == 1:
            segments.append((p_paddr, p_offset, p_filesz))
    return segments


# ---------------------------------------------------------------------------------------------
# Mutations: each returns (patches, expected rule ids, description) or raises NoTarget.
# ---------------------------------------------------------------------------------------------


def first(items, why):
    """The first of items, or NoTarget(why)."""
    for item in items:
        return item
    raise NoTarget(why)


def mut_rb_parent(d):
    """A non-root node's parent pointer points at the node itself (colour kept)."""
    cpu, _, cfs_rq, nodes = first(((c, r, q, n) for c, r, q, n in d.cfs_rqs() if len(n) >= 2), "no tree with 2 nodes")
    root = cfs_rq.tasks_timeline.rb_root.rb_node.value_()
    node = next(n for n in nodes if n != root)
    pc = d.rb_node(node).__rb_parent_color
    return [d.patch(pc, node | (pc.value_() & 3), f"cpu {cpu} rb_node {node:#x} parent")], ["rb.parent"]


def mut_rb_root_red(d):
    """The root turns red (chosen with no red child, so no red-red as well)."""
    for cpu, _, cfs_rq, nodes in d.cfs_rqs():
        if not nodes:
            continue
        root = cfs_rq.tasks_timeline.rb_root.rb_node.value_()
        r = d.rb_node(root)
        kids = [c for c in (r.rb_left.value_(), r.rb_right.value_()) if c]
        if all(d.is_black(c) for c in kids):
            pc = r.__rb_parent_color
            return [d.patch(pc, pc.value_() & ~1, f"cpu {cpu} root {root:#x} colour")], ["rb.root_black"]
    raise NoTarget("no root without red children")


def mut_rb_red_red(d):
    """Two black siblings with a red child between them turn red, and their parent turns black
    if it was red (or is the root): every path keeps its number of black nodes."""
    for cpu, _, cfs_rq, nodes in d.cfs_rqs():
        root = cfs_rq.tasks_timeline.rb_root.rb_node.value_()
        for x in nodes:
            n = d.rb_node(x)
            c1, c2 = n.rb_left.value_(), n.rb_right.value_()
            if not (c1 and c2 and d.is_black(c1) and d.is_black(c2)):
                continue
            grandkids = [g for c in (c1, c2) for g in (d.rb_node(c).rb_left.value_(), d.rb_node(c).rb_right.value_()) if g]
            if not any(not d.is_black(g) for g in grandkids):
                continue
            if x != root and d.is_black(x):
                continue
            patches = []
            if not d.is_black(x):
                pc = n.__rb_parent_color
                patches.append(d.patch(pc, pc.value_() | 1, f"cpu {cpu} rb_node {x:#x} colour"))
            for c in (c1, c2):
                pc = d.rb_node(c).__rb_parent_color
                patches.append(d.patch(pc, pc.value_() & ~1, f"cpu {cpu} rb_node {c:#x} colour"))
            return patches, ["rb.red_red"]
    raise NoTarget("no red node (or root) with two black children and a red grandchild")


def mut_rb_black_height(d):
    """A red node turns black: one more black node on its paths."""
    for cpu, _, _, nodes in d.cfs_rqs():
        for x in nodes:
            if not d.is_black(x):
                pc = d.rb_node(x).__rb_parent_color
                return [d.patch(pc, pc.value_() | 1, f"cpu {cpu} rb_node {x:#x} colour")], ["rb.black_height"]
    raise NoTarget("no red node")


def mut_rb_duplicate(d):
    """A node's empty child slot points at the root: the root is reached twice."""
    for cpu, _, cfs_rq, nodes in d.cfs_rqs():
        root = cfs_rq.tasks_timeline.rb_root.rb_node.value_()
        for x in nodes:
            n = d.rb_node(x)
            if x != root and not n.rb_right.value_():
                return [d.patch(n.rb_right, root, f"cpu {cpu} rb_node {x:#x} rb_right")], ["rb.duplicate"]
    raise NoTarget("no tree with 2 nodes")


def mut_rb_leftmost(d):
    """rb_leftmost caches the second node instead of the first."""
    cpu, _, cfs_rq, nodes = first(((c, r, q, n) for c, r, q, n in d.cfs_rqs() if len(n) >= 2), "no tree with 2 nodes")
    return [d.patch(cfs_rq.tasks_timeline.rb_leftmost, nodes[1], f"cpu {cpu} cfs_rq {cfs_rq.address_:#x} rb_leftmost")], [
        "rb.leftmost"
    ]


def mut_rb_order(d):
    """The first node's key (deadline in EEVDF, vruntime in CFS) moves past the last node's."""
    cpu, _, cfs_rq, nodes = first(((c, r, q, n) for c, r, q, n in d.cfs_rqs() if len(n) >= 2), "no tree with 2 nodes")
    key = "deadline" if d.se_has("deadline") else "vruntime"
    head, last = d.entity(nodes[0]), d.entity(nodes[-1])
    new = getattr(last, key).value_() + 1_000_000_000
    return [d.patch(getattr(head, key), new, f"cpu {cpu} se {head.address_:#x} {key}")], ["rb.order"]


def mut_fault(d):
    """A node's empty child slot points at an unmapped (non-canonical) address."""
    for cpu, _, _, nodes in d.cfs_rqs():
        for x in nodes:
            n = d.rb_node(x)
            if not n.rb_left.value_():
                return [d.patch(n.rb_left, 0xDEAD000000000000, f"cpu {cpu} rb_node {x:#x} rb_left")], ["fault"]
    raise NoTarget("no tree node")


def eevdf_tree(d, pred, why):
    """The first (cpu, cfs_rq, nodes) with EEVDF fields whose tree satisfies pred."""
    if not (d.cfs_has("avg_vruntime") or d.cfs_has("sum_w_vruntime")):
        raise NotApplicable("not an EEVDF kernel")
    return first(((c, q, n) for c, _, q, n in d.cfs_rqs() if pred(n)), why)


def mut_min_vruntime(d):
    """The root's augmented min_vruntime is one off."""
    cpu, cfs_rq, _ = eevdf_tree(d, bool, "no EEVDF tree with a node")
    se = d.entity(cfs_rq.tasks_timeline.rb_root.rb_node.value_())
    return [d.add(se.min_vruntime, 1, f"cpu {cpu} root se {se.address_:#x} min_vruntime")], ["eevdf.min_vruntime"]


def mut_min_slice(d):
    """A leaf's min_slice is above its slice."""
    if not d.se_has("min_slice"):
        raise NotApplicable("no min_slice")
    for cpu, _, _, nodes in d.cfs_rqs():
        for x in nodes:
            n = d.rb_node(x)
            if not n.rb_left.value_() and not n.rb_right.value_():
                se = d.entity(x)
                return [d.patch(se.min_slice, se.slice.value_() + 1, f"cpu {cpu} leaf se {se.address_:#x} min_slice")], [
                    "eevdf.min_slice"
                ]
    raise NoTarget("no leaf")


def mut_avg_load(d):
    """avg_load (7.3: sum_weight) one off."""
    cpu, cfs_rq, _ = eevdf_tree(d, bool, "no EEVDF tree with a node")
    name = "sum_weight" if d.cfs_has("sum_weight") else "avg_load"
    return [d.add(getattr(cfs_rq, name), 1, f"cpu {cpu} cfs_rq {cfs_rq.address_:#x} {name}")], [f"eevdf.{name}"]


def mut_avg_vruntime(d):
    """avg_vruntime (7.3: sum_w_vruntime) one off."""
    cpu, cfs_rq, _ = eevdf_tree(d, bool, "no EEVDF tree with a node")
    name = "sum_w_vruntime" if d.cfs_has("sum_w_vruntime") else "avg_vruntime"
    return [d.add(getattr(cfs_rq, name), -1, f"cpu {cpu} cfs_rq {cfs_rq.address_:#x} {name}")], [f"eevdf.{name}"]


def count_field(d, names):
    """The first of names that struct cfs_rq has."""
    for n in names:
        if d.cfs_has(n):
            return n
    raise NotApplicable(f"struct cfs_rq has none of {names}")


def mut_count(names):
    """A mutation adding one to the root cfs_rq's count field (the first of names it has)."""

    def mutate(d):
        field = count_field(d, names)
        cpu, rq = first(d.cpus, "no unlocked CPU")
        return [d.add(getattr(rq.cfs, field), 1, f"cpu {cpu} rq->cfs.{field}")], [f"count.{field}"]

    mutate.__doc__ = f"rq->cfs.{names[0]} one too high."
    return mutate


def mut_load_weight(d):
    """The root cfs_rq's load.weight one too high."""
    cpu, rq = first(d.cpus, "no unlocked CPU")
    return [d.add(rq.cfs.load.weight, 1, f"cpu {cpu} rq->cfs.load.weight")], ["count.load_weight"]


def mut_rq_nr_running(d):
    """rq->nr_running one too high."""
    cpu, rq = first(d.cpus, "no unlocked CPU")
    return [d.add(rq.nr_running, 1, f"cpu {cpu} rq->nr_running")], ["rq.nr_running"]


def tree_task(d, pred=lambda se, t: True):
    """The first task entity in a tree (not curr) with pred."""
    return first(((c, r, q, se, t) for c, r, q, se, t in d.tree_tasks() if pred(se, t)), "no task in a tree")


def not_delayed(d):
    """A predicate: the entity is not a delayed one."""
    return lambda se, t: not (d.se_has("sched_delayed") and se.sched_delayed.value_())


def mut_se_on_rq(d):
    """A queued task entity's se->on_rq is 0."""
    cpu, _, _, se, t = tree_task(d)
    return [d.patch(se.on_rq, 0, f"cpu {cpu} pid {t.pid.value_()} se.on_rq")], ["entity.on_rq"]


def mut_se_cfs_rq(d):
    """A queued entity's se->cfs_rq points elsewhere."""
    if not d.se_has("cfs_rq"):
        raise NotApplicable("no se->cfs_rq")
    cpu, _, _, se, t = tree_task(d)
    return [d.add(se.cfs_rq, 0x40, f"cpu {cpu} pid {t.pid.value_()} se.cfs_rq")], ["entity.cfs_rq"]


def mut_se_depth(d):
    """A queued entity's se->depth one too deep."""
    if not d.se_has("depth"):
        raise NotApplicable("no se->depth")
    cpu, _, _, se, t = tree_task(d)
    return [d.add(se.depth, 1, f"cpu {cpu} pid {t.pid.value_()} se.depth")], ["entity.depth"]


def mut_task_on_rq(d):
    """A queued task's p->on_rq is 0."""
    cpu, _, _, _, t = tree_task(d)
    return [d.patch(t.on_rq, 0, f"cpu {cpu} pid {t.pid.value_()} on_rq")], ["task.on_rq"]


def mut_task_cpu(d):
    """A queued task's CPU names another CPU."""
    cpu, _, _, _, t = tree_task(d)
    field = t.cpu if t.type_.has_member("cpu") else t.thread_info.cpu
    return [d.patch(field, cpu + 1, f"cpu {cpu} pid {t.pid.value_()} cpu")], ["task.cpu"]


def mut_task_state(d):
    """A queued (not delayed) task is TASK_WAKING."""
    cpu, _, _, _, t = tree_task(d, not_delayed(d))
    return [d.patch(t.member_("__state"), TASK_WAKING, f"cpu {cpu} pid {t.pid.value_()} __state")], ["task.state"]


def mut_group_delayed(d):
    """A queued group entity with tasks below it is marked delayed."""
    if not d.se_has("sched_delayed"):
        raise NotApplicable("no sched_delayed")
    for cpu, _, _, nodes in d.cfs_rqs():
        for x in nodes:
            se = d.entity(x)
            if se.my_q.value_() and not se.sched_delayed.value_():
                return [d.patch(se.sched_delayed, 1, f"cpu {cpu} group se {se.address_:#x} sched_delayed")], ["group.my_q"]
    raise NoTarget("no group entity in a tree")


def mut_leaf_on_list(d):
    """A non-empty cfs_rq claims not to be on the leaf list."""
    if not d.cfs_has("on_list"):
        raise NotApplicable("no on_list")
    cpu, _, cfs_rq, _ = first(((c, r, q, n) for c, r, q, n in d.cfs_rqs() if q.nr_running.value_()), "no busy cfs_rq")
    return [d.patch(cfs_rq.on_list, 0, f"cpu {cpu} cfs_rq {cfs_rq.address_:#x} on_list")], ["list.leaf_cfs_rq"]


def mut_tmp_alone_branch(d):
    """rq->tmp_alone_branch left pointing into a branch (as mid-enqueue)."""
    if not d.cfs_has("on_list"):
        raise NotApplicable("no leaf list")
    cpu, rq = first(d.cpus, "no unlocked CPU")
    return [d.add(rq.tmp_alone_branch, 8, f"cpu {cpu} rq->tmp_alone_branch")], ["list.tmp_alone_branch"]


def mut_cfs_tasks_unlinked(d):
    """A queued task is unlinked from rq->cfs_tasks (its neighbours joined: a consistent list)."""
    cpu, _, _, se, t = tree_task(d)
    node = se.group_node
    prev, nxt = node.prev.value_(), node.next.value_()
    lh = lambda a: d.drgn.Object(d.prog, "struct list_head", address=a)  # noqa: E731
    return [
        d.patch(lh(prev).next, nxt, f"cpu {cpu} pid {t.pid.value_()}: prev->next"),
        d.patch(lh(nxt).prev, prev, f"cpu {cpu} pid {t.pid.value_()}: next->prev"),
    ], ["list.cfs_tasks"]


def mut_list_corrupt(d):
    """A cfs_tasks entry's prev pointer is wrong."""
    cpu, _, _, se, t = tree_task(d)
    return [d.add(se.group_node.prev, 0x10, f"cpu {cpu} pid {t.pid.value_()} group_node.prev")], ["list.corrupt"]


def psi_cpu(d, cpu):
    """psi_system's psi_group_cpu of cpu, and the NR_RUNNING index."""
    from drgn.helpers.linux.percpu import per_cpu_ptr

    if not d.prog.type("struct task_struct").has_member("psi_flags"):
        raise NotApplicable("no PSI")
    if d.prog["psi_disabled"].key.enabled.counter.value_():
        raise NotApplicable("PSI disabled")
    enum = d.prog.type("enum psi_task_count")
    nr_running = next(v for n, v in enum.enumerators if n == "NR_RUNNING")
    return per_cpu_ptr(d.prog["psi_system"].pcpu, cpu), nr_running


def mut_psi_count(d):
    """psi_system's tasks[NR_RUNNING] one too high on a CPU."""
    cpu, _ = first(d.cpus, "no unlocked CPU")
    groupc, nr_running = psi_cpu(d, cpu)
    return [d.add(groupc.tasks[nr_running], 1, f"cpu {cpu} psi tasks[NR_RUNNING]")], ["psi.nr_running"]


def mut_psi_flags(d):
    """A queued task loses TSK_RUNNING, and its CPU's count follows (so only the flags are wrong)."""
    cpu, _, _, _, t = tree_task(d, not_delayed(d))
    groupc, nr_running = psi_cpu(d, cpu)
    bit = 1 << nr_running
    if not t.psi_flags.value_() & bit:
        raise NoTarget("queued task without TSK_RUNNING")
    return [
        d.patch(t.psi_flags, t.psi_flags.value_() & ~bit, f"cpu {cpu} pid {t.pid.value_()} psi_flags"),
        d.add(groupc.tasks[nr_running], -1, f"cpu {cpu} psi tasks[NR_RUNNING]"),
    ], ["psi.flags"]


MUTATIONS = {
    "rb-parent": mut_rb_parent,
    "rb-root-red": mut_rb_root_red,
    "rb-red-red": mut_rb_red_red,
    "rb-black-height": mut_rb_black_height,
    "rb-duplicate": mut_rb_duplicate,
    "rb-leftmost": mut_rb_leftmost,
    "rb-order": mut_rb_order,
    "fault": mut_fault,
    "min-vruntime": mut_min_vruntime,
    "min-slice": mut_min_slice,
    "avg-load": mut_avg_load,
    "avg-vruntime": mut_avg_vruntime,
    "nr-running": mut_count(["nr_queued", "nr_running"]),
    "load-weight": mut_load_weight,
    "h-queued": mut_count(["h_nr_queued", "h_nr_running"]),
    "h-runnable": mut_count(["h_nr_runnable"]),
    "h-delayed": mut_count(["h_nr_delayed"]),
    "idle-h": mut_count(["idle_h_nr_running", "h_nr_idle"]),
    "idle-nr": mut_count(["idle_nr_running"]),
    "rq-nr-running": mut_rq_nr_running,
    "se-on-rq": mut_se_on_rq,
    "se-cfs-rq": mut_se_cfs_rq,
    "se-depth": mut_se_depth,
    "task-on-rq": mut_task_on_rq,
    "task-cpu": mut_task_cpu,
    "task-state": mut_task_state,
    "group-delayed": mut_group_delayed,
    "leaf-on-list": mut_leaf_on_list,
    "tmp-alone-branch": mut_tmp_alone_branch,
    "cfs-tasks": mut_cfs_tasks_unlinked,
    "list-corrupt": mut_list_corrupt,
    "psi-count": mut_psi_count,
    "psi-flags": mut_psi_flags,
}


def plan(dump, name):
    """(patches, expected rules) of mutation name on dump; NoTarget if it does not apply."""
    return MUTATIONS[name](dump)


def apply(dump, patches, path):
    """Writes patches into the core file at path (a copy of dump's core); returns the old bytes."""
    undo = []
    with open(path, "r+b") as f:
        for p in patches:
            offset = dump.file_offset(p.addr)
            f.seek(offset)
            undo.append((offset, f.read(p.size)))
            f.seek(offset)
            f.write(p.new.to_bytes(p.size, "little"))
    return undo


def restore(path, undo):
    """Undoes apply()."""
    with open(path, "r+b") as f:
        for offset, data in reversed(undo):
            f.seek(offset)
            f.write(data)


def main(argv=None):
    """Command line: write one mutated copy, print what was changed and which rules must fail."""
    parser = argparse.ArgumentParser(
        prog="sched_check_mutate.py",
        description="Copy a guest core with one piece of scheduler state corrupted; print JSON naming "
        "the fields changed and the sched_check.py rules that must fail. Exit 2 on usage or I/O "
        "errors, 3 if the mutation has no target in this dump.",
    )
    parser.add_argument("core", help="ELF core of the guest")
    parser.add_argument("vmlinux", help="the guest kernel's vmlinux with DWARF")
    parser.add_argument("mutation", nargs="?", choices=sorted(MUTATIONS), help="what to corrupt")
    parser.add_argument("out", nargs="?", help="where to write the corrupted copy")
    parser.add_argument("--list", action="store_true", help="list the mutations that apply to this dump")
    args = parser.parse_args(argv)
    try:
        dump = Dump(args.core, args.vmlinux)
    except (OSError, LookupError, NoTarget) as e:
        print(f"sched_check_mutate: cannot open {args.core} with {args.vmlinux}: {e}", file=sys.stderr)
        return 2
    if args.list:
        out = {}
        for name in MUTATIONS:
            try:
                out[name] = plan(dump, name)[1]
            except NoTarget as e:
                out[name] = f"no target: {e}"
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    if not args.mutation or not args.out:
        parser.error("give MUTATION and OUT (or --list)")
    try:
        patches, expect = plan(dump, args.mutation)
        shutil.copyfile(args.core, args.out)
        apply(dump, patches, args.out)
    except NoTarget as e:
        print(f"sched_check_mutate: {args.mutation}: no target in {args.core}: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        print(f"sched_check_mutate: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    json.dump({"mutation": args.mutation, "expect": expect, "patches": [p.to_json() for p in patches]}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
