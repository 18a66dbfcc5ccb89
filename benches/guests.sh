#!/usr/bin/env bash
# Guest benchmark: ping RTT and iperf3 TCP between two guests through vfabric vs dpdk-testpmd io
# forwarding (DPDK's vhost PMD), alternating rounds in one run. Usage: benches/guests.sh [ROUNDS]
# Needs root for hugepages (testpmd). Traffic stays between the two guests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
# testpmd's own buffers come from hugepages: 1 GiB of 2 MiB pages.
pages=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
prev_pages=$(cat $pages)
# At exit: remove the hugepage files DPDK leaves when killed, give the pages back.
trap 'rm -f /dev/hugepages/vfb*map_*; rm -rf /var/run/dpdk/vfb*; echo "$prev_pages" > $pages' EXIT
[ "$prev_pages" -ge 512 ] || echo 512 > $pages
mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages; }
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-guests
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-guests "${1:-3}"
