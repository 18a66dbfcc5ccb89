#!/usr/bin/env bash
# Recovery after vfabric is SIGKILLed and restarted, seen by a guest pinging another every
# 20 ms, with vfabric listening (QEMU reconnect-ms=100) and with QEMU listening (vfabric
# dials). Usage: benches/restart.sh [ROUNDS] (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-restart
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-restart "${1:-5}"
