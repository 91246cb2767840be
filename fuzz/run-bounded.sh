#!/bin/sh
# Runs every fuzz target for SECONDS each and fails on the first crash, hang or runaway
# allocation, printing the input that did it. Usage: fuzz/run-bounded.sh SECONDS
#
# New inputs the fuzzer finds go to a scratch directory, not into the committed corpus; to keep
# one, minimise it into regressions/<target>/ (see README.md).
set -eu

seconds=${1:-}
case $seconds in
'' | *[!0-9]*)
	echo "usage: $0 SECONDS (seconds of fuzzing per target)" >&2
	exit 2
	;;
esac
cd "$(dirname "$0")"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
	cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build -s none

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
	mkdir -p "$scratch/$target/new" "$scratch/$target/artifacts"
	inputs="seeds/$target"
	for dir in corpus regressions; do
		if [ -d "$dir/$target" ]; then
			inputs="$inputs $dir/$target"
		fi
	done
	echo "== $target: $seconds s"
	# shellcheck disable=SC2086 # $inputs is a list of directories without spaces
	if ! cargo +nightly fuzz run -s none "$target" "$scratch/$target/new" $inputs -- \
		-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$scratch/$target/artifacts/" -print_final_stats=1; then
		for artifact in "$scratch/$target/artifacts/"*; do
			[ -f "$artifact" ] || continue
			echo "== $target failed on $(basename "$artifact") ($(wc -c <"$artifact") bytes), base64:"
			base64 "$artifact"
		done
		echo "== reproduce: base64 -d > input; cargo +nightly fuzz run -s none $target input" >&2
		exit 1
	fi
done
echo "== every target ran $seconds s without a failure"
