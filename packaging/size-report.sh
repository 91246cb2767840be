#!/usr/bin/env bash
# Breaks an unstripped release binary's code size down by crate, from its symbol table: a
# stand-in for cargo-bloat. build-static.sh keeps target/<triple>/release/berth unstripped.
#
# Usage: packaging/size-report.sh BINARY [N]     (N: how many crates to list, default 20)
#
# Symbols are grouped by the first path segment of their demangled name (`tokio::...` →
# tokio; `<hyper::...>` → hyper); std, core and alloc count as `std`. Names the grouping cannot
# place (C code such as libseccomp or ring's assembly, glibc) are counted as `[C/other]`. After
# LTO, generic code is attributed to the crate that defined it, not the one that used it.
set -euo pipefail

binary="$1" top="${2:-20}"
nm_tool=nm
if file -b "$binary" | grep -q aarch64 && command -v aarch64-linux-gnu-nm > /dev/null; then
    nm_tool=aarch64-linux-gnu-nm
fi
echo "file size: $(stat -c %s "$binary") bytes"
"$nm_tool" --size-sort --print-size --radix=d -C "$binary" \
    | awk '
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
        }' \
    | { head -n "$((top + 1))"; tail -n 1; }
