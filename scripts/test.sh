#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian 12 machine (root or sudo; a Rust
# toolchain >= 1.95 from rustup): installs QEMU, the guest kernel and the rest, then runs
# formatting and lint checks, unit tests, in-process vhost-user protocol tests and the
# real-VM tests (guests boot under TCG where KVM cannot run a stock kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust >= 1.95 (rustup)" >&2; exit 1; }

scripts/install-deps.sh
scripts/fetch-qemu-7.2.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
