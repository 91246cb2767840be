#!/usr/bin/env bash
# Builds berth from this checkout, installs it as /usr/local/bin/berth and starts `berth server`.
# For Debian 12, as root. The build needs a C toolchain, libseccomp (seccomp is enforced in the
# binary) and libclang (the nftables bindings are generated at build time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_packages=(gcc libc6-dev pkg-config libseccomp-dev libclang-dev)
missing=()
for pkg in "${build_packages[@]}"; do
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "install: installing build dependencies: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release
install -m 0755 target/release/berth /usr/local/bin/berth
echo "install: /usr/local/bin/berth installed; starting berth server (kubeconfig: /var/lib/berth/kubeconfig.yaml)"
exec /usr/local/bin/berth server "$@"
