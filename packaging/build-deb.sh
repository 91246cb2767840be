#!/usr/bin/env bash
# Builds a .deb of berth with dpkg-deb, from a binary already built.
#
# Usage: packaging/build-deb.sh ARCH BINARY [OUTDIR]
#   ARCH    amd64 or arm64 (x86_64 and aarch64 are accepted too)
#   BINARY  the berth binary to package (e.g. target/dist/berth-aarch64)
#   OUTDIR  where the .deb goes (default: target/dist)
#
# The package installs /usr/bin/berth, the systemd unit (/lib/systemd/system/berth.service),
# /etc/berth/config.toml as a conffile, and the example configs under
# /usr/share/doc/berth/examples. Prints the path of the .deb.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '4,8p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
arch="$1" binary="$2" outdir="${3:-${CARGO_TARGET_DIR:-$root/target}/dist}"
case "$arch" in
    amd64|x86_64) arch=amd64 ;;
    arm64|aarch64) arch=arm64 ;;
    *) echo "build-deb: unsupported architecture '$arch' (amd64, arm64)" >&2; exit 2 ;;
esac
[[ -f "$binary" ]] || { echo "build-deb: no binary at $binary" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
[[ -n "$version" ]] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
pkg="$staging/berth"

install -D -m 0755 "$binary" "$pkg/usr/bin/berth"
# Debian puts packaged binaries in /usr/bin; install.sh's unit points at /usr/local/bin.
install -d "$pkg/lib/systemd/system"
sed 's|/usr/local/bin/berth|/usr/bin/berth|g' "$root/packaging/systemd/berth.service" \
    > "$pkg/lib/systemd/system/berth.service"
chmod 0644 "$pkg/lib/systemd/system/berth.service"
install -D -m 0644 "$root/configs/berth.toml" "$pkg/etc/berth/config.toml"
for example in "$root"/configs/*.toml; do
    install -D -m 0644 "$example" "$pkg/usr/share/doc/berth/examples/$(basename "$example")"
done

install -d "$pkg/DEBIAN"
size_kib="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size_kib/" \
    "$root/packaging/deb/control.in" > "$pkg/DEBIAN/control"
install -m 0644 "$root/packaging/deb/conffiles" "$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$root/packaging/deb/$script" "$pkg/DEBIAN/$script"
done

mkdir -p "$outdir"
deb="$outdir/berth_${version}_${arch}.deb"
# --root-owner-group: files owned by root whoever builds; xz keeps the download small
# (BERTH_DEB_COMPRESSION=gzip or none builds faster, for tests).
dpkg-deb --root-owner-group -Z"${BERTH_DEB_COMPRESSION:-xz}" --build "$pkg" "$deb" >&2
echo "$deb"
