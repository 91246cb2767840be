#!/usr/bin/env bash
# Runs the aarch64 static binary under qemu-user: `berth version` and `berth check`.
#
# Usage: packaging/smoke-aarch64.sh [BINARY]     (default: target/dist/berth-aarch64)
#
# Needs Debian's qemu-user-static. qemu is called directly, so no binfmt_misc registration is
# needed. qemu-user emulates the CPU, not the kernel: `berth check` sees this machine's kernel,
# and containers cannot be created (no namespace emulation), so this proves the binary starts
# and its code paths run on aarch64, not that pods do.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/dist/berth-aarch64}"
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[[ -n "$qemu" ]] || { echo "smoke-aarch64: qemu-aarch64-static not found (apt-get install qemu-user-static)" >&2; exit 1; }
[[ -f "$binary" ]] || { echo "smoke-aarch64: no binary at $binary (packaging/build-static.sh aarch64)" >&2; exit 1; }

kind="$(file -b "$binary")"
echo "smoke-aarch64: $binary: $kind"
[[ "$kind" == *"ARM aarch64"* ]] || { echo "smoke-aarch64: not an aarch64 binary" >&2; exit 1; }
[[ "$kind" == *"statically linked"* || "$kind" == *"static-pie linked"* ]] \
    || { echo "smoke-aarch64: not statically linked" >&2; exit 1; }

version="$("$qemu" "$binary" version)"
echo "smoke-aarch64: $version"
[[ "$version" == "berth version "* ]] || { echo "smoke-aarch64: unexpected version output" >&2; exit 1; }

# `berth check` exits non-zero when this machine cannot run berth; under qemu-user its verdict
# is about the host kernel, so the smoke test only requires that it runs to the end and reports.
set +e
"$qemu" "$binary" check
status=$?
set -e
echo "smoke-aarch64: berth check exited $status"
[[ $status -le 1 ]] || { echo "smoke-aarch64: berth check crashed" >&2; exit 1; }
echo "smoke-aarch64: ok"
