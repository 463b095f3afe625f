#!/bin/bash
# Benchmark of attach on lab guests of growing RAM (256 MiB to 4 GiB, the pinned 6.1 kernel): how
# long the guest is held paused (from the STOP and RESUME events of a second, operator's, QMP
# monitor), what the attach costs in all (the kernel found through a vCPU's page tables while the
# guest runs), and a bare pause/resume of the same guest in the same run; each size with RAM in a
# shared file (qemu:) and with anonymous RAM read through the QEMU process (qemu-process:).
# Usage: scripts/bench-attach.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p xsched-lab
cargo build --release -q -p xsched --example attach_bench
. scripts/lib/lab.sh
for mib in 256 1024 4096; do
    # Each size twice: RAM in a shared file (qemu:), and anonymous RAM of an ordinary QEMU read
    # through its process (qemu-process:).
    for ram_kind in file anon; do
        if [ "$ram_kind" = anon ]; then opt=",anon"; else opt=""; fi
        lab_up --kernel 6.1 --guest "a1:mem=$mib,view=0$opt"
        qmp=$(lab_field qmp)
        if [ "$ram_kind" = anon ]; then
            domain="a1=qemu-process:$qmp"
        else
            ram=$(lab_field ram)
            # Touch the guest's RAM file, as a guest that ran a while would have.
            cat "$ram" >/dev/null
            domain="a1=qemu:$ram,qmp=$qmp"
        fi
        echo "== $ram_kind RAM: $domain"
        target/release/examples/attach_bench "$domain" "$(dirname "$qmp")/operator.sock" "${1:-10}"
        lab_down
    done
done
