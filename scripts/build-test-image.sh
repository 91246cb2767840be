#!/bin/sh
# Builds a deterministic OCI image layout of Debian's busybox-static: /bin/busybox, a symlink per
# applet (but /bin/wget, a script mending `wget -T`: see its comment), /etc/passwd and /etc/group
# with root and nobody, and /www/index.html.
#
#   scripts/build-test-image.sh OUTDIR [ARCH]
#
# OUTDIR becomes an OCI layout whose one image is tagged `latest` (ref.name) and named
# docker.io/library/busybox:latest (io.containerd.image.name). Same busybox .deb in, same
# digests out: sorted tar, mtime 0, uid/gid 0, gzip -n, JSON written here.
# ARCH defaults to the host's dpkg architecture; other architectures are not supported yet
# (they need the foreign dpkg architecture, which this script does not add to the host).
set -eu

die() { echo "build-test-image: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 OUTDIR [ARCH]"
out=$1
host_arch=$(dpkg --print-architecture)
arch=${2:-$host_arch}
[ "$arch" = "$host_arch" ] || die "only the host architecture ($host_arch) is supported for now, not $arch"

here=$(cd "$(dirname "$0")/.." && pwd)
fixtures=$here/tests/fixtures/images/busybox-rootfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# busybox: the installed busybox-static if there is one, else the .deb from apt.
if [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" = "install ok installed" ]; then
    busybox=$(dpkg -L busybox-static | grep '/bin/busybox$' | head -n1)
else
    (cd "$work" && apt-get download "busybox-static:$arch" >/dev/null) || die "apt-get download busybox-static failed"
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/deb"
    busybox=$work/deb/bin/busybox
fi
[ -x "$busybox" ] || die "no busybox binary found"

root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/www" "$root/tmp" "$root/root" \
         "$root/proc" "$root/sys" "$root/dev"
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
rm "$root/bin/wget"
cp "$fixtures/bin/wget" "$root/bin/wget"
cp "$fixtures/etc/passwd" "$fixtures/etc/group" "$root/etc/"
cp "$fixtures/www/index.html" "$root/www/"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/bin/busybox" "$root/bin/wget"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$work/layer.tar" .
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

rm -rf "$out"
mkdir -p "$out/blobs/sha256"

diff_id=$(sha "$work/layer.tar")
layer=$(sha "$work/layer.tar.gz")
cp "$work/layer.tar.gz" "$out/blobs/sha256/$layer"

printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$diff_id" > "$work/config.json"
config=$(sha "$work/config.json")
cp "$work/config.json" "$out/blobs/sha256/$config"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar.gz")" > "$work/manifest.json"
manifest=$(sha "$work/manifest.json")
cp "$work/manifest.json" "$out/blobs/sha256/$manifest"

printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest","org.opencontainers.image.ref.name":"latest"}}]}' \
    "$manifest" "$(size "$work/manifest.json")" "$arch" > "$out/index.json"

echo "sha256:$manifest"
