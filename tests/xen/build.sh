#!/bin/sh
# Builds the Xen lab's boot files into OUT_DIR:
#
#   OUT_DIR/dom0.cpio    dom0's initramfs: busybox, the Xen toolstack (xl, xenstored, xenconsoled,
#                        xen-init-dom0, xenconsole) with their shared libraries and Xen modules,
#                        xsched (BIN_DIR/xsched, BIN_DIR/lib*.so plugins) with kernels/, the control
#                        channel, and the domUs' kernel, configs and initramfs under /xen
#
# Usage: build.sh OUT_DIR BIN_DIR
#
# The domUs are the lines of tests/xen/domus: NAME VCPUS MEMORY_MIB, each with its workloads in
# tests/xen/NAME.workloads (the QEMU lab's /lab/spawn arguments). They boot the lab's 6.1 cloud
# kernel (tests/lab/kernels/6.1.env; a PV guest kernel) with a busybox initramfs running tests/lab's
# workload and view scripts, whatever XSCHED_LAB_KERNEL says. Needs root (device nodes), cpio,
# busybox-static, the lab kernel (tests/lab/fetch-kernel.sh 6.1)
# and the Xen files (tests/xen/fetch-xen.sh).
set -eu

out=$1
bin=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
lab=$repo/tests/lab
xen=$("$here/fetch-xen.sh")
kernel_dir=$("$lab/fetch-kernel.sh" 6.1 | sed -n 's/^vmlinuz: \(.*\)\/vmlinuz$/\1/p')
busybox=/bin/busybox

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

# base DIR: busybox with its applets, the usual directories and /dev/console.
base() {
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin" "$1/dev" "$1/etc" "$1/proc" "$1/sys" \
        "$1/run" "$1/tmp" "$1/var" "$1/root" "$1/lib/modules" "$1/lab/bin"
    cp "$busybox" "$1/bin/busybox"
    for applet in $("$busybox" --list-full); do
        [ "$applet" = bin/busybox ] || [ -e "$1/$applet" ] || ln -s /bin/busybox "$1/$applet"
    done
    mknod -m 600 "$1/dev/console" c 5 1
}

# cpio DIR FILE: a newc archive of DIR.
archive() {
    (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$2"
}

# The domUs.
mkdir -p "$stage/dom0/xen"
: >"$stage/dom0/xen/domus"
while read -r name vcpus mem; do
    case $name in '' | '#'*) continue ;; esac
    d=$stage/$name
    base "$d"
    cp "$here/domu-init" "$d/init"
    cp "$here/domu-inittab" "$d/etc/inittab"
    mkdir -p "$d/xen"
    cp "$here/domu-ready" "$d/xen/ready"
    for s in lib.sh start spawn workload view; do
        cp "$lab/$s" "$d/lab/$s"
    done
    printf 'LAB_GUEST=%s\nLAB_VIEW_INTERVAL_MS=1000\nLAB_VIEW_KTHREADS=0\nLAB_EXTRA_SLEEPERS=0\n' "$name" >"$d/etc/lab.conf"
    cp "$here/$name.workloads" "$d/etc/lab.workloads"
    archive "$d" "$stage/dom0/xen/$name.cpio"
    cat >"$stage/dom0/xen/$name.cfg" <<CFG
name = "$name"
type = "pv"
kernel = "/xen/domu-vmlinuz"
ramdisk = "/xen/$name.cpio"
extra = "console=hvc0 loglevel=5 panic=1"
memory = $mem
vcpus = $vcpus
on_crash = "preserve"
CFG
    echo "$name" >>"$stage/dom0/xen/domus"
done <"$here/domus"
cp "$kernel_dir/vmlinuz" "$stage/dom0/xen/domu-vmlinuz"

# dom0.
d=$stage/dom0
base "$d"
cp "$here/dom0-init" "$d/init"
cp "$here/dom0-inittab" "$d/etc/inittab"
cp "$here/dom0-up" "$d/xen/dom0-up"
cp "$lab/control" "$d/lab/control"
printf 'LAB_GUEST=dom0\n' >"$d/etc/lab.conf"
mkdir -p "$d/etc/xen"
echo '# xl defaults (none needed)' >"$d/etc/xen/xl.conf"
cp "$xen"/modules/*.ko "$d/lib/modules/"
mkdir -p "$d/usr/lib/xen-4.17/bin" "$d/usr/lib/xsched/plugins" "$d/usr/share/xsched/kernels"
cp "$xen"/tools/* "$d/usr/lib/xen-4.17/bin/"
ln -s /usr/lib/xen-4.17/bin/xl "$d/usr/sbin/xl"
strip --strip-debug -o "$d/usr/bin/xsched" "$bin/xsched"
for so in "$bin"/lib*.so; do
    strip --strip-debug -o "$d/usr/lib/xsched/plugins/${so##*/}" "$so"
done
cp "$repo"/kernels/*.json "$d/usr/share/xsched/kernels/"
# Shared libraries of every dynamic binary, from this (Debian 12) host, and the loader.
mkdir -p "$d/lib64" "$d/lib/x86_64-linux-gnu"
cp -L /lib64/ld-linux-x86-64.so.2 "$d/lib64/"
for f in "$d"/usr/lib/xen-4.17/bin/* "$d/usr/bin/xsched" "$d"/usr/lib/xsched/plugins/*.so; do
    ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
    cp -L "$lib" "$d/lib/x86_64-linux-gnu/"
done
archive "$d" "$out/dom0.cpio.tmp"
mv "$out/dom0.cpio.tmp" "$out/dom0.cpio"
echo "$out/dom0.cpio"
