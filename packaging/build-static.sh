#!/usr/bin/env bash
# Builds fully static release binaries of berth into target/dist/ and writes target/dist/SHA256SUMS.
#
# Usage: packaging/build-static.sh [ARCH...]     (default: x86_64; also: aarch64)
#
# Static linking uses the gnu targets with crt-static, and Debian's libseccomp.a: without libseccomp
# a seccomp profile in a container spec would be silently ignored, so it must be linked in.
# `--target` is always passed so that RUSTFLAGS reach only the binary, not build scripts (a
# crt-static build script cannot load proc-macro .so files).
# The binary is linked at a fixed address (`-C relocation-model=static`, not a static-pie): a
# position-independent binary carries a relocation table for its pointer-holding read-only data
# (vtables, string tables; some 3 MiB in the file) and applies it privately in every process at
# start (~1.9 MiB of dirty pages in the server and in each pod's shim). Fixed, the table is gone
# and those pages stay clean, shared file pages. Stack, heap and mmap addresses are still
# randomised; only the binary's own base is not (as for Go binaries such as k3s).
# From scratch it costs about 9 CPU-minutes (LTO, one codegen unit): some 6-8 minutes on an idle
# 2-core machine, much longer on a busy one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
dist="$target_dir/dist"

# aarch64 is cross-compiled: it needs `rustup target add aarch64-unknown-linux-gnu` and Debian's
# gcc-aarch64-linux-gnu + libc6-dev-arm64-cross. Its libseccomp.a comes from Debian's arm64
# libseccomp-dev, downloaded by apt into a private directory (see fetch_arm64_seccomp): the host's
# dpkg architectures are left alone.

# rust_target_for ARCH / multiarch_for ARCH: one line per architecture.
rust_target_for() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-gnu ;;
        aarch64) echo aarch64-unknown-linux-gnu ;;
        *) echo "build-static: unsupported architecture '$1' (supported: x86_64 aarch64)" >&2; return 1 ;;
    esac
}

multiarch_for() {
    case "$1" in
        x86_64) echo x86_64-linux-gnu ;;
        aarch64) echo aarch64-linux-gnu ;;
        *) return 1 ;;
    esac
}

host_arch() { uname -m; }

# Downloads libseccomp-dev for arm64 with apt into $target_dir/cross/arm64 and unpacks it there.
# apt runs with its own lists, cache and an empty dpkg status, so nothing on the host changes.
# Prints the directory holding libseccomp.a.
fetch_arm64_seccomp() {
    local base="$target_dir/cross/arm64" lib
    lib="$base/root/usr/lib/aarch64-linux-gnu"
    if [[ -f "$lib/libseccomp.a" ]]; then
        echo "$lib"
        return 0
    fi
    mkdir -p "$base/lists/partial" "$base/cache/archives/partial" "$base/debs" "$base/root"
    : > "$base/status"
    local apt_opts=(
        -o "APT::Architecture=arm64"
        -o "APT::Architectures::=arm64"
        -o "Dir::State::Lists=$base/lists"
        -o "Dir::State::status=$base/status"
        -o "Dir::Cache=$base/cache"
    )
    apt-get "${apt_opts[@]}" update >&2
    (cd "$base/debs" && apt-get "${apt_opts[@]}" download libseccomp-dev:arm64 >&2)
    local deb
    for deb in "$base"/debs/*.deb; do
        dpkg-deb -x "$deb" "$base/root"
    done
    if [[ ! -f "$lib/libseccomp.a" ]]; then
        echo "build-static: libseccomp.a missing from the downloaded arm64 libseccomp-dev" >&2
        return 1
    fi
    echo "$lib"
}

# Prints the directory holding libseccomp.a for ARCH, fetching it first when cross-compiling.
seccomp_dir_for() {
    local arch="$1"
    if [[ "$arch" == "$(host_arch)" ]]; then
        echo "/usr/lib/$(multiarch_for "$arch")"
    elif [[ "$arch" == aarch64 ]]; then
        fetch_arm64_seccomp
    else
        echo "build-static: cannot cross-compile to $arch from $(host_arch)" >&2
        return 1
    fi
}

# Exports the cross linker and C compiler for ARCH when it is not the host's.
set_cross_toolchain() {
    local arch="$1"
    [[ "$arch" == "$(host_arch)" ]] && return 0
    case "$arch" in
        aarch64)
            if ! command -v aarch64-linux-gnu-gcc > /dev/null; then
                echo "build-static: aarch64-linux-gnu-gcc not found" \
                    "(apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2
                return 1
            fi
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
            export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
            export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
            ;;
    esac
}

strip_tool_for() {
    case "$1" in
        "$(host_arch)") echo strip ;;
        aarch64) echo aarch64-linux-gnu-strip ;;
    esac
}

build_one() {
    local arch="$1" rust_target seccomp_dir out started elapsed
    rust_target="$(rust_target_for "$arch")"
    seccomp_dir="$(seccomp_dir_for "$arch")"
    set_cross_toolchain "$arch"
    if [[ ! -f "$seccomp_dir/libseccomp.a" ]]; then
        echo "build-static: $seccomp_dir/libseccomp.a not found (apt-get install libseccomp-dev)" >&2
        return 1
    fi

    echo "build-static: building $rust_target (release, static)"
    started=$SECONDS
    (
        cd "$root"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
        LIBSECCOMP_LINK_TYPE=static \
        LIBSECCOMP_LIB_PATH="$seccomp_dir" \
        CARGO_PROFILE_RELEASE_STRIP=false \
            cargo build --release --bin berth --target "$rust_target"
    )
    elapsed=$((SECONDS - started))
    echo "build-static: $rust_target built in ${elapsed}s"

    out="$dist/berth-$arch"
    mkdir -p "$dist"
    # The release build keeps its symbols (target/<triple>/release/berth) so that its size can be
    # broken down by crate (packaging/size-report.sh); the shipped copy is stripped.
    "$(strip_tool_for "$arch")" -o "$out" "$target_dir/$rust_target/release/berth"
    chmod 0755 "$out"
    echo "build-static: $out: $(stat -c %s "$out") bytes"

    local kind
    kind="$(file -b "$out")"
    echo "build-static: $out: $kind"
    if [[ "$kind" != *"statically linked"* ]]; then
        echo "build-static: $out is not statically linked at a fixed address" >&2
        return 1
    fi
}

main() {
    local archs=("$@")
    if [[ ${#archs[@]} -eq 0 ]]; then
        archs=(x86_64)
    fi
    for arch in "${archs[@]}"; do
        build_one "$arch"
    done
    # Checksums cover every binary in dist/, so builds of other architectures keep theirs.
    (cd "$dist" && sha256sum berth-* > SHA256SUMS)
    echo "build-static: wrote $dist/SHA256SUMS"
    cat "$dist/SHA256SUMS"
}

main "$@"
