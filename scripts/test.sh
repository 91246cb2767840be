#!/usr/bin/env bash
# The one command that runs all of berth's tests on a Debian 12 machine, as root:
# installs what the tests need, builds, then runs every unit and integration test.
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test tooling`.
# Ends with one line adding up every test binary's result, which it also writes to
# target/test-summary.txt (CI prints it again as its last line).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

export BERTH_TEST_TOOLS="${BERTH_TEST_TOOLS:-/usr/local/lib/berth-test/bin}"
# Integration tests print the server's log when they fail; a backtrace says where.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step() {
    local name="$1" started=$SECONDS
    shift
    echo "==> $name"
    "$@"
    echo "==> $name: done in $((SECONDS - started))s"
}

# Adds up cargo's "test result: ok. 3 passed; 0 failed; 1 ignored; ..." lines.
summarize() {
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) passed += $(i - 1)
                if ($(i) ~ /^failed;?$/) failed += $(i - 1)
                if ($(i) ~ /^ignored;?$/) ignored += $(i - 1)
            }
        }
        END { printf "total: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$1"
}

run_tests() {
    local log="$target_dir/test-output.log" status=0
    mkdir -p "$target_dir"
    cargo test --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
    summarize "$log" | tee "$target_dir/test-summary.txt"
    return "$status"
}

step "install test dependencies" scripts/install-test-deps.sh
step "cargo build" cargo build --bins --tests
step "cargo test" run_tests "$@"
