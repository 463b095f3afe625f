#!/bin/bash
# Benchmark of park and unpark on a lab guest of each pinned kernel (6.1 CFS, 6.12 EEVDF, 7.3 flat EEVDF): the
# cost of one park and one unpark (guest paused, checks, writes, resumed) and the work done inside
# the pause, beside a bare pause/resume of the same guest in the same run.
# Usage: scripts/bench-park.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched-lab
cargo build --release -q -p xsched --example park_bench
. scripts/lib/lab.sh
# One guest per pinned kernel, one after the other, in the same run.
for pin in tests/lab/kernels/*.env; do
    kernel=${pin##*/}
    kernel=${kernel%.env}
    lab_up --kernel "$kernel" --guest b1:vcpus=2,hog=cpu*3,view=0
    pid=$(awk '$1 == "workload" && $2 == "hog:" { gsub(/[\[\],]/, "", $4); print $4 }' "$lab_out/lab")
    target/release/examples/park_bench "b1=qemu:$(lab_field ram),qmp=$(lab_field qmp)" "$pid" "${1:-300}"
    lab_down
done
