#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine (root or sudo; a Rust toolchain >= 1.95 from rustup):
# installs QEMU and a guest kernel, builds vfabric, starts it with two ports, boots two small
# guests on them and shows them pinging and moving data through the switch.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust >= 1.95 (rustup)" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release -p vswitch --bin vfabric
VFABRIC_BIN="$PWD/target/release/vfabric" cargo run --release -q -p vfabric-tests --bin vfabric-demo
