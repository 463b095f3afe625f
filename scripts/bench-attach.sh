#!/bin/bash
# Benchmark of attach on lab guests of growing RAM (256 MiB to 4 GiB, the pinned 6.1 kernel): how
# long the guest is held paused (from the STOP and RESUME events of a second, operator's, QMP
# monitor), what the attach costs in all (the kernel found through a vCPU's page tables while the
# guest runs), and a bare pause/resume of the same guest in the same run.
# Usage: scripts/bench-attach.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched-lab
cargo build --release -q -p xsched --example attach_bench
. scripts/lib/lab.sh
for mib in 256 1024 4096; do
    lab_up --kernel 6.1 --guest "a1:mem=$mib,view=0"
    ram=$(lab_field ram)
    qmp=$(lab_field qmp)
    # Touch the guest's RAM file, as a guest that ran a while would have.
    cat "$ram" >/dev/null
    target/release/examples/attach_bench "a1=qemu:$ram,qmp=$qmp" "$(dirname "$qmp")/operator.sock" "${1:-10}"
    lab_down
done
