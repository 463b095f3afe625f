#!/bin/bash
# The main job, as far as xsched goes today: boot two lab guests (u1 runs db and bkup, u2 runs
# web), find their kernels, and show every task of both in one cross-domain table, live.
# Installs and builds what it needs; stops the guests and removes their files on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -q -p xsched -p xsched-lab

out=$(mktemp -d)
trap 'kill "$lab" 2>/dev/null; wait "$lab" 2>/dev/null; rm -rf "$out"' EXIT
target/release/xsched-lab up \
    --guest u1:vcpus=1,db=phases:300:700,bkup=cpu \
    --guest u2:vcpus=1,web=phases:500:500 >"$out/lab" 2>&1 &
lab=$!
until grep -q '^up;' "$out/lab"; do
    kill -0 "$lab" 2>/dev/null || { cat "$out/lab" >&2; exit 1; }
    sleep 0.5
done
cat "$out/lab"

domains=()
for guest in u1 u2; do
    ram=$(awk -v g="$guest" '$1 == "guest" { cur = $2 } cur == g && $1 == "ram:" { print $2 }' "$out/lab")
    qmp=$(awk -v g="$guest" '$1 == "guest" { cur = $2 } cur == g && $1 == "qmp:" { print $2 }' "$out/lab")
    domains+=(--domain "$guest=qemu:$ram,qmp=$qmp")
    echo
    target/release/xsched probe --domain "$guest=qemu:$ram,qmp=$qmp"
done

echo
target/release/xsched ps "${domains[@]}" | grep -v -E ' (kworker|ksoftirqd|migration|cpuhp|rcu_|idle_inject)'
echo
echo "live view (5 refreshes, 1 s apart):"
target/release/xsched ps --watch --count 5 "${domains[@]}" | grep -v -E ' (kworker|ksoftirqd|migration|cpuhp|rcu_|idle_inject)'
