#!/usr/bin/env bash
# What crossing hosts costs: ping RTT and iperf3 TCP between two guests on one vfabric switch,
# next to the same guests on a switch spanning two vfabric "hosts" (network namespaces joined
# by a veth pair, one topology with [[host]] tables, the VXLAN mesh between them).
# Usage: benches/tunnel.sh [ROUNDS]. Needs root (namespaces). Traffic stays between the
# guests and in the namespaces the benchmark creates. The per-frame cost of the tunnel
# itself (no guests): cargo bench -p vswitch --bench flood.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-tunnel
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-tunnel "${1:-3}"
