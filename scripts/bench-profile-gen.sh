#!/bin/bash
# Benchmarks building a kernel profile, every way xsched can, against baselines measured in the
# same run:
#
#   xsched profile gen --vmlinux    from the -dbg vmlinux's DWARF (release build; several runs)
#   xsched profile gen --image      from the vmlinuz alone: its BTF and kallsyms (several runs)
#   gdb -batch             loading the same vmlinux and printing one `ptype /o struct rq`
#                          (what one would otherwise run to read a single layout)
#   readelf --debug-dump=info > /dev/null   (only with --readelf: a full text dump, minutes)
#   with --live (lab kernels only): a lab guest booted, then `xsched probe` with no profile on the
#   host and an empty cache (it builds the profile from the guest's memory), beside `xsched probe`
#   with the committed profile, the attach alone
#
# Wall time and peak RSS come from `/usr/bin/time -v`. The file is read once beforehand so every
# tool starts with a warm page cache (the machine's other users make dropping caches unfriendly).
#
# Usage: scripts/bench-profile-gen.sh [--readelf] [--live] [--runs N] [VMLINUX]
# VMLINUX defaults to $XSCHED_VMLINUX, else the lab kernel $XSCHED_LAB_KERNEL (a pin in
# tests/lab/kernels/, default 6.1) in ${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}; install that with
# scripts/install-deps.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

readelf_too=0
live=0
runs=5
vmlinux=""
while [ $# -gt 0 ]; do
    case "$1" in
        --readelf) readelf_too=1 ;;
        --live) live=1 ;;
        --runs) shift; runs=$1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) vmlinux=$1 ;;
    esac
    shift
done

if [ -z "$vmlinux" ]; then
    vmlinux=${XSCHED_VMLINUX:-}
fi
if [ -z "$vmlinux" ] || [ "$live" = 1 ]; then
    pin=$root/tests/lab/kernels/${XSCHED_LAB_KERNEL:-6.1}.env
    if [ ! -f "$pin" ]; then
        echo "bench-profile-gen: no pinned kernel \"${XSCHED_LAB_KERNEL:-6.1}\" in tests/lab/kernels/" >&2
        exit 1
    fi
    . "$pin"
    cache=${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}
    vmlinux=${vmlinux:-$cache/kernel-${KERNEL_RELEASE}_${KERNEL_VERSION}/vmlinux}
fi
vmlinuz=$(dirname "$vmlinux")/vmlinuz
if [ ! -f "$vmlinux" ]; then
    echo "bench-profile-gen: $vmlinux not found; install the lab kernel with scripts/install-deps.sh" >&2
    exit 1
fi
for tool in /usr/bin/time gdb readelf cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-profile-gen: $tool is missing (apt-get install time gdb binutils)" >&2
        exit 1
    fi
done

echo "bench-profile-gen: building xsched (release)" >&2
(cd "$root" && cargo build -q -p xsched --release)
[ "$live" = 1 ] && (cd "$root" && cargo build -q -p xsched-lab --release)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
xsched=${target_dir:-$root/target}/release/xsched

work=$(mktemp -d)
cd "$root"
. scripts/lib/lab.sh
trap '[ -n "$lab_pid" ] && kill "$lab_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work" "$lab_out"' EXIT

size_mb=$(( $(stat -c %s "$vmlinux") / 1048576 ))
info_hex=$(readelf -SW "$vmlinux" | awk '$2 == ".debug_info" { print $6 }')
info_mb=$(( 0x${info_hex:-0} / 1048576 ))
cat "$vmlinux" >/dev/null

# measure LABEL COMMAND...: runs COMMAND under /usr/bin/time -v, prints one result row.
measure() {
    label=$1
    shift
    if ! /usr/bin/time -v -o "$work/time" "$@" >/dev/null 2>"$work/err"; then
        echo "bench-profile-gen: '$label' failed:" >&2
        cat "$work/err" "$work/time" >&2
        exit 1
    fi
    awk -v label="$label" '
        /Elapsed \(wall clock\)/ {
            n = split($NF, t, ":"); s = 0
            for (i = 1; i <= n; i++) s = s * 60 + t[i]
            wall = s
        }
        /Maximum resident set size/ { rss = $NF / 1024 }
        END { printf "%-52s %9.2f %12.0f\n", label, wall, rss }' "$work/time"
}

echo "vmlinux: $vmlinux ($size_mb MB, .debug_info $info_mb MB), warm page cache"
printf "%-52s %9s %12s\n" "tool" "wall s" "peak RSS MB"
i=1
while [ "$i" -le "$runs" ]; do
    measure "xsched profile gen (run $i)" "$xsched" profile gen --vmlinux "$vmlinux" -o "$work/profile.json"
    i=$((i + 1))
done
echo "profile: $(( ($(stat -c %s "$work/profile.json") + 1023) / 1024 )) KB"
if [ -f "$vmlinuz" ]; then
    cat "$vmlinuz" >/dev/null
    i=1
    while [ "$i" -le "$runs" ]; do
        measure "xsched profile gen --image vmlinuz (run $i)" "$xsched" profile gen --image "$vmlinuz" -o "$work/btf.json"
        i=$((i + 1))
    done
    cmp -s "$work/profile.json" "$work/btf.json" || echo "bench-profile-gen: the vmlinuz's profile differs from the DWARF one" >&2
fi
measure "gdb -batch: load + ptype /o struct rq" gdb -batch -nx "$vmlinux" -ex 'ptype /o struct rq'
if [ "$readelf_too" = 1 ]; then
    measure "readelf --debug-dump=info > /dev/null" readelf --debug-dump=info "$vmlinux"
fi
if [ "$live" = 1 ]; then
    lab_up --kernel "${XSCHED_LAB_KERNEL:-6.1}" --guest "b1:view=0"
    domain="b1=qemu:$(lab_field ram),qmp=$(lab_field qmp)"
    mkdir -p "$work/no-profiles"
    i=1
    while [ "$i" -le "$runs" ]; do
        measure "live guest: probe with the committed profile (run $i)" "$xsched" probe --kernels kernels --domain "$domain"
        measure "live guest: probe building the profile (run $i)" env XSCHED_PROFILE_CACHE="$work/cache-$i" "$xsched" probe --kernels "$work/no-profiles" --domain "$domain"
        i=$((i + 1))
    done
    lab_down
fi
