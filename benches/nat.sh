#!/usr/bin/env bash
# NAT benchmark: iperf3 TCP between a guest and a server on the host's loopback (through the
# gateway 10.0.2.2), through vfabric's NAT port vs QEMU user networking (slirp) vs passt
# (socket mode), alternating rounds in one run. Usage: benches/nat.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-nat
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-nat "${1:-3}"
