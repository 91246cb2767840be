# Cross-compiling berth to aarch64 from an x86_64 Debian machine: sourced by build-static.sh
# (static release binaries), test-aarch64.sh (unit tests under qemu-user) and boot-arm64.sh.
#
# It needs `rustup target add aarch64-unknown-linux-gnu` and Debian's gcc-aarch64-linux-gnu +
# libc6-dev-arm64-cross. arm64 Debian packages (libseccomp-dev, a kernel, busybox) are downloaded
# by apt into a private directory (see arm64_apt): the host's dpkg architectures are left alone.

# rust_target_for ARCH / multiarch_for ARCH: one line per architecture.
rust_target_for() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-gnu ;;
        aarch64) echo aarch64-unknown-linux-gnu ;;
        *) cross_error "unsupported architecture '$1' (supported: x86_64 aarch64)"; return 1 ;;
    esac
}

multiarch_for() {
    case "$1" in
        x86_64) echo x86_64-linux-gnu ;;
        aarch64) echo aarch64-linux-gnu ;;
        *) return 1 ;;
    esac
}

host_arch() { uname -m; }

# Errors name the script that sourced this file.
cross_error() { echo "${0##*/}: $*" >&2; }

# arm64_apt BASE TOOL ARGS...: runs apt-get or apt-cache for arm64 with its own lists, cache and
# an empty dpkg status under BASE, so nothing on the host changes.
arm64_apt() {
    local base tool="$2"
    # apt reads a relative Dir:: path as relative to /, not to the working directory.
    base="$(realpath -m "$1")"
    shift 2
    mkdir -p "$base/lists/partial" "$base/cache/archives/partial"
    [[ -f "$base/status" ]] || : > "$base/status"
    "$tool" \
        -o "APT::Architecture=arm64" \
        -o "APT::Architectures::=arm64" \
        -o "Dir::State::Lists=$base/lists" \
        -o "Dir::State::status=$base/status" \
        -o "Dir::Cache=$base/cache" \
        "$@"
}

# fetch_arm64_seccomp BASE: downloads Debian's arm64 libseccomp-dev into BASE and unpacks it there
# (once). Prints the directory holding libseccomp.a.
fetch_arm64_seccomp() {
    local base lib deb
    # Absolute: cargo hands the directory to the linker, which runs elsewhere.
    base="$(realpath -m "$1")"
    lib="$base/root/usr/lib/aarch64-linux-gnu"
    if [[ -f "$lib/libseccomp.a" ]]; then
        echo "$lib"
        return 0
    fi
    mkdir -p "$base/debs" "$base/root"
    arm64_apt "$base" apt-get update >&2
    (cd "$base/debs" && arm64_apt "$base" apt-get download libseccomp-dev:arm64 >&2)
    for deb in "$base"/debs/libseccomp*.deb; do
        dpkg-deb -x "$deb" "$base/root"
    done
    if [[ ! -f "$lib/libseccomp.a" ]]; then
        cross_error "libseccomp.a missing from the downloaded arm64 libseccomp-dev"
        return 1
    fi
    echo "$lib"
}

# seccomp_dir_for ARCH TARGET_DIR: prints the directory holding libseccomp.a for ARCH, fetching
# it into TARGET_DIR/cross first when cross-compiling. Without libseccomp a seccomp profile in a
# container spec would be silently ignored, so berth always links it.
seccomp_dir_for() {
    local arch="$1" target_dir="$2"
    if [[ "$arch" == "$(host_arch)" ]]; then
        echo "/usr/lib/$(multiarch_for "$arch")"
    elif [[ "$arch" == aarch64 ]]; then
        fetch_arm64_seccomp "$target_dir/cross/arm64"
    else
        cross_error "cannot cross-compile to $arch from $(host_arch)"
        return 1
    fi
}

# set_cross_env ARCH TARGET_DIR: exports what cargo needs to build and link for ARCH with a static
# libseccomp: the cross linker and C compiler when ARCH is not the host's, and libseccomp's place.
# Callers pass `--target` (see build-static.sh) so that their RUSTFLAGS reach only ARCH's code.
set_cross_env() {
    local arch="$1" target_dir="$2" seccomp_dir
    seccomp_dir="$(seccomp_dir_for "$arch" "$target_dir")"
    if [[ ! -f "$seccomp_dir/libseccomp.a" ]]; then
        cross_error "$seccomp_dir/libseccomp.a not found (apt-get install libseccomp-dev)"
        return 1
    fi
    export LIBSECCOMP_LINK_TYPE=static
    export LIBSECCOMP_LIB_PATH="$seccomp_dir"
    [[ "$arch" == "$(host_arch)" ]] && return 0
    case "$arch" in
        aarch64)
            if ! command -v aarch64-linux-gnu-gcc > /dev/null; then
                cross_error "aarch64-linux-gnu-gcc not found" \
                    "(apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
                return 1
            fi
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
            export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
            export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
            ;;
    esac
}
