#!/bin/bash
# Benchmark of the loop in steady state on two real lab guests, per pinned kernel: the host CPU
# the VMs get without xsched (baseline) and with it, xsched's own CPU, and the guest pauses per
# second seen from a second QMP monitor (tests/examples/steady_bench.rs).
# Usage: scripts/bench-steady.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched --bin xsched
cargo build --release -q -p testing-panic
cargo build --release -q -p xsched-lab --example steady_bench
for pin in tests/lab/kernels/*.env; do
    kernel=${pin##*/}
    kernel=${kernel%.env}
    XSCHED_LAB_KERNEL=$kernel target/release/examples/steady_bench "${1:-10}"
done
