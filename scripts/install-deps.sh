#!/bin/sh
# Installs what the xsched lab needs on Debian 12 (packages; drgn from PyPI in a venv in the lab
# cache, for the scheduler-state checker tests/lab/sched_check.py), then fetches every pinned guest
# kernel (tests/lab/kernels/*.env) and the Xen lab's files.
# Idempotent: installs only missing packages (apt-get update only then); a kernel's fetch is
# skipped when the cache already has it. Run as root (or with every package already installed).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

# libvirt-dev: the libvirt backend links libvirt and libvirt-qemu (the `virt` crate's prebuilt
# bindings need no libclang); libvirt-daemon-system: the libvirtd the libvirt lab test runs.
packages="qemu-system-x86 busybox-static gdb cpio gcc libclang-dev libxen-dev libvirt-dev libvirt-daemon-system zstd xz-utils python3 python3-venv fonts-dejavu-core systemd"
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

# drgn, pinned, in ${XSCHED_LAB_CACHE:-~/.cache/xsched-lab}/venv (xsched_lab::sched_check uses it).
drgn_version=0.3.0
cache=${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}
venv=$cache/venv
mkdir -p "$cache"
(
    flock 8
    if "$venv/bin/python" -c "import sys, drgn; sys.exit(drgn.__version__ != '$drgn_version')" 2>/dev/null; then
        echo "install-deps: drgn $drgn_version present in $venv" >&2
    else
        echo "install-deps: installing drgn $drgn_version into $venv" >&2
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check "drgn==$drgn_version" >&2
    fi
) 8>"$cache/.venv.lock"

# Every pinned guest kernel the suite runs on (the QEMU lab boots any of them: XSCHED_LAB_KERNEL,
# --kernel); a preview pin (SUITE=preview) is fetched when a test first asks for it.
suite_pins=$(grep -L '^SUITE=preview' "$here"/../tests/lab/kernels/*.env)
# shellcheck disable=SC2086
"$here/../tests/lab/fetch-kernel.sh" $suite_pins >/dev/null
# The Xen lab's hypervisor, dom0 kernel and toolstack (tests/xen/README.md).
"$here/../tests/xen/fetch-xen.sh" >/dev/null
