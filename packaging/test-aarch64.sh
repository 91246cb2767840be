#!/usr/bin/env bash
# Builds berth's unit tests (the library's) for aarch64 and runs them under qemu-user.
#
# Usage: packaging/test-aarch64.sh [TEST-BINARY-ARGS...]     (e.g. a filter: `store::`)
#
# Needs what build-static.sh needs for aarch64 (cross.sh) and Debian's qemu-user-static. qemu is
# called directly, so no binfmt_misc registration is needed. RUST_TEST_THREADS bounds the tests
# run at once (default 2: each is a whole emulated process's worth of CPU). The build goes to
# CARGO_TARGET_DIR (default target/) under aarch64-unknown-linux-gnu/, beside the host's build,
# whose build scripts and proc macros it reuses. Without debuginfo and at opt-level 0 it is the
# cheapest build, and the build, not the run under emulation, is most of the time this takes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
log_file="$target_dir/test-aarch64.log"
# A hung test must not hold CI until its own limit: the whole run takes about three minutes on
# two cores, so a run that has not ended after fifteen is stuck, and fails.
run_timeout="${BERTH_AARCH64_TEST_TIMEOUT:-900}"
source "$root/packaging/cross.sh"

# Tests that cannot run under qemu-user, which emulates the CPU but passes system calls to the
# host's kernel (found by running the whole binary here):
skipped=(
    # Re-executes its own binary as a child to kill it: the host kernel cannot start an aarch64
    # executable without a binfmt_misc handler for qemu.
    store::tests::acknowledged_writes_survive_the_process_being_killed
)

say() { echo "test-aarch64: $*"; }
fail() { echo "test-aarch64: error: $*" >&2; exit 1; }

qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[[ -n "$qemu" ]] || fail "qemu-aarch64-static not found (apt-get install qemu-user-static)"

build() {
    set_cross_env aarch64 "$target_dir" || return 1
    cd "$root"
    # JSON on stdout names the test executable; diagnostics and progress stay readable on stderr.
    CARGO_PROFILE_TEST_DEBUG=0 RUSTFLAGS="-C target-feature=+crt-static" \
        cargo test --lib --no-run --target aarch64-unknown-linux-gnu \
        --message-format=json-render-diagnostics \
        | sed -n '/"test":true/s/.*"executable":"\([^"]*\)".*/\1/p'
}

started=$SECONDS
binary="$(build)" || fail "the aarch64 build of the unit tests failed"
[[ -n "$binary" && -f "$binary" ]] || fail "cargo named no test executable"
say "built $binary in $((SECONDS - started))s"

skip_args=()
for name in "${skipped[@]}"; do
    skip_args+=(--skip "$name")
done

# The run is a background job so that the trap can end it (timeout passes the signal on to
# qemu's whole process group) when this script is interrupted: nothing is left running.
started=$SECONDS
status=0
: > "$log_file"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" \
    timeout --kill-after=30 "$run_timeout" "$qemu" "$binary" "${skip_args[@]}" "$@" \
    > "$log_file" 2>&1 &
run_pid=$!
# tail too is a background job: bash runs a trap only once its foreground child has ended.
tail -n +1 -f --pid="$run_pid" "$log_file" &
tail_pid=$!
trap 'kill "$run_pid" "$tail_pid" 2> /dev/null || true' EXIT
trap 'exit 130' INT TERM
wait "$run_pid" || status=$?
wait "$tail_pid" || true
say "ran in $((SECONDS - started))s (log: $log_file)"
if [[ $status -eq 0 ]]; then
    say "ok"
    exit 0
fi
failed="$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log_file" | tr '\n' ' ')"
if [[ $status -eq 124 || $status -eq 137 ]]; then
    # The harness reports a test when it ends and starts them in name order, so the stuck ones
    # head the list of those never reported: as many as RUST_TEST_THREADS.
    unfinished="$("$qemu" "$binary" --list --format terse "${skip_args[@]}" "$@" 2> /dev/null \
        | sed -n 's/: test$//p' | sort \
        | comm -23 - <(sed -n 's/^test \(.*\) \.\.\. .*$/\1/p' "$log_file" | sort) \
        | head -n 10 | tr '\n' ' ')" || true
    say "not reported when stopped (the first ten by name): ${unfinished:-none}"
    fail "the tests did not end within ${run_timeout}s${failed:+ (failed before that: ${failed% })}"
elif [[ -n "$failed" ]]; then
    fail "failed under qemu-user: ${failed% }"
else
    fail "the test binary exited with status $status before reporting a failed test"
fi
