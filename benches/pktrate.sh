#!/usr/bin/env bash
# Packet rate between two vhost-user ports (no VMs): vfabric vs OVS-DPDK vs dpdk-testpmd io
# forwarding, alternating rounds, DPDK's virtio-user PMD as generator on CPU 1, the switch on
# CPU 0. Usage: benches/pktrate.sh [ROUNDS] [SIZES...]   (default: 3 rounds, 64 and 1518 B)
#        benches/pktrate.sh --scale [ROUNDS]     (64 ports + 10^6 FDB entries vs 2 ports + 1; RSS)
# Needs root (hugepages, OVS in its own network namespace). No traffic leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
pages=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
prev_pages=$(cat $pages)
# At exit: remove the hugepage files DPDK leaves when killed, give the pages back.
trap 'rm -f /dev/hugepages/vfb*map_*; rm -rf /var/run/dpdk/vfb*; echo "$prev_pages" > $pages' EXIT
[ "$prev_pages" -ge 1024 ] || echo 1024 > $pages
mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages; }
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-pktrate
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-pktrate "$@"
