#!/bin/sh
# Runs every xsched test, fast ones first: unit tests, host integration tests (profile generator
# against gcc and gdb), the Xen backend build, then the end-to-end tests on real lab guests: the
# QEMU lab's once per pinned guest kernel (tests/lab/kernels/NAME.env, XSCHED_LAB_KERNEL=NAME; not
# the preview pins, SUITE=preview), then
# xsched in a Xen dom0 with two PV domUs under QEMU (once: the Xen lab pins its own kernels).
# Installs what it needs first (Debian packages, every pinned guest kernel), so it works on a fresh
# clone. CI runs exactly this (.ci/run).
set -eu
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

# The pins the suite runs on: all but preview pins (SUITE=preview in the pin file).
suite_pins() {
    for pin in tests/lab/kernels/*.env; do
        grep -q '^SUITE=preview' "$pin" || printf '%s\n' "$pin"
    done
}

step "dependencies"
scripts/install-deps.sh

step "unit tests"
cargo test --workspace --lib --bins

step "host integration tests (synthetic images, profile generator vs gcc and gdb, BTF vs DWARF)"
cargo test -p xsched --test '*'
for pin in $(suite_pins); do
    kernel=${pin##*/}
    kernel=${kernel%.env}
    [ "$kernel" = 6.1 ] && continue
    step "profile generator vs gdb, and BTF+kallsyms vs DWARF, on kernel $kernel ($pin)"
    XSCHED_LAB_KERNEL=$kernel cargo test -p xsched --test profile_gen_kernel --test profile_btf_kernel
done

step "Xen backend build (feature xen, against libxen-dev)"
scripts/check-xen-build.sh

# The QEMU lab's test binaries: every tests/tests/*.rs but the Xen lab's.
lab_tests=""
for f in tests/tests/*.rs; do
    name=${f##*/}
    name=${name%.rs}
    [ "$name" = xen ] || lab_tests="$lab_tests --test $name"
done
for pin in $(suite_pins); do
    kernel=${pin##*/}
    kernel=${kernel%.env}
    step "end-to-end tests on lab guests running kernel $kernel ($pin)"
    # shellcheck disable=SC2086
    XSCHED_LAB_KERNEL=$kernel cargo test -p xsched-lab $lab_tests
done

step "end-to-end tests of xsched in a Xen dom0 (tests/xen/README.md)"
cargo test -p xsched-lab --test xen

step "doc tests"
cargo test --workspace --doc

step "all tests passed"
