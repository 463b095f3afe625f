#!/bin/sh
# Boots the Xen lab built by build.sh in DIR (DIR/dom0.cpio) under QEMU software emulation, in the
# foreground (exec: the caller owns the QEMU process):
#
#   DIR/console.log     the first serial port: Xen's console, dom0's hvc0 behind it
#   DIR/control.sock    the second serial port: dom0's control channel (tests/lab/control)
#
# Usage: boot.sh DIR
# Xen boots by multiboot (-kernel); its first module is dom0's kernel with its command line, the
# second dom0's initramfs. The CPU is qemu64 with SSE4: with `-cpu max`, dom0 faults in Xen's PV
# entry code, and with `max,-smap,-smep,-pku,-la57` busybox processes in the PV domUs died of heap
# corruption (glibc "malloc(): invalid size") in 2 of 4 boots. KVM is not used (it hangs on this
# kind of host).
set -eu
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
xen=$("$here/fetch-xen.sh")
exec qemu-system-x86_64 \
    -name xsched-xen-lab,debug-threads=on \
    -accel tcg -machine q35 -cpu qemu64,+popcnt,+sse4.1,+sse4.2,+ssse3 -smp 2 -m 1536 \
    -kernel "$xen/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 noreboot loglvl=warning guest_loglvl=warning" \
    -initrd "$xen/dom0-vmlinuz console=hvc0 loglevel=5 panic=1,$dir/dom0.cpio" \
    -display none -nodefaults -no-reboot \
    -chardev "file,id=console,path=$dir/console.log" -device isa-serial,chardev=console,index=0 \
    -chardev "socket,id=control,path=$dir/control.sock,server=on,wait=off" -device isa-serial,chardev=control,index=1
