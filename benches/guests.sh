#!/usr/bin/env bash
# Guest benchmark: ping RTT and iperf3 TCP between two guests through vfabric vs dpdk-testpmd io
# forwarding (DPDK's vhost PMD), alternating rounds in one run. Usage: benches/guests.sh [ROUNDS]
# Needs root for hugepages (testpmd). Traffic stays between the two guests.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
bench_prepare 512
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-guests
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-guests "${1:-3}"
