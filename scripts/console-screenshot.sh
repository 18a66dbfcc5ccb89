#!/usr/bin/env bash
# Regenerates docs/console.png, the README's picture of the web console: runs the browser test
# (two guests, iperf3 between them, headless Chromium on `vfabric run --http`) and keeps its
# overview screenshot. Needs what scripts/test.sh installs (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p vfabric-tests --test vm_console -- --nocapture
cp target/test-artifacts/console-overview.png docs/console.png
echo "docs/console.png updated (port page and trace: target/test-artifacts/console-*.png)"
