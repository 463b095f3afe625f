#!/bin/bash
# Benchmark of park and unpark on a lab guest of each pinned kernel (6.1 CFS, 6.12 EEVDF): the
# cost of one park and one unpark (guest paused, checks, writes, resumed) and the work done inside
# the pause, beside a bare pause/resume of the same guest in the same run.
# Usage: scripts/bench-park.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched-lab
cargo build --release -q -p xsched --example park_bench
out=$(mktemp -d)
lab=""
trap '[ -n "$lab" ] && kill "$lab" 2>/dev/null; wait 2>/dev/null; rm -rf "$out"' EXIT
# One guest per pinned kernel, one after the other, in the same run.
for pin in tests/lab/kernels/*.env; do
    kernel=${pin##*/}
    kernel=${kernel%.env}
    target/release/xsched-lab up --kernel "$kernel" --guest b1:vcpus=2,hog=cpu*3,view=0 >"$out/lab" 2>&1 &
    lab=$!
    until grep -q '^up;' "$out/lab"; do
        kill -0 "$lab" 2>/dev/null || { cat "$out/lab" >&2; exit 1; }
        sleep 0.5
    done
    ram=$(awk '$1 == "ram:" { print $2 }' "$out/lab")
    qmp=$(awk '$1 == "qmp:" { print $2 }' "$out/lab")
    pid=$(awk '$1 == "workload" && $2 == "hog:" { gsub(/[\[\],]/, "", $4); print $4 }' "$out/lab")
    target/release/examples/park_bench "b1=qemu:$ram,qmp=$qmp" "$pid" "${1:-300}"
    kill -TERM "$lab"
    wait "$lab" 2>/dev/null || true
    lab=""
done
