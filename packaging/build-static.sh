#!/usr/bin/env bash
# Builds fully static release binaries of berth into target/dist/ and writes target/dist/SHA256SUMS.
#
# Usage: packaging/build-static.sh [ARCH...]     (default: x86_64)
#
# Static linking uses the gnu targets with crt-static, and Debian's libseccomp.a: without libseccomp
# a seccomp profile in a container spec would be silently ignored, so it must be linked in.
# `--target` is always passed so that RUSTFLAGS reach only the binary, not build scripts (a
# crt-static build script cannot load proc-macro .so files).
# From scratch it costs about 9 CPU-minutes (LTO, one codegen unit): some 6-8 minutes on an idle
# 2-core machine, much longer on a busy one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
dist="$target_dir/dist"

# rust_target_for ARCH / multiarch_for ARCH: one line per supported architecture. aarch64 will
# slot in here (aarch64-unknown-linux-gnu / aarch64-linux-gnu, with a cross linker and
# libseccomp-dev:arm64).
rust_target_for() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-gnu ;;
        *) echo "build-static: unsupported architecture '$1' (supported: x86_64)" >&2; return 1 ;;
    esac
}

multiarch_for() {
    case "$1" in
        x86_64) echo x86_64-linux-gnu ;;
        *) return 1 ;;
    esac
}

build_one() {
    local arch="$1" rust_target multiarch seccomp_dir out started elapsed
    rust_target="$(rust_target_for "$arch")"
    multiarch="$(multiarch_for "$arch")"
    seccomp_dir="/usr/lib/$multiarch"
    if [[ ! -f "$seccomp_dir/libseccomp.a" ]]; then
        echo "build-static: $seccomp_dir/libseccomp.a not found (apt-get install libseccomp-dev)" >&2
        return 1
    fi

    echo "build-static: building $rust_target (release, static)"
    started=$SECONDS
    (
        cd "$root"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        LIBSECCOMP_LINK_TYPE=static \
        LIBSECCOMP_LIB_PATH="$seccomp_dir" \
            cargo build --release --bin berth --target "$rust_target"
    )
    elapsed=$((SECONDS - started))
    echo "build-static: $rust_target built in ${elapsed}s"

    out="$dist/berth-$arch"
    mkdir -p "$dist"
    install -m 0755 "$target_dir/$rust_target/release/berth" "$out"

    local kind
    kind="$(file -b "$out")"
    echo "build-static: $out: $kind"
    if [[ "$kind" != *"statically linked"* && "$kind" != *"static-pie linked"* ]]; then
        echo "build-static: $out is not statically linked" >&2
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
