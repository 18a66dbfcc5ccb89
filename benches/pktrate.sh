#!/usr/bin/env bash
# Packet rate between two vhost-user ports (no VMs): vfabric vs OVS-DPDK vs dpdk-testpmd io
# forwarding, alternating rounds, DPDK's virtio-user PMD as generator on CPU 1, the switch on
# CPU 0; vfabric and OVS-DPDK a second time with the generator on packed rings.
# Usage: benches/pktrate.sh [ROUNDS] [SIZES...]   (default: 3 rounds, 64 and 1518 B)
#        benches/pktrate.sh --scale [ROUNDS]     (64 ports + 10^6 FDB entries vs 2 ports + 1; RSS)
#        benches/pktrate.sh --vlan [ROUNDS]      (untagged vs 802.1Q push/pop on every frame, 64 B)
#        benches/pktrate.sh --against OLD_VFABRIC [--notify] [--packed] [ROUNDS] [SIZES...]   (this build vs another)
# Needs root (hugepages, OVS in its own network namespace). No traffic leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
bench_prepare 1024
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-pktrate --bin bench-core-rtt
# The machine's phase before and after (see the README's Benchmarks section).
target/release/bench-core-rtt 3
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-pktrate "$@"
target/release/bench-core-rtt 3
