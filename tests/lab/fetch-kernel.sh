#!/bin/sh
# Puts the pinned guest kernel (tests/lab/kernel.env) into the lab cache, once:
#
#   ${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/
#       vmlinuz  config  qemu_fw_cfg.ko   from linux-image-<release>-unsigned
#       vmlinux                           from linux-image-<release>-dbg (DWARF + BTF)
#
# (The package's System.map is a placeholder; symbols come from vmlinux.)
#
# Idempotent: a complete directory (marked by .complete) is left alone. Needs apt-get (no root needed
# for `apt-get download`), dpkg-deb, tar, and xz/zstd when the module is compressed. Prints the paths.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/kernel.env"
cache=${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}
dest=$cache/kernel-${KERNEL_RELEASE}_${KERNEL_VERSION}

print_paths() {
    for f in vmlinuz vmlinux config qemu_fw_cfg.ko; do
        echo "$f: $dest/$f"
    done
}

mkdir -p "$cache"
# One fetch at a time per cache (parallel test binaries may all find the kernel missing).
exec 9>"$cache/.fetch.lock"
flock 9

if [ -f "$dest/.complete" ]; then
    print_paths
    exit 0
fi

work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

unsigned=linux-image-${KERNEL_RELEASE}-unsigned
dbg=linux-image-${KERNEL_RELEASE}-dbg

# apt-get download as root drops privileges to _apt, which cannot write a root-owned directory.
apt_opts=""
if [ "$(id -u)" = 0 ]; then
    apt_opts="-o APT::Sandbox::User=root"
fi

# download PKG=VERSION: apt-get download, refreshing the package lists once (as root) if they are stale.
refreshed=no
download() {
    # shellcheck disable=SC2086
    if apt-get download -q $apt_opts "$1" >&2; then
        return 0
    fi
    if [ "$refreshed" = no ] && [ "$(id -u)" = 0 ]; then
        echo "fetch-kernel: $1 not found; running apt-get update" >&2
        refreshed=yes
        apt-get update -q >&2
        # shellcheck disable=SC2086
        apt-get download -q $apt_opts "$1" >&2 && return 0
    fi
    echo "fetch-kernel: cannot download $1 (is the version still in the archive? see tests/lab/kernel.env)" >&2
    return 1
}

cd "$work"
echo "fetch-kernel: downloading $unsigned=$KERNEL_VERSION" >&2
download "$unsigned=$KERNEL_VERSION"
dpkg-deb --fsys-tarfile "${unsigned}_${KERNEL_VERSION}"_*.deb | tar -x --wildcards \
    './boot/vmlinuz-*' './boot/config-*' \
    './lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko*'
rm -f "${unsigned}_${KERNEL_VERSION}"_*.deb

echo "fetch-kernel: downloading $dbg=$KERNEL_VERSION (large)" >&2
download "$dbg=$KERNEL_VERSION"
dpkg-deb --fsys-tarfile "${dbg}_${KERNEL_VERSION}"_*.deb | tar -x --wildcards './usr/lib/debug/boot/vmlinux-*'
rm -f "${dbg}_${KERNEL_VERSION}"_*.deb

out=$work/out
mkdir "$out"
mv "boot/vmlinuz-$KERNEL_RELEASE" "$out/vmlinuz"
mv "boot/config-$KERNEL_RELEASE" "$out/config"
mv "usr/lib/debug/boot/vmlinux-$KERNEL_RELEASE" "$out/vmlinux"
ko=$(find lib/modules -name 'qemu_fw_cfg.ko*' | head -n 1)
case "$ko" in
    *.ko) mv "$ko" "$out/qemu_fw_cfg.ko" ;;
    *.ko.xz) xz -dc "$ko" >"$out/qemu_fw_cfg.ko" ;;
    *.ko.zst) zstd -qdc "$ko" >"$out/qemu_fw_cfg.ko" ;;
    *) echo "fetch-kernel: qemu_fw_cfg.ko not found in $unsigned" >&2; exit 1 ;;
esac
printf '%s\n%s\n' "$KERNEL_RELEASE" "$KERNEL_VERSION" >"$out/.complete"

rm -rf "$dest"
mv "$out" "$dest"
print_paths
