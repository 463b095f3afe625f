#!/bin/sh
# Puts pinned guest kernels (tests/lab/kernels/NAME.env) into the lab cache, once each:
#
#   ${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/
#       vmlinuz  config  qemu_fw_cfg.ko   from linux-image-<release>-unsigned
#       vmlinux                           from linux-image-<release>-dbg (DWARF + BTF)
#
# Usage: fetch-kernel.sh [PIN...]   PIN: a pin's name (6.1, 6.12) or the path of an .env file;
#                                   no PIN: every pin in tests/lab/kernels/.
#
# (The package's System.map is a placeholder; symbols come from vmlinux.)
#
# Idempotent: a complete directory (marked by .complete) is left alone. Needs apt-get (no root needed
# for `apt-get download`), dpkg-deb, tar, and xz/zstd when the module is compressed. Prints the paths
# of each kernel's files, one `NAME: PATH` line each.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}

# apt-get download as root drops privileges to _apt, which cannot write a root-owned directory.
apt_opts=""
if [ "$(id -u)" = 0 ]; then
    apt_opts="-o APT::Sandbox::User=root"
fi

# pins: the names of every pinned kernel, space-separated.
pins() {
    sep=
    for f in "$here"/kernels/*.env; do
        f=${f##*/}
        printf '%s%s' "$sep" "${f%.env}"
        sep=' '
    done
}

# env_file PIN: the .env file a pin's name or path stands for.
env_file() {
    case $1 in
        */* | *.env) file=$1 ;;
        *) file=$here/kernels/$1.env ;;
    esac
    if [ ! -f "$file" ]; then
        echo "fetch-kernel: no pinned kernel \"$1\"; the pinned kernels are: $(pins)" >&2
        return 1
    fi
    echo "$file"
}

# download PKG=VERSION DIR: apt-get download into the empty directory DIR, refreshing the package
# lists once (as root) if they are stale. Leaves the one .deb there, whatever apt named it.
refreshed=no
download() {
    # shellcheck disable=SC2086
    if (cd "$2" && apt-get download -q $apt_opts "$1" >&2); then
        return 0
    fi
    if [ "$refreshed" = no ] && [ "$(id -u)" = 0 ]; then
        echo "fetch-kernel: $1 not found; running apt-get update" >&2
        refreshed=yes
        apt-get update -q >&2
        # shellcheck disable=SC2086
        (cd "$2" && apt-get download -q $apt_opts "$1" >&2) && return 0
    fi
    echo "fetch-kernel: cannot download $1 (is the version still in the archive? see tests/lab/kernels/)" >&2
    return 1
}

# the_deb DIR: the one .deb file in DIR.
the_deb() {
    set -- "$1"/*.deb
    if [ $# != 1 ] || [ ! -f "$1" ]; then
        echo "fetch-kernel: expected one .deb, found: $*" >&2
        return 1
    fi
    echo "$1"
}

# fetch ENV_FILE: fetches one kernel (run in a subshell: it sources the file, changes directory and
# sets a trap).
fetch() {
    KERNEL_RELEASE= KERNEL_VERSION=
    . "$1"
    if [ -z "$KERNEL_RELEASE" ] || [ -z "$KERNEL_VERSION" ]; then
        echo "fetch-kernel: $1 lacks KERNEL_RELEASE or KERNEL_VERSION" >&2
        return 1
    fi
    dest=$cache/kernel-${KERNEL_RELEASE}_${KERNEL_VERSION}
    if [ ! -f "$dest/.complete" ]; then
        work=$(mktemp -d "$cache/.fetch.XXXXXX")
        trap 'rm -rf "$work"' EXIT INT TERM
        cd "$work"
        mkdir unsigned dbg out

        unsigned=linux-image-${KERNEL_RELEASE}-unsigned
        echo "fetch-kernel: downloading $unsigned=$KERNEL_VERSION" >&2
        download "$unsigned=$KERNEL_VERSION" unsigned
        deb=$(the_deb unsigned)
        dpkg-deb --fsys-tarfile "$deb" | tar -x --wildcards \
            "./boot/vmlinuz-$KERNEL_RELEASE" "./boot/config-$KERNEL_RELEASE" \
            "./lib/modules/$KERNEL_RELEASE/kernel/drivers/firmware/qemu_fw_cfg.ko*"
        rm -rf unsigned

        dbg=linux-image-${KERNEL_RELEASE}-dbg
        echo "fetch-kernel: downloading $dbg=$KERNEL_VERSION (large)" >&2
        download "$dbg=$KERNEL_VERSION" dbg
        deb=$(the_deb dbg)
        dpkg-deb --fsys-tarfile "$deb" | tar -x "./usr/lib/debug/boot/vmlinux-$KERNEL_RELEASE"
        rm -rf dbg

        mv "boot/vmlinuz-$KERNEL_RELEASE" out/vmlinuz
        mv "boot/config-$KERNEL_RELEASE" out/config
        mv "usr/lib/debug/boot/vmlinux-$KERNEL_RELEASE" out/vmlinux
        ko=lib/modules/$KERNEL_RELEASE/kernel/drivers/firmware/qemu_fw_cfg.ko
        if [ -f "$ko" ]; then
            mv "$ko" out/qemu_fw_cfg.ko
        elif [ -f "$ko.xz" ]; then
            xz -dc "$ko.xz" >out/qemu_fw_cfg.ko
        elif [ -f "$ko.zst" ]; then
            zstd -qdc "$ko.zst" >out/qemu_fw_cfg.ko
        else
            echo "fetch-kernel: qemu_fw_cfg.ko not found in $unsigned" >&2
            return 1
        fi
        printf '%s\n%s\n' "$KERNEL_RELEASE" "$KERNEL_VERSION" >out/.complete
        rm -rf "$dest"
        mv out "$dest"
    fi
    for f in vmlinuz vmlinux config qemu_fw_cfg.ko; do
        echo "$f: $dest/$f"
    done
}

if [ $# = 0 ]; then
    # shellcheck disable=SC2046
    set -- $(pins)
fi
# Every name must be a pin before anything is fetched.
for pin; do
    env_file "$pin" >/dev/null
done

mkdir -p "$cache"
# One fetch at a time per cache (parallel test binaries may all find a kernel missing).
exec 9>"$cache/.fetch.lock"
flock 9
for pin; do
    (fetch "$(env_file "$pin")")
done
