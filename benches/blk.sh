#!/usr/bin/env bash
# Disk benchmark: libblkio (virtio-blk-vhost-user driver, no VM) against vfabric and against
# qemu-storage-daemon serving the same image, alternating rounds; image on tmpfs, and a null
# backend for the transport cost. Server on CPU 0, client on CPU 1, one queue.
# Usage: benches/blk.sh [ROUNDS] [SECONDS-PER-WORKLOAD]   (default: 3 rounds of 3 s)
# Prints IOPS and mean latency per workload and the vfabric/QSD ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-blk
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-blk "$@"
