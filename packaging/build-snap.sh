#!/usr/bin/env bash
# Assembles berth's snap without snapcraft: the prime directory (bin/berth, the example config,
# hooks) and meta/snap.yaml, derived from packaging/snap/snapcraft.yaml; then packs it with
# `snap pack` (which validates snap.yaml) when snapd is installed, else with mksquashfs using the
# flags snap pack uses.
#
# Usage: packaging/build-snap.sh ARCH BINARY [OUTDIR]
#   ARCH    amd64 or arm64 (x86_64 and aarch64 are accepted too)
#   BINARY  the static berth binary (e.g. target/dist/berth-aarch64)
#   OUTDIR  where the prime dir and the .snap go (default: target/dist)
#
# Prints the path of the .snap.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '7,11p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
arch="$1" binary="$2" outdir="${3:-${CARGO_TARGET_DIR:-$root/target}/dist}"
case "$arch" in
    amd64|x86_64) arch=amd64 ;;
    arm64|aarch64) arch=arm64 ;;
    *) echo "build-snap: unsupported architecture '$arch' (amd64, arm64)" >&2; exit 2 ;;
esac
[[ -f "$binary" ]] || { echo "build-snap: no binary at $binary" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
prime="$outdir/snap-prime-$arch"
snap="$outdir/berth_${version}_${arch}.snap"
rm -rf "$prime"
mkdir -p "$prime/meta/hooks"

install -D -m 0755 "$binary" "$prime/bin/berth"
install -D -m 0644 "$root/configs/berth.toml" "$prime/etc/berth/config.toml"
install -m 0755 "$root/packaging/snap/hooks/install" "$root/packaging/snap/hooks/remove" \
    "$prime/meta/hooks/"

# meta/snap.yaml is what snapcraft would write from snapcraft.yaml: the same metadata and apps,
# with `platforms` resolved to this one architecture and the build-only keys (parts) dropped.
# Keys are copied from snapcraft.yaml so the two cannot drift apart.
snapcraft="$root/packaging/snap/snapcraft.yaml"
top_key() { sed -n "s/^$1: *//p" "$snapcraft" | head -n1; }
{
    echo "name: $(top_key name)"
    echo "version: '$version'"
    echo "summary: $(top_key summary)"
    # The block scalar, as written.
    sed -n '/^description: |/,/^[a-z]/p' "$snapcraft" | sed '$d'
    echo "architectures:"
    echo "  - $arch"
    echo "base: $(top_key base)"
    echo "grade: $(top_key grade)"
    echo "confinement: $(top_key confinement)"
    # The apps section, without comments.
    sed -n '/^apps:/,/^[a-z]/p' "$snapcraft" | sed '$d' | grep -v '^ *#'
} > "$prime/meta/snap.yaml"

mkdir -p "$outdir"
rm -f "$snap"
if command -v snap > /dev/null; then
    snap pack --filename="$(basename "$snap")" "$prime" "$outdir" >&2
elif command -v mksquashfs > /dev/null; then
    # BERTH_SNAP_COMPRESSION=gzip builds faster, for tests.
    mksquashfs "$prime" "$snap" -noappend -comp "${BERTH_SNAP_COMPRESSION:-xz}" -all-root \
        -no-xattrs -no-fragments -quiet >&2
else
    echo "build-snap: neither snap (snapd) nor mksquashfs (squashfs-tools) is installed;" \
        "the prime directory is $prime" >&2
    exit 1
fi
echo "$snap"
