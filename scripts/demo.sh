#!/bin/bash
# The main job, as far as xsched goes today: boot two lab guests (u1 runs db and bkup, u2 runs
# web), find their kernels, show every task of both in one cross-domain table, then enforce
# db > web > bkup across both guests on one host CPU with the `priority` policy for 20 s.
# Installs and builds what it needs; stops the guests and removes their files on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -q -p xsched -p xsched-lab -p priority

out=$(mktemp -d)
trap 'kill "$lab" 2>/dev/null; wait "$lab" 2>/dev/null; rm -rf "$out"' EXIT
target/release/xsched-lab up \
    --guest u1:vcpus=1,db=phases:2000:3000,bkup=cpu,kthreads=0 \
    --guest u2:vcpus=1,web=phases:1500:2500,kthreads=0 >"$out/lab" 2>&1 &
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

cat >"$out/priority.toml" <<'TOML'
[[rule]]
class = 0
match = { domain = "u1", comm = "db" }
[[rule]]
class = 1
match = { domain = "u2", comm = "web" }
[[rule]]
class = 2
match = { comm = "bkup" }
TOML
echo
echo "db > web > bkup on one host CPU for about 20 s (policy: priority):"
target/release/xsched run --plugin target/release/libpriority.so --config "$out/priority.toml" \
    "${domains[@]}" --cpus 1 --period 10 --periods 2000 \
    --journal "$out/journal.jsonl" --trace "$out/trace.jsonl"
python3 - "$out/trace.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def state(r, comm):
    return next((t["state"] for t in r["tasks"] if t["comm"] == comm), "?")
def runtime(r):
    return next((t["runtime_ns"] for t in r["tasks"] if t["comm"] == "bkup"), None)
busy = {True: [0.0, 0], False: [0.0, 0]}
for a, b in zip(rows, rows[1:]):
    ra, rb = runtime(a), runtime(b)
    if ra is None or rb is None:
        continue
    high = state(a, "db") == "R" or state(a, "web") == "R"
    busy[high][0] += b["t"] - a["t"]
    busy[high][1] += rb - ra
for high, (secs, ns) in busy.items():
    what = "db or web runnable" if high else "db and web idle"
    print(f"bkup's CPU share while {what}: {100 * ns / 1e9 / max(secs, 1e-9):.1f}% of {secs:.1f} s")
PY
