#!/bin/sh
# Installs berth as a systemd service: the one command for a Raspberry Pi or any Linux machine.
#
#   curl -sfL https://get.berth.dev | sh -                 # download the release binary
#   BERTH_BINARY=./berth-aarch64 sh install.sh             # or install a binary you already have
#   BERTH_URL=https://server:6443 BERTH_TOKEN=... sh -     # join as an agent node
#
# Environment:
#   BERTH_BINARY        install this file instead of downloading
#   BERTH_VERSION       release to download (default: latest)
#   BERTH_DOWNLOAD_URL  base URL of the release files (default: the project's releases)
#   BERTH_URL, BERTH_TOKEN  install an agent that joins that server instead of a server
#   BERTH_SKIP_START    set to 1 to install without enabling or starting the service
#   BERTH_ROOT          install under this directory instead of / (for packaging and tests;
#                       implies BERTH_SKIP_START); `--root DIR` does the same
#
# Idempotent: a second run with the same inputs changes nothing and does not restart berth.
# Every file it adds is listed in /etc/berth/installed-files; berth-uninstall.sh removes them.
set -eu

root="${BERTH_ROOT:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="$2"; shift 2 ;;
        --root=*) root="${1#--root=}"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
root="${root%/}"
skip_start="${BERTH_SKIP_START:-0}"
[ -n "$root" ] && skip_start=1

info() { echo "[berth] $*"; }
fatal() { echo "[berth] error: $*" >&2; exit 1; }

bin_dir="$root/usr/local/bin"
etc_dir="$root/etc/berth"
unit_file="$root/etc/systemd/system/berth.service"
env_file="$root/etc/default/berth"
manifest="$etc_dir/installed-files"
uninstall="$bin_dir/berth-uninstall.sh"
changed=0

[ -z "$root" ] && [ "$(id -u)" != 0 ] && fatal "run as root (sudo sh install.sh)"

arch() {
    case "$(uname -m)" in
        x86_64|amd64) echo x86_64 ;;
        aarch64|arm64) echo aarch64 ;;
        *) fatal "unsupported architecture $(uname -m) (berth ships x86_64 and aarch64)" ;;
    esac
}

# record PATH: remember a file we added, so the uninstaller removes exactly those.
record() {
    mkdir -p "$etc_dir"
    grep -qxF "$1" "$manifest" 2>/dev/null || echo "$1" >> "$manifest"
}

# put_file SOURCE DEST MODE: install only when the content differs; sets changed=1 if it did.
put_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.berth-new"
    chmod "$3" "$2.berth-new"
    mv -f "$2.berth-new" "$2"
    changed=1
    info "installed ${2#"$root"}"
}

# put_text DEST MODE: like put_file with the text on stdin.
put_text() {
    tmp="$(mktemp)"
    cat > "$tmp"
    put_file "$tmp" "$1" "$2"
    rm -f "$tmp"
}

fetch_binary() {
    dest="$1"
    if [ -n "${BERTH_BINARY:-}" ]; then
        [ -f "$BERTH_BINARY" ] || fatal "BERTH_BINARY=$BERTH_BINARY is not a file"
        cp "$BERTH_BINARY" "$dest"
        return 0
    fi
    a="$(arch)"
    base="${BERTH_DOWNLOAD_URL:-https://github.com/berth-k8s/berth/releases}"
    version="${BERTH_VERSION:-latest}"
    if [ "$version" = latest ]; then url="$base/latest/download"; else url="$base/download/$version"; fi
    command -v curl >/dev/null || fatal "curl is needed to download berth (or set BERTH_BINARY)"
    info "downloading berth-$a from $url"
    curl -sfL "$url/berth-$a" -o "$dest" || fatal "download of $url/berth-$a failed"
    curl -sfL "$url/SHA256SUMS" -o "$dest.sums" || fatal "download of $url/SHA256SUMS failed"
    want="$(awk -v f="berth-$a" '$2 == f || $2 == "*" f {print $1}' "$dest.sums")"
    have="$(sha256sum "$dest" | cut -d' ' -f1)"
    rm -f "$dest.sums"
    [ -n "$want" ] && [ "$want" = "$have" ] || fatal "checksum of berth-$a does not match SHA256SUMS"
}

unit_text() {
    # $1: the ExecStart command line. Keep in step with packaging/systemd/berth.service.
    cat <<EOF
[Unit]
Description=berth: a whole Kubernetes in one binary
Documentation=https://github.com/berth-k8s/berth
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/berth
ExecStart=$1
# Pods run in their own shims and outlive berth by design: stopping or restarting the service
# must end berth only, never the containers.
KillMode=process
# berth creates the pods' cgroups itself.
Delegate=yes
Restart=always
RestartSec=5s
# A full image pull or a slow SD card must not count as a failed start.
TimeoutStartSec=0
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity

[Install]
WantedBy=multi-user.target
EOF
}

config_text() {
    cat <<'EOF'
# berth configuration. Every key is optional; flags given to `berth server` win.
# A commented example with every key and its default ships with berth's source (configs/).
#
# data_dir = "/var/lib/berth"
#
# [api]
# listen = "0.0.0.0:6443"
#
# [registries.mirrors."docker.io"]
# endpoints = ["http://registry.local:5000"]
EOF
}

uninstall_text() {
    cat <<EOF
#!/bin/sh
# Removes what berth's install.sh added. Containers are stopped first with \`berth reset\`
# when it is available; the data dir stays unless BERTH_REMOVE_DATA=1.
set -u
root="\${BERTH_ROOT:-$root}"
manifest="\$root/etc/berth/installed-files"
if [ -z "\$root" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now berth.service 2>/dev/null || true
fi
if [ -z "\$root" ] && [ -x /usr/local/bin/berth ]; then
    if [ "\${BERTH_REMOVE_DATA:-0}" = 1 ]; then
        /usr/local/bin/berth reset --data 2>/dev/null || true
    else
        /usr/local/bin/berth reset 2>/dev/null || true
    fi
fi
if [ -f "\$manifest" ]; then
    while IFS= read -r file; do
        [ -n "\$file" ] && rm -f "\$root\$file"
    done < "\$manifest"
    rm -f "\$manifest"
fi
rmdir "\$root/etc/berth" 2>/dev/null || true
if [ -z "\$root" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload 2>/dev/null || true
fi
rm -f "\$0"
echo "[berth] uninstalled"
EOF
}

main() {
    mkdir -p "$bin_dir" "$etc_dir"

    tmp_bin="$(mktemp)"
    trap 'rm -f "$tmp_bin"' EXIT
    fetch_binary "$tmp_bin"
    chmod 0755 "$tmp_bin"
    "$tmp_bin" version >/dev/null 2>&1 || fatal "the berth binary does not run on this machine"
    put_file "$tmp_bin" "$bin_dir/berth" 0755
    record /usr/local/bin/berth

    if [ -n "${BERTH_URL:-}" ] || [ -n "${BERTH_TOKEN:-}" ]; then
        [ -n "${BERTH_URL:-}" ] && [ -n "${BERTH_TOKEN:-}" ] \
            || fatal "an agent needs both BERTH_URL and BERTH_TOKEN"
        "$tmp_bin" agent --help >/dev/null 2>&1 \
            || fatal "this berth binary has no agent mode yet; install a newer one"
        printf 'BERTH_URL=%s\nBERTH_TOKEN=%s\n' "$BERTH_URL" "$BERTH_TOKEN" \
            | put_text "$env_file" 0600
        record /etc/default/berth
        unit_text "/usr/local/bin/berth agent" | put_text "$unit_file" 0644
        mode=agent
    else
        unit_text "/usr/local/bin/berth server" | put_text "$unit_file" 0644
        mode=server
    fi
    record /etc/systemd/system/berth.service

    if [ ! -e "$etc_dir/config.toml" ]; then
        config_text | put_text "$etc_dir/config.toml" 0644
        record /etc/berth/config.toml
    fi
    if [ ! -L "$etc_dir/berth.yaml" ]; then
        ln -sf /var/lib/berth/kubeconfig.yaml "$etc_dir/berth.yaml"
        record /etc/berth/berth.yaml
        changed=1
    fi
    uninstall_text | put_text "$uninstall" 0755
    record /usr/local/bin/berth-uninstall.sh
    record /etc/berth/installed-files

    if [ "$skip_start" = 1 ]; then
        info "installed under ${root:-/}; not starting the service"
    elif ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
        info "no systemd here: start berth with '/usr/local/bin/berth $mode'"
    else
        systemctl daemon-reload
        systemctl enable berth.service >/dev/null 2>&1
        if [ "$changed" = 1 ]; then
            info "starting berth ($mode)"
            systemctl restart berth.service
        elif ! systemctl is-active --quiet berth.service; then
            systemctl start berth.service
        else
            info "nothing changed; berth keeps running"
        fi
    fi

    if [ "$changed" = 0 ]; then
        info "berth is already installed and up to date"
    fi
    cat <<EOF
[berth] next steps:
  berth check                                   # is this machine ready?
  export KUBECONFIG=/etc/berth/berth.yaml
  kubectl get nodes
  kubectl create deployment hello --image=nginx && kubectl expose deployment hello --port=80
  berth-uninstall.sh                            # removes berth again
EOF
}

main
