#!/bin/sh
# Installs what the xsched lab needs on Debian 12, then fetches every pinned guest kernel
# (tests/lab/kernels/*.env) and the Xen lab's files.
# Idempotent: installs only missing packages (apt-get update only then); a kernel's fetch is
# skipped when the cache already has it. Run as root (or with every package already installed).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

packages="qemu-system-x86 busybox-static gdb cpio gcc libclang-dev libxen-dev zstd xz-utils"
missing=""
for p in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        "install ok installed") ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing packages:$missing; run as root: sudo $0" >&2
        exit 1
    fi
    echo "install-deps: installing$missing" >&2
    apt-get update -q >&2
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >&2
else
    echo "install-deps: all packages present" >&2
fi

# Every pinned guest kernel (the QEMU lab boots any of them: XSCHED_LAB_KERNEL, --kernel).
"$here/../tests/lab/fetch-kernel.sh" >/dev/null
# The Xen lab's hypervisor, dom0 kernel and toolstack (tests/xen/README.md).
"$here/../tests/xen/fetch-xen.sh" >/dev/null
