#!/bin/sh
# Puts what the Xen lab boots into the lab cache, once:
#
#   ${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}/xen-<xen version>_<dom0 kernel version>/
#       xen                  the hypervisor (xen-hypervisor-4.17-amd64's boot/xen-4.17-amd64.gz, gunzipped:
#                            an ELF multiboot image QEMU's -kernel loads)
#       dom0-vmlinuz         Debian's generic kernel (the cloud kernel has no dom0 support)
#       modules/*.ko         the generic kernel's xen-evtchn, xen-gntdev, xen-privcmd, xenfs
#       tools/               xl, xenstored, xenconsoled, xenconsole, xen-init-dom0 (xen-utils-4.17)
#
# The hypervisor and tools are the version of the installed libxen-dev (so xsched's libxenctrl and
# the hypervisor agree); the dom0 kernel is the generic build of the lab's 6.1 pin
# (tests/lab/kernels/6.1.env), the kernel the domUs boot too (tests/xen/build.sh).
# Idempotent: a complete directory (marked by .complete) is left alone. Prints the directory.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lab/kernels/6.1.env"
cache=${XSCHED_LAB_CACHE:-$HOME/.cache/xsched-lab}
xen_version=$(dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null || true)
if [ -z "$xen_version" ]; then
    echo "fetch-xen: libxen-dev is not installed (run scripts/install-deps.sh)" >&2
    exit 1
fi
dom0_release=${KERNEL_RELEASE%-cloud-amd64}-amd64
dest=$cache/xen-${xen_version}_${KERNEL_VERSION}

mkdir -p "$cache"
exec 9>"$cache/.fetch-xen.lock"
flock 9
if [ -f "$dest/.complete" ]; then
    echo "$dest"
    exit 0
fi

work=$(mktemp -d "$cache/.fetch-xen.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
apt_opts=""
if [ "$(id -u)" = 0 ]; then
    apt_opts="-o APT::Sandbox::User=root"
fi
download() {
    # shellcheck disable=SC2086
    apt-get download -q $apt_opts "$@" >&2 && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "fetch-xen: $* not found; running apt-get update" >&2
        apt-get update -q >&2
        # shellcheck disable=SC2086
        apt-get download -q $apt_opts "$@" >&2 && return 0
    fi
    echo "fetch-xen: cannot download $* (still in the archive?)" >&2
    return 1
}

cd "$work"
echo "fetch-xen: downloading Xen $xen_version and linux-image-$dom0_release $KERNEL_VERSION" >&2
download "xen-hypervisor-4.17-amd64=$xen_version" "xen-utils-4.17=$xen_version" \
    "linux-image-$dom0_release-unsigned=$KERNEL_VERSION"
mkdir x
for deb in xen-hypervisor-4.17-amd64_*.deb xen-utils-4.17_*.deb; do
    dpkg-deb -x "$deb" x
done
dpkg-deb --fsys-tarfile "linux-image-$dom0_release-unsigned_${KERNEL_VERSION}"_*.deb | tar -x -C x --wildcards \
    "./boot/vmlinuz-$dom0_release" './lib/modules/*/kernel/drivers/xen/*'
rm -f ./*.deb

out=$work/out
mkdir -p "$out/modules" "$out/tools"
gzip -dc x/boot/xen-4.17-amd64.gz >"$out/xen"
mv "x/boot/vmlinuz-$dom0_release" "$out/dom0-vmlinuz"
for m in xen-evtchn xen-gntdev xen-privcmd xenfs/xenfs; do
    mv "x/lib/modules/$dom0_release/kernel/drivers/xen/$m.ko" "$out/modules/"
done
for t in xl xenstored xenconsoled xenconsole xen-init-dom0; do
    mv "x/usr/lib/xen-4.17/bin/$t" "$out/tools/"
done
printf '%s\n%s\n' "$xen_version" "$KERNEL_VERSION" >"$out/.complete"
rm -rf "$dest"
mv "$out" "$dest"
echo "$dest"
