#!/usr/bin/env bash
# Benchmark: how long a Compose lab takes from `docker-compose up -d` to healthy (every device's
# health check passed and the report service wrote lab/ready.json after the fabric settled),
# with the image already built. Prints one line per run and the median.
#
#   oci/bench-compose.sh [RUNS] [IMAGE]      (root: installs and removes the unreachable routes)
#
# Build the image first: `cargo xtask image --release` (or oci/build-image.sh BINARY TAG).
set -euo pipefail
runs=${1:-5}
image=${2:-fortilab:dev}
root=$(cd "$(dirname "$0")/.." && pwd)
fortilab=${FORTILAB:-$root/target/release/fortilab}
[ -x "$fortilab" ] || fortilab=$root/target/debug/fortilab
compose=(docker-compose)
command -v docker-compose >/dev/null || compose=(docker compose)
dir=$(mktemp -d "${TMPDIR:-/tmp}/fortilab-bench-compose.XXXXXX")
project=fortilabbench$$
routes=(10.115.0.0/16 89.238.73.97/32 89.160.20.128/32 89.160.20.126/32 89.160.20.161/32
        89.160.20.61/32 23.200.96.79/32 89.207.200.14/32 89.207.200.30/32 89.207.200.52/32
        195.22.28.198/32)
cleanup() {
    "${compose[@]}" -p "$project" -f "$dir/compose.yaml" down -v -t 15 >/dev/null 2>&1 || true
    rm -rf "$dir"
    for r in "${routes[@]}"; do ip route del unreachable "$r" 2>/dev/null || true; done
}
trap cleanup EXIT
for r in "${routes[@]}"; do ip route replace unreachable "$r"; done
"$fortilab" compose --out "$dir" --image "$image" >/dev/null
times=()
for i in $(seq 1 "$runs"); do
    rm -rf "$dir/lab"; mkdir -p "$dir/lab"
    t0=$(date +%s%N)
    "${compose[@]}" -p "$project" -f "$dir/compose.yaml" up -d >/dev/null 2>&1
    until [ -f "$dir/lab/ready.json" ]; do
        sleep 0.05
        if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 60000 ]; then echo "run $i: not ready in 60 s" >&2; exit 1; fi
    done
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    times+=("$ms")
    echo "run $i: healthy (lab/ready.json) $ms ms after up"
    "${compose[@]}" -p "$project" -f "$dir/compose.yaml" down -v -t 15 >/dev/null 2>&1
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "median: ${sorted[$(( ${#sorted[@]} / 2 ))]} ms over $runs runs (load: $(cut -d' ' -f1-3 /proc/loadavg))"
