#!/usr/bin/env bash
# Runs the cargo-fuzz targets under libFuzzer with AddressSanitizer, each until 10^7
# executions or SECONDS seconds (default 1800), whichever comes first, keeping the corpus in
# fuzz/corpus/NAME and any crash in fuzz/artifacts/NAME. A summary line per target goes to
# fuzz/runs.log. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on
# stable, RUSTC_BOOTSTRAP=1 (set here) lets rustc take cargo-fuzz's -Z flags.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (no targets: all of them)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-1800}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp)
    start=$(date +%s)
    status=clean
    # -runs bounds the count, -max_total_time the time; the run stops by itself.
    extra=() asan=${ASAN_OPTIONS:-}
    # The vhost_user port frees a connection's state on its own threads after the input
    # returns (and they still run at exit): LeakSanitizer would report that memory.
    if [ "$t" = vhost_user ]; then extra=(-detect_leaks=0); asan="${asan:+$asan:}detect_leaks=0"; fi
    if ! ASAN_OPTIONS=$asan cargo fuzz run -O "$t" "corpus/$t" -- \
        -runs=10000000 -max_total_time="$secs" "${extra[@]}" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        status="FAILED (see artifacts/$t and target/last-run-$t.txt)"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
    took=$(($(date +%s) - start))
    line="$(date -u +%FT%TZ) $t: ${runs:-?} executions in ${took}s, coverage ${cov:-?} edges, corpus $(ls "corpus/$t" | wc -l) inputs: $status"
    echo "$line" | tee -a runs.log
    tail -n 30 "$log" > "target/last-run-$t.txt"
    rm -f "$log"
done
