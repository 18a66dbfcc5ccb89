#!/usr/bin/env bash
# What the web console costs vfabric: the CPU time of vfabric's control thread (which serves
# the console) over SECONDS with nobody watching, then over SECONDS with a headless Chromium
# showing the console (it polls once a second while visible), on a fabric of PORTS ports.
# Usage: benches/console-cost.sh [SECONDS] [PORTS]   (default: 60 s, 64 ports)
# No guests are needed: the page's cost is its polling, not the traffic. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
ports=${2:-64}
cargo build --release -q -p vswitch --bin vfabric
dir=$(mktemp -d /tmp/vf-console-cost.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
{
  echo '[[switch]]'
  echo 'name = "lab"'
  for i in $(seq 1 "$ports"); do
    printf '[[switch.port]]\nname = "vm%d"\ntype = "vhost-user-net"\nsocket = "vm%d.sock"\nvlan = %d\n' "$i" "$i" $(( (i % 4) + 1 ))
  done
} > "$dir/lab.toml"
target/release/vfabric run --http 127.0.0.1:0 "$dir/lab.toml" > "$dir/out.log" 2> "$dir/err.log" &
vf=$!
pids+=("$vf")
for _ in $(seq 1 100); do grep -q '^vfabric ready' "$dir/out.log" && break; sleep 0.1; done
url=$(sed -n 's/^console: //p' "$dir/out.log")
[ -n "$url" ] || { echo "vfabric did not start: $(cat "$dir/err.log")"; exit 1; }
# The control thread's user + system CPU ticks (/proc/PID/task/TID/stat fields 14 and 15).
ctl_ticks() {
  for t in /proc/"$vf"/task/*; do
    if [ "$(cat "$t/comm")" = control ]; then
      awk '{print $14 + $15}' "$t/stat"
      return
    fi
  done
  echo 0
}
hz=$(getconf CLK_TCK)
a=$(ctl_ticks); sleep "$secs"; b=$(ctl_ticks)
idle=$(( b - a ))
chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
  --disable-crash-reporter --disable-breakpad --disable-background-networking \
  --user-data-dir="$dir/profile" --remote-debugging-port=0 "$url" > /dev/null 2>&1 &
pids+=("$!")
sleep 5   # the page loaded and polling
a=$(ctl_ticks); sleep "$secs"; b=$(ctl_ticks)
watched=$(( b - a ))
pct() { awk -v t="$1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", 100 * t / hz / s }'; }
echo "console cost, $ports ports, ${secs} s each (control thread CPU, % of one core):"
echo "  nobody watching: $idle ticks = $(pct "$idle") %"
echo "  one browser on the console: $watched ticks = $(pct "$watched") %"
