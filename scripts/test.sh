#!/bin/sh
# Runs every xsched test, fast ones first: unit tests, host integration tests (profile generator
# against gcc and gdb), the Xen backend build, then the end-to-end tests on real lab guests
# (QEMU guests, and a Xen dom0 with two PV domUs under QEMU).
# Installs what it needs first (Debian packages, the pinned guest kernel), so it works on a fresh
# clone. CI runs exactly this (.ci/run).
set -eu
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "dependencies"
scripts/install-deps.sh

step "unit tests"
cargo test --workspace --lib --bins

step "host integration tests (synthetic images, profile generator vs gcc and gdb)"
cargo test -p xsched --test '*'

step "Xen backend build (feature xen, against libxen-dev)"
scripts/check-xen-build.sh

step "end-to-end tests on lab guests (the QEMU lab; then xsched in a Xen dom0, tests/xen/README.md)"
cargo test -p xsched-lab --tests

step "doc tests"
cargo test --workspace --doc

step "all tests passed"
