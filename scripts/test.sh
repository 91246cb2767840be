#!/usr/bin/env bash
# The one command that runs all of berth's tests on a Debian 12 machine, as root:
# installs what the tests need, builds, then runs every unit and integration test.
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test tooling`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

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

step "install test dependencies" scripts/install-test-deps.sh
step "cargo build" cargo build --bins --tests
step "cargo test" cargo test --no-fail-fast "$@"
