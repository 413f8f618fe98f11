#!/bin/bash
# Installs what a fresh Debian 12 machine needs to build limpet and run its tests.
# Idempotent and quiet: apt runs only when a package is missing; re-running is cheap.
set -euo pipefail

packages=(
    # runtimes and the stock containerd the shim suites run under (ctr, Go shim)
    runc crun containerd
    # test images are built locally from the static busybox with umoci
    busybox-static umoci skopeo docker-registry
    # the registry token and streaming TLS tests make their certificates with the openssl CLI
    openssl
    # pod networking, protos, namespaces, firewall, checkpoint
    containernetworking-plugins protobuf-compiler iproute2 iptables criu
    # mount/umount/script/nsenter, pgrep/ps, JSON in scripts, the C toolchain cargo links with
    util-linux bsdutils procps jq build-essential pkg-config ca-certificates bc
)

log() { echo "setup: $*" >&2; }

can_install=1
if [ "$(id -u)" -ne 0 ]; then
    log "not root: cannot install packages; checking only"
    can_install=
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ -z "$can_install" ]; then
        log "missing packages: ${missing[*]}"
        exit 1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# containerd's overlayfs snapshotter needs the overlay filesystem.
if ! grep -qw overlay /proc/filesystems; then
    modprobe overlay 2>/dev/null || log "warning: overlay filesystem unavailable"
fi

# Rust: a toolchain cannot be downloaded here (only crates.io is reachable), so it must
# already be installed; check it is new enough and has fmt and clippy.
need_rust="1.89"
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    log "cargo/rustc not found: install a Rust toolchain >= $need_rust (rustup)"
    exit 1
fi
have_rust=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -1)" != "$need_rust" ]; then
    log "rustc $have_rust is older than $need_rust"
    exit 1
fi
for tool in fmt clippy; do
    cargo "$tool" --version >/dev/null 2>&1 || { log "cargo $tool missing (rustup component add)"; exit 1; }
done
# nextest is optional: scripts/test.sh falls back to cargo test without it.
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest not found: tests will run with cargo test"
fi
