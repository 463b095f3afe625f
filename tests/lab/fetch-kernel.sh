#!/bin/sh
# Puts pinned guest kernels (tests/lab/kernels/NAME.env) into the lab cache, once each:
#
#   ${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/kernel-<release>_<version>/
#       vmlinuz  config  qemu_fw_cfg.ko   from linux-image-<release>-unsigned
#       vmlinux                           from linux-image-<release>-dbg (DWARF + BTF)
#
# A pin with KERNEL_PACKAGING=split (Debian's 7.x) takes vmlinuz from linux-binary-<release>, config
# from linux-base-<release> and the module from linux-modules-<release> (all under
# usr/lib/modules/<release>/). A pin with KERNEL_SUITES (e.g. "trixie trixie-backports") is fetched
# through a deb822 sources file and package lists of the cache's own (apt/<suites>/ in the cache,
# refreshed when a package is missing), never through the system's apt configuration.
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

# private_apt SUITES: sets apt_src to apt-get options that read only the Debian suites SUITES
# (space-separated) through a sources file and lists under $cache/apt/, creating the file.
apt_src=""
private_apt() {
    dir=$cache/apt/$(echo "$1" | tr ' ' '+')
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$1" >"$dir/lab.sources"
    apt_src="-o Dir::Etc::SourceList=$dir/lab.sources -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$dir/lists -o Dir::Cache=$dir/cache"
    if [ ! -f "$dir/lists/.updated" ]; then
        apt_update
        touch "$dir/lists/.updated"
    fi
}

# apt_update: refreshes the package lists apt_src names (the system's when it is empty).
apt_update() {
    # shellcheck disable=SC2086
    apt-get update -q $apt_opts $apt_src >&2
}

# download PKG=VERSION DIR: apt-get download into the empty directory DIR, refreshing the package
# lists once (as root, or always for a private list) if they are stale. Leaves the one .deb there,
# whatever apt named it.
refreshed=no
download() {
    # shellcheck disable=SC2086
    if (cd "$2" && apt-get download -q $apt_opts $apt_src "$1" >&2); then
        return 0
    fi
    if [ "$refreshed" = no ] && { [ "$(id -u)" = 0 ] || [ -n "$apt_src" ]; }; then
        echo "fetch-kernel: $1 not found; running apt-get update" >&2
        refreshed=yes
        apt_update
        # shellcheck disable=SC2086
        (cd "$2" && apt-get download -q $apt_opts $apt_src "$1" >&2) && return 0
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

# fetch_member PKG MEMBER...: downloads PKG=$KERNEL_VERSION and extracts the members (tar patterns)
# into the current directory.
fetch_member() {
    pkg=$1
    shift
    echo "fetch-kernel: downloading $pkg=$KERNEL_VERSION" >&2
    download "$pkg=$KERNEL_VERSION" pkg
    deb=$(the_deb pkg)
    dpkg-deb --fsys-tarfile "$deb" | tar -x --wildcards "$@"
    rm -f "$deb"
}

# fetch ENV_FILE: fetches one kernel (run in a subshell: it sources the file, changes directory and
# sets a trap).
fetch() {
    KERNEL_RELEASE= KERNEL_VERSION= KERNEL_SUITES= KERNEL_PACKAGING=
    . "$1"
    if [ -z "$KERNEL_RELEASE" ] || [ -z "$KERNEL_VERSION" ]; then
        echo "fetch-kernel: $1 lacks KERNEL_RELEASE or KERNEL_VERSION" >&2
        return 1
    fi
    dest=$cache/kernel-${KERNEL_RELEASE}_${KERNEL_VERSION}
    if [ ! -f "$dest/.complete" ]; then
        if [ -n "$KERNEL_SUITES" ]; then
            private_apt "$KERNEL_SUITES"
        fi
        work=$(mktemp -d "$cache/.fetch.XXXXXX")
        trap 'rm -rf "$work"' EXIT INT TERM
        cd "$work"
        mkdir pkg out

        case $KERNEL_PACKAGING in
            split)
                prefix=usr/lib/modules/$KERNEL_RELEASE
                fetch_member "linux-binary-$KERNEL_RELEASE" "./$prefix/vmlinuz"
                fetch_member "linux-base-$KERNEL_RELEASE" "./$prefix/config"
                mods=linux-modules-$KERNEL_RELEASE
                fetch_member "$mods" "./$prefix/kernel/drivers/firmware/qemu_fw_cfg.ko*"
                mv "$prefix/vmlinuz" out/vmlinuz
                mv "$prefix/config" out/config
                ;;
            '')
                prefix=lib/modules/$KERNEL_RELEASE
                mods=linux-image-${KERNEL_RELEASE}-unsigned
                fetch_member "$mods" "./boot/vmlinuz-$KERNEL_RELEASE" "./boot/config-$KERNEL_RELEASE" \
                    "./$prefix/kernel/drivers/firmware/qemu_fw_cfg.ko*"
                mv "boot/vmlinuz-$KERNEL_RELEASE" out/vmlinuz
                mv "boot/config-$KERNEL_RELEASE" out/config
                ;;
            *)
                echo "fetch-kernel: $1: unknown KERNEL_PACKAGING \"$KERNEL_PACKAGING\" (split or empty)" >&2
                return 1
                ;;
        esac

        # The vmlinux with DWARF: usr/lib/debug/boot/vmlinux-RELEASE up to 6.x; from 7.x that is a
        # symlink to usr/lib/debug/lib/modules/RELEASE/vmlinux.
        dbg=linux-image-${KERNEL_RELEASE}-dbg
        case $KERNEL_PACKAGING in
            split) vmlinux=usr/lib/debug/lib/modules/$KERNEL_RELEASE/vmlinux ;;
            *) vmlinux=usr/lib/debug/boot/vmlinux-$KERNEL_RELEASE ;;
        esac
        echo "fetch-kernel: $dbg is large" >&2
        fetch_member "$dbg" "./$vmlinux"
        mv "$vmlinux" out/vmlinux
        ko=$prefix/kernel/drivers/firmware/qemu_fw_cfg.ko
        if [ -f "$ko" ]; then
            mv "$ko" out/qemu_fw_cfg.ko
        elif [ -f "$ko.xz" ]; then
            xz -dc "$ko.xz" >out/qemu_fw_cfg.ko
        elif [ -f "$ko.zst" ]; then
            zstd -qdc "$ko.zst" >out/qemu_fw_cfg.ko
        else
            echo "fetch-kernel: qemu_fw_cfg.ko not found in $mods" >&2
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
