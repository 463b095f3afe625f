#!/bin/bash
# The main job: the paper's experiment on two lab guests, without xsched, the way an operator
# would do it without xsched, and with xsched.
#
# Installs what it needs, builds, boots guest u1 and guest u2 (one vCPU each, their QEMUs sharing
# one host CPU) and runs two scenarios:
#   priority  db (u1) > web (u2) > bkup (u1) while db and web go busy and idle;
#   idle      the paper's section 3: lowest (u1) runs only when p1, p2 (u1) and p3 (u2) all sleep.
# Each is played six ways: without xsched; with host CPU weights on the two QEMUs' cgroups
# (cgroup v2 cpu.weight or v1 cpu.shares, as libvirt's <cputune><shares>: u1 twice u2, then u2
# twice u1) and the background task at nice 19, then SCHED_IDLE, inside its guest; and with
# xsched. Needs root for the host cgroups (they are removed afterwards).
# Prints a table of CPU shares per phase and variant, which variants met the targets and
# xsched's reaction times, and leaves the report, a timeline picture (SVG) and trace per variant
# and summary.json in ./demo-out (or the folder given by --out).
# The guests boot Debian's 6.1 cloud kernel; `--kernel 6.12` boots its 6.12 kernel instead (any pin
# in tests/lab/kernels/; the default is $XSCHED_LAB_KERNEL, else 6.1).
# Extra arguments go to xsched-demo (see `target/release/xsched-demo --help`), e.g. --phase-ms 8000
# or --baseline none.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -q -p xsched -p xsched-lab -p priority -p idle
exec target/release/xsched-demo "$@"
