#!/usr/bin/env bash
# Breaks an unstripped release binary's code size down by crate, from its symbol table: a
# stand-in for cargo-bloat. build-static.sh keeps target/<triple>/release/berth unstripped.
#
# Usage: packaging/size-report.sh BINARY [N]     (N: how many crates and functions to list,
#                                                  default 20)
#
# Symbols are grouped by the first path segment of their demangled name (`tokio::...` →
# tokio; `<hyper::...>` → hyper); std, core and alloc count as `std`. Names the grouping cannot
# place (C code such as libseccomp or ring's assembly, glibc) are counted as `[C/other]`. After
# LTO, generic code is attributed to the crate that defined it, not the one that used it.
# Then the N largest symbols, and the file's largest sections (what the symbols do not cover:
# unwind tables, string and constant pools).
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
    echo "usage: size-report.sh BINARY [N]" >&2
    exit 2
fi
binary="$1" top="${2:-20}"
nm_tool=nm
if file -b "$binary" | grep -q aarch64 && command -v aarch64-linux-gnu-nm > /dev/null; then
    nm_tool=aarch64-linux-gnu-nm
fi
echo "file size: $(stat -L -c %s "$binary") bytes"
if ! "$nm_tool" "$binary" > /dev/null 2>&1; then
    echo "size-report: $binary has no symbols (stripped): use an unstripped build" >&2
    exit 1
fi
symbols="$(mktemp)"
trap 'rm -f "$symbols"' EXIT
"$nm_tool" --size-sort --print-size --radix=d -C "$binary" > "$symbols"
echo
awk '
        $3 ~ /^[tTrRdDbB]$/ {
            size = $2 + 0
            name = $0
            sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
            sub(/^(<|&|\*const |\*mut |dyn )+/, "", name)
            crate = name
            if (match(name, /^[A-Za-z_][A-Za-z0-9_]*::/)) {
                crate = substr(name, 1, RLENGTH - 2)
            } else {
                crate = "[C/other]"
            }
            if (crate == "core" || crate == "alloc" || crate == "std") crate = "std"
            total += size
            by[crate] += size
        }
        END {
            printf "%-28s %10s %6s\n", "CRATE", "BYTES", "SHARE"
            for (c in by) printf "%-28s %10d %5.1f%%\n", c, by[c], 100 * by[c] / total | "sort -k2 -nr"
            close("sort -k2 -nr")
            printf "%-28s %10d\n", "total (symbols)", total
        }' "$symbols" \
    | { head -n "$((top + 1))"; tail -n 1; }

echo
echo "largest symbols:"
# (awk, not head, ends the pipe: it reads to the end, so sort never dies of SIGPIPE.)
awk '$3 ~ /^[tTrRdDbB]$/' "$symbols" | sort -k2 -nr \
    | awk -v top="$top" 'NR <= top {
        size = $2 + 0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, ""); printf "%10d  %.150s\n", size, $0
    }'

echo
echo "largest sections:"
size -A "$binary" | awk '$1 ~ /^\./ && $2 > 65536 { printf "%-24s %10d\n", $1, $2 }' | sort -k2 -nr
