#!/usr/bin/env bash
# TAP benchmark: iperf3 TCP between a guest and a server in a network namespace the benchmark
# creates, through vfabric's TAP port vs QEMU's own TAP backend (vhost-net when present),
# alternating rounds in one run. Usage: benches/tap.sh [ROUNDS]. Needs root (namespaces, TAP).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-tap
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-tap "${1:-3}"
