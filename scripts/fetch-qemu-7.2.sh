#!/usr/bin/env bash
# Fetches Debian 12's own QEMU 7.2 (qemu-system-x86, qemu-system-common for its loadable modules, among
# them the TCG accelerator, qemu-system-data, and bookworm's seabios, the BIOS 7.2 shipped with) and
# unpacks them into <workspace>/.cache/qemu-7.2/ so 7.2 runs next to the installed QEMU 10.0 from
# bookworm-backports.
# Nothing is installed system-wide except missing shared libraries the 7.2 binary links against.
# Idempotent: a second run only re-checks the binary. Usage: scripts/fetch-qemu-7.2.sh [--force]
#
# Result:
#   .cache/qemu-7.2/usr/bin/qemu-system-x86_64   the binary
#   .cache/qemu-7.2/usr/share/qemu               its data dir (pass with -L; the harness does this)
#   .cache/qemu-7.2/usr/share/seabios            bios-256k.bin (7.2 finds it relative to its binary)
#   .cache/qemu-7.2/usr/lib/x86_64-linux-gnu/qemu  modules: run with QEMU_MODULE_DIR set to it, or 7.2
#                                                would try the system's 10.0 modules and find no TCG
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/qemu-7.2"
bin="$dest/usr/bin/qemu-system-x86_64"
moddir="$dest/usr/lib/x86_64-linux-gnu/qemu"
stamp="$dest/.complete"

check() {
  local out
  if ! out="$("$bin" --version 2>&1)"; then
    echo "fetch-qemu-7.2: $bin does not run:" >&2
    echo "$out" >&2
    return 1
  fi
  case "$out" in
    *"version 7.2"*) ;;
    *) echo "fetch-qemu-7.2: unexpected version: $out" >&2; return 1 ;;
  esac
  # Start a machine-less QEMU with TCG (loads the accel-tcg module) and quit it from the monitor.
  if ! out="$(echo quit | QEMU_MODULE_DIR="$moddir" timeout 60 "$bin" -machine none -accel tcg \
      -nodefaults -no-user-config -display none -monitor stdio 2>&1)"; then
    echo "fetch-qemu-7.2: $bin cannot start a TCG machine:" >&2
    echo "$out" >&2
    return 1
  fi
  echo "fetch-qemu-7.2: OK: $("$bin" --version | head -n1) at $bin"
}

if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ -x "$bin" ]; then
  check && exit 0
fi

# Highest 7.2 version of a package that apt knows (bookworm or bookworm-security).
version_72() {
  apt-cache madison "$1" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -E '^(1:)?7\.2[+.~-]' |
    sort -V -r | head -n1 || true
}

# The bookworm (not backports) version of a package: the one QEMU 7.2 was released with.
version_bookworm() {
  apt-cache madison "$1" | grep -v -- '-backports' | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
    sort -V -r | head -n1 || true
}

lookup_versions() {
  x86_ver="$(version_72 qemu-system-x86)"
  common_ver="$(version_72 qemu-system-common)"
  data_ver="$(version_72 qemu-system-data)"
  bios_ver="$(version_bookworm seabios)"
}
lookup_versions
if [ -z "$x86_ver" ] || [ -z "$common_ver" ] || [ -z "$data_ver" ] || [ -z "$bios_ver" ]; then
  echo "fetch-qemu-7.2: apt knows no 7.2 QEMU packages; running apt-get update" >&2
  $SUDO apt-get update -q
  lookup_versions
fi
if [ -z "$x86_ver" ] || [ -z "$common_ver" ] || [ -z "$data_ver" ] || [ -z "$bios_ver" ]; then
  echo "fetch-qemu-7.2: no 7.2 version of qemu-system-x86 in the apt sources (is this Debian 12?)" >&2
  exit 1
fi
pkgs=("qemu-system-x86=$x86_ver" "qemu-system-common=$common_ver" "qemu-system-data=$data_ver" "seabios=$bios_ver")
echo "fetch-qemu-7.2: ${pkgs[*]}"

dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
# apt-get download drops privileges to _apt; let it write into the temp dir.
chmod 0777 "$dl"
(cd "$dl" && apt-get download -q "${pkgs[@]}")

tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
for deb in "$dl"/*.deb; do
  dpkg-deb -x "$deb" "$tmp"
done
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp" "$dest"

# Shared libraries: install whatever the 7.2 binary misses (all are bookworm packages, and the
# 10.0 install normally already pulled them in).
# (Of the modules only the TCG accelerator matters; the others are loaded on demand only.)
missing_libs() { ldd "$bin" "$moddir/accel-tcg-x86_64.so" | awk '/not found/ {print $1}' | sort -u || true; }
missing="$(missing_libs)"
if [ -n "$missing" ]; then
  echo "fetch-qemu-7.2: missing libraries: $missing" >&2
  libpkgs="$(apt-cache show "qemu-system-x86=$x86_ver" | sed -n 's/^Depends: //p' | head -n1 |
    tr ',' '\n' | sed -E 's/\(.*\)//; s/\|.*//; s/ //g' | grep -E '^lib' | sort -u)"
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $libpkgs
fi
still="$(missing_libs)"
if [ -n "$still" ]; then
  echo "fetch-qemu-7.2: still missing after apt-get install: $still" >&2
  exit 1
fi

check
echo "${pkgs[*]}" >"$stamp"
