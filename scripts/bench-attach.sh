#!/bin/bash
# Benchmark of attach on lab guests of growing RAM (256 MiB to 4 GiB, the pinned 6.1 kernel): how
# long the guest is held paused (from the STOP and RESUME events of a second, operator's, QMP
# monitor), what the attach costs in all (the RAM search runs while the guest does), and a bare
# pause/resume of the same guest in the same run.
# Usage: scripts/bench-attach.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched-lab
cargo build --release -q -p xsched --example attach_bench
out=$(mktemp -d)
lab=""
trap '[ -n "$lab" ] && kill "$lab" 2>/dev/null; wait 2>/dev/null; rm -rf "$out"' EXIT
for mib in 256 1024 4096; do
    target/release/xsched-lab up --kernel 6.1 --guest "a1:mem=$mib,view=0" >"$out/lab" 2>&1 &
    lab=$!
    until grep -q '^up;' "$out/lab"; do
        kill -0 "$lab" 2>/dev/null || { cat "$out/lab" >&2; exit 1; }
        sleep 0.5
    done
    ram=$(awk '$1 == "ram:" { print $2 }' "$out/lab")
    qmp=$(awk '$1 == "qmp:" { print $2 }' "$out/lab")
    # Touch the guest's RAM file, as a guest that ran a while would have.
    cat "$ram" >/dev/null
    target/release/examples/attach_bench "a1=qemu:$ram,qmp=$qmp" "$(dirname "$qmp")/operator.sock" "${1:-10}"
    kill -TERM "$lab"
    wait "$lab" 2>/dev/null || true
    lab=""
done
