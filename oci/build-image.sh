#!/usr/bin/env bash
# Builds the fortilab OCI image from an already built `fortilab` binary, with no registry:
# `FROM scratch` plus the binary, one symlink per device name (the binary dispatches on argv[0]:
# /sim-fortigate runs the FortiGate, ...), the shared libraries it links (from ldd) and an empty
# /tmp. The context directory is made here and handed to `docker build`.
#
#   oci/build-image.sh BINARY [TAG] [CONTEXT_DIR]
#
# BINARY: target/release/fortilab (`cargo xtask image --release`) or target/debug/fortilab (what
# the tests build); TAG defaults to fortilab:dev; CONTEXT_DIR to a temporary directory (removed).
# Users with a registry can use the multi-stage Containerfile at the repository root instead.
set -euo pipefail

bin=${1:?usage: build-image.sh BINARY [TAG] [CONTEXT_DIR]}
tag=${2:-fortilab:dev}
ctx=${3:-}
[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable" >&2; exit 2; }
command -v docker >/dev/null || { echo "build-image.sh: no docker client" >&2; exit 2; }

cleanup=
if [ -z "$ctx" ]; then
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/fortilab-oci.XXXXXX")
    cleanup=$ctx
fi
trap '[ -n "$cleanup" ] && rm -rf "$cleanup"' EXIT
rm -rf "$ctx/rootfs"
mkdir -p "$ctx/rootfs/tmp" "$ctx/rootfs/lab" "$ctx/rootfs/etc"
chmod 1777 "$ctx/rootfs/tmp"

# A hard link when the context is on the same file system (no copy of a large debug binary).
ln "$bin" "$ctx/rootfs/fortilab" 2>/dev/null || cp "$bin" "$ctx/rootfs/fortilab"
for dev in sim-fortigate sim-faz sim-ems sim-endpoint sim-internet; do
    ln -s fortilab "$ctx/rootfs/$dev"
done

# The shared libraries the binary links, at the paths the loader looks for them (the loader
# itself included). `ldd` prints "name => /path (addr)" or "/path (addr)".
ldd "$bin" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | sort -u | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done

# Minimal identity files: the lab runs as root in its containers by default, or as the numeric
# user Compose gives it.
printf 'root:x:0:0:root:/:/fortilab\nnobody:x:65534:65534:nobody:/:/fortilab\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/rootfs/etc/group"

cat > "$ctx/Containerfile" <<'CF'
FROM scratch
COPY rootfs/ /
ENV PATH=/
WORKDIR /lab
ENTRYPOINT ["/fortilab"]
CF

docker build --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$tag"
