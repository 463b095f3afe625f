#!/bin/sh
# Benchmarks xsched's snapshot of a guest's task table (host/benches/snapshot.rs), in one run:
#
#   (a) a synthetic guest image in memory (always);
#   (b) a real lab guest with SLEEPERS extra processes, through its QEMU RAM file, and the pause
#       per snapshot (QMP stop -> read -> cont);
#   (c) a core dump of that guest (QMP dump-guest-memory, written by the benchmark).
#
# each beside baselines (naive whole-struct and field-by-field readers, a page-table walk per
# access, one copy of all RAM; a bare QMP stop -> cont). The guest is booted with `xsched-lab up`
# in the background and stopped (its files removed) when this script ends.
#
# Usage: scripts/bench-snapshot.sh [--sleepers N] [--vcpus N] [--mem MIB] [--rounds N]
# Needs the lab (scripts/install-deps.sh); under TCG a 1000-sleeper guest takes about a minute.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

sleepers=1000
vcpus=2
mem=1024
rounds=30
while [ $# -gt 0 ]; do
    case "$1" in
        --sleepers) shift; sleepers=$1 ;;
        --vcpus) shift; vcpus=$1 ;;
        --mem) shift; mem=$1 ;;
        --rounds) shift; rounds=$1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$root"
cargo build --quiet -p xsched-lab --bin xsched-lab
cargo bench --quiet -p xsched --bench snapshot --no-run
target=${CARGO_TARGET_DIR:-$root/target}

log=$(mktemp /tmp/xsched-bench-lab.XXXXXX)
"$target/debug/xsched-lab" up --guest "bench:vcpus=$vcpus,mem=$mem,sleepers=$sleepers,view=0" >"$log" 2>&1 &
lab=$!
stop_lab() {
    # xsched-lab stops its guests and removes their files on SIGTERM (SIGINT would do too, but a
    # background job of a non-interactive shell ignores it).
    kill -TERM "$lab" 2>/dev/null || true
    wait "$lab" 2>/dev/null || true
    rm -f "$log"
}
trap stop_lab EXIT
trap 'exit 130' INT TERM

echo "booting a lab guest: $vcpus vCPUs, $mem MiB, $sleepers sleepers ..." >&2
waited=0
until grep -q '^up;' "$log"; do
    if ! kill -0 "$lab" 2>/dev/null; then
        echo "xsched-lab up failed:" >&2
        cat "$log" >&2
        exit 1
    fi
    if [ "$waited" -ge 600 ]; then
        echo "the guest was not up after 600 s:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
field() { sed -n "s/^  $1: *//p" "$log" | head -n 1; }
ram=$(field ram)
qmp=$(field qmp)
echo "guest up after ${waited} s: ram $ram, qmp $qmp" >&2
# Let the sleepers settle (the last ones are still being forked when the ready line comes).
sleep 5

XSCHED_BENCH_RAM=$ram XSCHED_BENCH_QMP=$qmp XSCHED_BENCH_CORE="$(dirname "$ram")/bench.core" XSCHED_BENCH_ROUNDS=$rounds \
    cargo bench --quiet -p xsched --bench snapshot
