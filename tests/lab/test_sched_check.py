#!/usr/bin/env python3
"""Tests of sched_check.py on a real guest dump: clean, then corrupted rule by rule.

    python3 tests/lab/test_sched_check.py [--allow-no-target] CORE VMLINUX [unittest options]

(with the lab's drgn venv: ~/.cache/xsched-lab/venv/bin/python). CORE is a dump of an untouched
guest taken while it was paused; it should be busy (a few CPU hogs per vCPU, a task in a cgroup),
so that every mutation finds a target: a mutation that has none in a kernel that has the state
fails the test (a skipped proof is no proof) unless --allow-no-target is given (the lab's Rust
test, which cannot choose the shape of the guest's trees, runs it so); one whose state the kernel
lacks (EEVDF fields in 6.1, PSI switched off) is skipped.

Each mutation (sched_check_mutate.py) is written into one working copy of the core, the checker
runs on it through its command line, and the test requires exit status 1 with violations of
exactly the rules the mutation names; then the bytes are put back.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sched_check_mutate as mutate  # noqa: E402

CHECKER = os.path.join(HERE, "sched_check.py")


def run_checker(core, vmlinux):
    """(exit status, parsed JSON or None, stderr) of the checker's command line."""
    proc = subprocess.run([sys.executable, CHECKER, core, vmlinux], capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr


class SchedCheckTest(unittest.TestCase):
    """The checker on one dump; mutation tests are added per mutation below."""

    core = None
    vmlinux = None
    allow_no_target = False
    work = None
    dump = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sched-check-test-")
        cls.work = os.path.join(cls.tmp, "work.core")
        shutil.copyfile(cls.core, cls.work)
        cls.dump = mutate.Dump(cls.work, cls.vmlinux)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_untouched_dump_has_no_violation(self):
        """The guest's own state passes every rule."""
        code, report, stderr = run_checker(self.work, self.vmlinux)
        self.assertEqual(report["violations"], [], json.dumps(report["violations"], indent=1))
        self.assertEqual(code, 0, stderr)
        self.assertGreater(report["cpus_checked"], 0, "no CPU checked (all runqueue locks held?)")

    def test_missing_file_is_a_usage_error(self):
        """Exit 2 and one stderr line naming the file."""
        missing = os.path.join(self.tmp, "no-such.core")
        code, report, stderr = run_checker(missing, self.vmlinux)
        self.assertEqual(code, 2)
        self.assertIsNone(report)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
        self.assertIn(missing, stderr)

    def test_not_a_core_is_a_usage_error(self):
        """A file that is no ELF core: exit 2 naming it."""
        junk = os.path.join(self.tmp, "junk.core")
        with open(junk, "wb") as f:
            f.write(b"not an ELF core\n" * 64)
        code, _, stderr = run_checker(junk, self.vmlinux)
        self.assertEqual(code, 2, stderr)
        self.assertIn(junk, stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_wrong_vmlinux_is_a_usage_error(self):
        """A vmlinux that is not this kernel's (here: no debug info at all): exit 2 naming it."""
        junk = os.path.join(self.tmp, "vmlinux")
        with open(junk, "wb") as f:
            f.write(b"\x7fELF" + b"\0" * 60)
        code, _, stderr = run_checker(self.work, junk)
        self.assertEqual(code, 2, stderr)
        self.assertIn(junk, stderr)


def mutation_test(name):
    """A test method that applies mutation name and requires exactly its rules to fail."""

    def test(self):
        try:
            patches, expect = mutate.plan(self.dump, name)
        except mutate.NotApplicable as e:
            self.skipTest(str(e))
        except mutate.NoTarget as e:
            if self.allow_no_target:
                self.skipTest(f"no target in this dump: {e}")
            self.fail(f"{name}: no target in this dump ({e}); use a busier guest")
        undo = mutate.apply(self.dump, patches, self.work)
        try:
            code, report, stderr = run_checker(self.work, self.vmlinux)
        finally:
            mutate.restore(self.work, undo)
        self.assertIsNotNone(report, stderr)
        rules = sorted({v["rule"] for v in report["violations"]})
        what = "; ".join(p.what for p in patches)
        self.assertEqual(rules, sorted(expect), f"{name} ({what}): {json.dumps(report['violations'], indent=1)}")
        self.assertEqual(code, 1, stderr)

    test.__doc__ = mutate.MUTATIONS[name].__doc__
    return test


for _name in mutate.MUTATIONS:
    setattr(SchedCheckTest, "test_mutation_" + _name.replace("-", "_"), mutation_test(_name))


def main():
    """[--allow-no-target] CORE VMLINUX, then unittest's own options."""
    args = sys.argv[1:]
    if args and args[0] == "--allow-no-target":
        SchedCheckTest.allow_no_target = True
        args = args[1:]
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    SchedCheckTest.core, SchedCheckTest.vmlinux = os.path.abspath(args[0]), os.path.abspath(args[1])
    for path in (SchedCheckTest.core, SchedCheckTest.vmlinux):
        if not os.path.isfile(path):
            print(f"test_sched_check: no such file: {path}", file=sys.stderr)
            return 2
    program = unittest.main(argv=[sys.argv[0]] + args[2:], exit=False)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
