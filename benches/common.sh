# Sourced by the benchmark scripts: installs the benchmark packages, reserves hugepages for
# DPDK (at least $1 pages of 2 MiB) and, at exit, removes the hugepage files DPDK leaves when
# killed and gives the pages back.
bench_prepare() {
  scripts/install-deps.sh --bench
  pages=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
  prev_pages=$(cat "$pages")
  trap 'rm -f /dev/hugepages/vfb*map_*; rm -rf /var/run/dpdk/vfb*; echo "$prev_pages" > "$pages"' EXIT
  [ "$prev_pages" -ge "$1" ] || echo "$1" > "$pages"
  mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages; }
}
