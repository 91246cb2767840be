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

# Cross-compiling (aarch64): see cross.sh.
source "$root/packaging/cross.sh"

strip_tool_for() {
    case "$1" in
        "$(host_arch)") echo strip ;;
        aarch64) echo aarch64-linux-gnu-strip ;;
    esac
}

build_one() {
    local arch="$1" rust_target out started elapsed
    rust_target="$(rust_target_for "$arch")"
    set_cross_env "$arch" "$target_dir"

    echo "build-static: building $rust_target (release, static)"
    started=$SECONDS
    (
        cd "$root"
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
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
