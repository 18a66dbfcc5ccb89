#!/usr/bin/env bash
# Soak: 8 guests with broadcast, unicast TCP and NAT traffic for a bounded time (default 10
# minutes); prints vfabric's RSS and open descriptors every 30 s. Usage: benches/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -q -p vswitch --bin vfabric
cargo build --release -q -p vfabric-tests --bin bench-soak
VFABRIC_BIN="$PWD/target/release/vfabric" target/release/bench-soak "${1:-10}"
