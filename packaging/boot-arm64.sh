#!/usr/bin/env bash
# Boots a whole arm64 system under qemu-system-aarch64 (software emulation) and runs one pod in it:
# Debian's arm64 kernel, an initramfs the script builds (busybox, the static berth, the kernel
# modules berth needs, an arm64 busybox image archive), `berth server` started by its init. The
# real kubectl on this machine then creates a pod through a forwarded port and reads its logs.
# qemu-user (packaging/smoke-aarch64.sh) cannot create containers; this can.
#
# Usage: packaging/boot-arm64.sh [BINARY]     (default: target/dist/berth-aarch64)
#
# Needs root (a private network namespace), Debian's qemu-system-arm, cpio, busybox, and the real
# kubectl (from scripts/install-test-deps.sh; BERTH_TEST_TOOLS names another directory). The
# kernel and busybox are downloaded for arm64 with apt into a private directory, as
# packaging/build-static.sh does for libseccomp (cross.sh); nothing on the host changes. The
# guest has no route out: its one NIC is qemu's user network with `restrict=on`, used only for
# the forwarded API port.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
binary="${1:-$target_dir/dist/berth-aarch64}"
base="$target_dir/cross/arm64"
work="$target_dir/cross/arm64-boot"
# Software emulation of a loaded 2-core machine is slow: minutes, not seconds.
boot_timeout="${BERTH_BOOT_TIMEOUT:-900}"
source "$root/packaging/cross.sh"

log() { echo "boot-arm64: $*"; }
die() { echo "boot-arm64: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it creates a network namespace)"
[[ -f "$binary" ]] || die "no binary at $binary (packaging/build-static.sh aarch64)"
[[ "$(file -b "$binary")" == *"ARM aarch64"* ]] || die "$binary is not an aarch64 binary"
command -v qemu-system-aarch64 > /dev/null || die "qemu-system-aarch64 not found (apt-get install qemu-system-arm)"
command -v cpio > /dev/null || die "cpio not found (apt-get install cpio)"
command -v busybox > /dev/null || die "busybox not found (apt-get install busybox-static)"
# The kubectl scripts/install-test-deps.sh installs, else one on PATH.
kubectl="${BERTH_TEST_TOOLS:-/usr/local/lib/berth-test/bin}/kubectl"
[[ -x "$kubectl" ]] || kubectl="$(command -v kubectl || true)"
[[ -x "$kubectl" ]] || die "kubectl not found (scripts/install-test-deps.sh, or set BERTH_TEST_TOOLS)"

# The arm64 kernel and busybox-static, downloaded with apt's own lists and cache (cross.sh).
fetch_arm64_debs() {
    mkdir -p "$work/debs"
    if ! ls "$work"/debs/linux-image-*.deb > /dev/null 2>&1; then
        arm64_apt "$base" apt-get update > /dev/null
        # linux-image-arm64 is a metapackage; its one dependency is the versioned kernel.
        local kernel
        kernel="$(arm64_apt "$base" apt-cache depends linux-image-arm64 \
            | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)"
        [[ -n "$kernel" ]] || die "cannot resolve linux-image-arm64 to a kernel package"
        (cd "$work/debs" && arm64_apt "$base" apt-get download "$kernel:arm64" busybox-static:arm64 \
            > /dev/null 2>&1) || die "apt-get download of $kernel and busybox-static (arm64) failed"
    fi
    rm -rf "$work/kernel" "$work/busybox"
    dpkg-deb -x "$(ls "$work"/debs/linux-image-*.deb | head -n1)" "$work/kernel"
    dpkg-deb -x "$(ls "$work"/debs/busybox-static_*.deb | head -n1)" "$work/busybox"
    # The package leaves modules.dep to depmod at install time; busybox's depmod reads any
    # architecture's modules.
    local kver
    kver="$(ls "$work/kernel/lib/modules" | head -n1)"
    busybox depmod -b "$work/kernel" "$kver"
}

# Writes an OCI layout archive of an arm64 image holding only busybox, named
# docker.io/library/busybox:arm64, to $1. Deterministic: fixed times, owners and order.
build_busybox_image() {
    local out="$1" tmp
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/rootfs/bin" "$tmp/layout/blobs/sha256"
    cp "$work/busybox/bin/busybox" "$tmp/rootfs/bin/busybox"
    ln -s busybox "$tmp/rootfs/bin/sh"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/rootfs" -cf "$tmp/layer.tar" .
    local diff_id layer layer_size
    diff_id="$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
    gzip -n -9 "$tmp/layer.tar"
    layer="$(sha256sum "$tmp/layer.tar.gz" | cut -d' ' -f1)"
    layer_size="$(stat -c %s "$tmp/layer.tar.gz")"
    mv "$tmp/layer.tar.gz" "$tmp/layout/blobs/sha256/$layer"

    printf '{"architecture":"arm64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$diff_id" > "$tmp/config.json"
    local config config_size
    config="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
    config_size="$(stat -c %s "$tmp/config.json")"
    mv "$tmp/config.json" "$tmp/layout/blobs/sha256/$config"

    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config" "$config_size" "$layer" "$layer_size" > "$tmp/manifest.json"
    local manifest manifest_size
    manifest="$(sha256sum "$tmp/manifest.json" | cut -d' ' -f1)"
    manifest_size="$(stat -c %s "$tmp/manifest.json")"
    mv "$tmp/manifest.json" "$tmp/layout/blobs/sha256/$manifest"

    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"docker.io/library/busybox:arm64"}}]}' \
        "$manifest" "$manifest_size" > "$tmp/layout/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$tmp/layout/oci-layout"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/layout" -cf "$out" .
    rm -rf "$tmp"
}

# Copies the modules berth needs (overlayfs, veth, bridge, nftables and conntrack/NAT, virtio
# networking) and everything they depend on into the initramfs tree $1.
copy_modules() {
    local tree="$1" kver="$2" moddir="$work/kernel/lib/modules/$2"
    local wanted=(
        kernel/fs/overlayfs/overlay.ko kernel/drivers/net/veth.ko kernel/net/bridge/bridge.ko
        kernel/net/bridge/br_netfilter.ko kernel/drivers/net/virtio_net.ko
        kernel/drivers/virtio/virtio_pci.ko kernel/net/netfilter/nf_tables.ko
        # libcrc32c (conntrack, NAT) names it only as a soft dependency, which depmod skips.
        kernel/crypto/crc32c_generic.ko
    )
    local m
    for m in "$moddir"/kernel/net/netfilter/nft_*.ko "$moddir"/kernel/net/netfilter/nf_*.ko \
        "$moddir"/kernel/net/ipv4/netfilter/*.ko "$moddir"/kernel/net/ipv6/netfilter/*.ko; do
        wanted+=("${m#"$moddir"/}")
    done
    # The closure over modules.dep ("path: dep dep ...").
    local -A seen=()
    local queue=("${wanted[@]}")
    while [[ ${#queue[@]} -gt 0 ]]; do
        m="${queue[0]}"
        queue=("${queue[@]:1}")
        [[ -n "${seen[$m]:-}" ]] && continue
        seen[$m]=1
        local deps
        deps="$(sed -n "s|^$m: *||p" "$moddir/modules.dep")"
        for d in $deps; do queue+=("$d"); done
    done
    for m in "${!seen[@]}"; do
        install -D -m 0644 "$moddir/$m" "$tree/lib/modules/$kver/$m"
    done
    cp "$moddir/modules.order" "$moddir/modules.builtin" "$tree/lib/modules/$kver/"
    log "${#seen[@]} kernel modules"
}

build_initramfs() {
    local kver="$1" tree="$work/initramfs"
    rm -rf "$tree"
    mkdir -p "$tree"/{bin,sbin,etc/berth,proc,sys,dev,tmp,run,var/lib/berth,var/log,images,root}
    cp "$work/busybox/bin/busybox" "$tree/bin/busybox"
    install -m 0755 "$binary" "$tree/bin/berth"
    copy_modules "$tree" "$kver"
    build_busybox_image "$tree/images/busybox.oci.tar"
    printf 'PRETTY_NAME="berth arm64 boot test (busybox)"\nID=busybox\n' > "$tree/etc/os-release"
    echo "127.0.0.1 localhost" > "$tree/etc/hosts"
    echo "nameserver 10.0.2.3" > "$tree/etc/resolv.conf"
    cat > "$tree/etc/berth/config.toml" <<'EOF'
[images]
import_dir = "/images"
EOF
    cat > "$tree/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin
# Containers pivot_root, which the kernel refuses while the root is the initramfs itself: move
# everything to a tmpfs first and continue there.
if [ ! -e /.on-tmpfs ]; then
    /bin/busybox mkdir -p /newroot
    /bin/busybox mount -t tmpfs -o size=900m tmpfs /newroot
    for entry in /*; do
        [ "$entry" = /newroot ] || /bin/busybox cp -a "$entry" /newroot/
    done
    /bin/busybox touch /newroot/.on-tmpfs
    exec /bin/busybox switch_root /newroot /init
fi
# Applets where the kernel looks for them too (it runs /sbin/modprobe for nftables expressions).
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname berth-arm64
depmod
for m in crc32c_generic overlay veth bridge br_netfilter virtio_pci virtio_net nf_tables nft_chain_nat \
    nft_ct nft_masq nft_nat nft_reject_inet nft_fib_inet nft_redir nf_conntrack nf_nat; do
    modprobe "$m" || echo "init: modprobe $m failed"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "init: $(uname -m) $(uname -r), starting berth"
berth server --data-dir /var/lib/berth > /var/log/berth.log 2>&1 &
berth_pid=$!
while [ ! -s /var/lib/berth/kubeconfig.yaml ] && kill -0 "$berth_pid" 2> /dev/null; do sleep 1; done
# The kubeconfig goes to the console before any log line, so nothing interleaves with it.
if berth status --wait-ready --timeout 1800 --data-dir /var/lib/berth > /dev/null 2>&1; then
    echo "BERTH-KUBECONFIG-BEGIN"
    base64 /var/lib/berth/kubeconfig.yaml
    echo "BERTH-KUBECONFIG-END"
else
    echo "init: berth did not become ready"
fi
# Then berth's log, from its first line, for whoever reads the console.
tail -n +1 -f /var/log/berth.log &
wait "$berth_pid"
echo "init: berth exited"
sleep 2
poweroff -f
EOF
    chmod 0755 "$tree/init"
    (cd "$tree" && find . | sort | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"
    log "initramfs $(du -h "$work/initramfs.gz" | cut -f1)"
}

ns="berth-arm64-$$"
qemu_pid=""
cleanup() {
    if [[ -n "$qemu_pid" ]]; then
        kill "$qemu_pid" 2> /dev/null || true
        wait "$qemu_pid" 2> /dev/null || true
    fi
    ip netns del "$ns" 2> /dev/null || true
    rm -rf "$work/initramfs"
}
trap cleanup EXIT

fetch_arm64_debs
kver="$(ls "$work/kernel/lib/modules" | head -n1)"
log "kernel $kver"
build_initramfs "$kver"

ip netns add "$ns"
ip -n "$ns" link set lo up
port=16443
console="$work/console.log"
rm -f "$console"
ip netns exec "$ns" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
    -nographic -no-reboot -monitor none -serial "file:$console" \
    -kernel "$work/kernel/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" \
    -append "console=ttyAMA0 panic=-1 quiet" \
    -netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:6443" \
    -device virtio-net-pci,netdev=net0,romfile= &
qemu_pid=$!
log "qemu pid $qemu_pid; console in $console"

started=$SECONDS
until grep -q BERTH-KUBECONFIG-END "$console" 2> /dev/null; do
    kill -0 "$qemu_pid" 2> /dev/null || { tail -n 40 "$console"; die "the guest stopped before berth was ready"; }
    (( SECONDS - started < boot_timeout )) || { tail -n 40 "$console"; die "berth not ready after ${boot_timeout}s"; }
    sleep 5
done
log "berth ready in the guest after $((SECONDS - started))s"

kubeconfig="$work/kubeconfig.yaml"
sed -n '/BERTH-KUBECONFIG-BEGIN/,/BERTH-KUBECONFIG-END/p' "$console" | sed '1d;$d' | tr -d '\r' \
    | base64 -d | sed -E "s|server: \"?https://[^\"]*\"?|server: https://127.0.0.1:$port|" > "$kubeconfig"
k() { ip netns exec "$ns" "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=120s "$@"; }

# On a failure below, what the guest and the API say.
explain() {
    k describe node berth-arm64 pod/hello-arm64 2>&1 | tail -n 40 || true
    tail -n 60 "$console" | cut -c1-400
}
trap 'explain; cleanup' ERR
k wait --for=condition=Ready node/berth-arm64 --timeout=600s
k get node berth-arm64 -o wide
k apply -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: hello-arm64
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: hello
      image: busybox:arm64
      imagePullPolicy: Never
      command: ["sh", "-c", "echo hello from $(uname -m); sleep 3600"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
EOF
k wait --for=condition=Ready pod/hello-arm64 --timeout=600s
logs="$(k logs hello-arm64)"
log "pod log: $logs"
[[ "$logs" == "hello from aarch64" ]] || { explain; die "unexpected pod log: $logs"; }
log "ok: a pod ran on arm64 berth in $((SECONDS - started))s"
