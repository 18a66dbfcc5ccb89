#!/usr/bin/env bash
# Installs every Debian package vfabric's demo, tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent; needs root (or sudo). Usage: scripts/install-deps.sh [--bench]
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# QEMU 10.0 comes from bookworm-backports (7.2 from bookworm is also kept, unpacked, for the
# compatibility tests: see tests/vm/README.md). Add the suite without naming a mirror: copy the
# existing deb822 source with the suite changed.
src=/etc/apt/sources.list.d/debian.sources
bpo=/etc/apt/sources.list.d/vfabric-bookworm-backports.sources
if [ -f "$src" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  awk 'BEGIN{RS="";ORS="\n\n"} /Suites:[^\n]*bookworm( |$|\n)/ && !/security/ {
         sub(/Suites:[^\n]*/, "Suites: bookworm-backports"); print; exit }' "$src" | $SUDO tee "$bpo" >/dev/null
fi
$SUDO apt-get update -q
# systemd: systemd-analyze verifies contrib/systemd (nothing is started through it).
# containernetworking-plugins: the IPAM plugins (host-local...) vfabric-cni delegates to.
# chromium: the web console's test opens it in a real (headless) browser.
# openvswitch-switch: the VXLAN and GENEVE interoperability test runs a private OVS (userspace
# datapath, no kernel module) in a namespace of its own.
pkgs=(linux-image-amd64 busybox-static iperf3 cpio gzip xz-utils zstd binutils python3 iproute2 procps iputils-ping ethtool systemd containernetworking-plugins chromium openvswitch-switch)
if [ "${1:-}" = "--bench" ]; then pkgs+=(dpdk-dev openvswitch-switch-dpdk passt); fi
$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"
# QEMU 10.0 and its dependencies (seabios, qemu-system-data...) from backports.
# libvirt 11 (matching QEMU 10) for the tests that boot guests through libvirt (a private
# libvirtd each, started by the test).
$SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils \
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
