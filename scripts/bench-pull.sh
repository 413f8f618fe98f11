#!/bin/bash
# scripts/bench-pull.sh [RUNS]
# Pull + unpack of the same images from the same local registry by limpetd (limpetctl pull,
# over CRI) and by stock containerd (ctr images pull --plain-http, which unpacks into its
# overlayfs snapshotter), side by side: cold (empty store, fresh daemon) and warm (the same
# pull again), RUNS times each (default 3, median shown). Reports wall time and the daemon's
# peak RSS (VmHWM) and idle RSS. Private instances only: every root, state and socket is
# under a temp dir; the registry listens on 127.0.0.1.
# Images: busybox (one ~1 MB layer, from the host's static busybox) and big (busybox plus
# three layers of 24 MB each, half random half text, so gzip has work to do).
# Env: LIMPETD_BIN, LIMPETCTL_BIN (default: release build), BENCH_DIR (default: mktemp).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[ "$(id -u)" -eq 0 ] || { echo "bench-pull: run as root" >&2; exit 1; }
for t in docker-registry skopeo umoci containerd ctr curl; do
    command -v "$t" >/dev/null || { echo "bench-pull: missing $t (scripts/setup.sh)" >&2; exit 1; }
done
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release
if [ -z "${LIMPETD_BIN:-}" ]; then cargo build --release -p limpetd >&2; fi
limpetd=${LIMPETD_BIN:-$target/limpetd}
limpetctl=${LIMPETCTL_BIN:-$target/limpetctl}
W=${BENCH_DIR:-$(mktemp -d /tmp/limpet-bench.XXXX)}
mkdir -p "$W"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    awk -v d="$W/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    [ -n "${BENCH_DIR:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

# ---- images and registry ------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
L=$W/layout
if [ ! -f "$L/.done" ]; then
    rm -rf "$L"
    bash scripts/build-busybox-image.sh "$W/busybox.tar" >&2
    mkdir -p "$L" && tar -C "$L" -xf "$W/busybox.tar"
    from=latest
    for i in 1 2 3; do
        rm -rf "$W/bundle"
        umoci unpack --image "$L:$from" "$W/bundle" >/dev/null
        mkdir -p "$W/bundle/rootfs/data$i"
        head -c 12M /dev/urandom > "$W/bundle/rootfs/data$i/random"
        seq 1 2000000 > "$W/bundle/rootfs/data$i/text" && truncate -s 12M "$W/bundle/rootfs/data$i/text"
        umoci repack --image "$L:big" "$W/bundle" >/dev/null
        from=big
    done
    rm -rf "$W/bundle"
    touch "$L/.done"
fi
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/registry/data
http:
  addr: $REG
EOF
docker-registry serve "$W/registry/config.yml" > "$W/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
for tag in latest big; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$L:$tag" "docker://$REG/bench/$([ $tag = latest ] && echo busybox || echo big):latest"
done

# ---- helpers ------------------------------------------------------------------------------
now() { date +%s.%N; }
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

start_limpetd() {
    D=$(mktemp -d "$W/limpetd.XXXX")
    printf 'root = "%s/root"\nstate = "%s/state"\n[grpc]\naddress = "%s/state/l.sock"\n[registry]\nconfig_path = "%s/certs.d"\n' "$D" "$D" "$D" "$D" > "$D/config.toml"
    "$limpetd" --config "$D/config.toml" > "$D/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    for _ in $(seq 100); do [ -S "$D/state/l.sock" ] && break; sleep 0.05; done
    sleep 0.3
    PULL=("$limpetctl" -r "unix://$D/state/l.sock" pull)
}
start_containerd() {
    D=$(mktemp -d "$W/containerd.XXXX")
    cat > "$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$D/c.sock"
[ttrpc]
  address = "$D/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
EOF
    containerd --config "$D/config.toml" > "$D/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    for _ in $(seq 100); do grep -q 'containerd successfully booted' "$D/log" && break; sleep 0.05; done
    sleep 0.3
    PULL=(ctr --address "$D/c.sock" -n bench images pull --plain-http)
}
stop_daemon() {
    kill "$DPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    awk -v d="$D/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$D"
}

# One daemon per cold run; the warm run repeats the pull on it.
bench() {
    local daemon=$1 image=$2 i t0 t1
    : > "$W/cold" ; : > "$W/warm"; : > "$W/peak"; : > "$W/idle"
    for i in $(seq "$runs"); do
        "start_$daemon"
        kb "$DPID" VmRSS >> "$W/idle"
        sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
        t0=$(now); "${PULL[@]}" "$REG/$image" > "$D/pull.out" 2>&1 || { cat "$D/pull.out" >&2; exit 1; }; t1=$(now)
        echo "$t1 - $t0" | bc >> "$W/cold"
        t0=$(now); "${PULL[@]}" "$REG/$image" > "$D/pull.out" 2>&1 || { cat "$D/pull.out" >&2; exit 1; }; t1=$(now)
        echo "$t1 - $t0" | bc >> "$W/warm"
        kb "$DPID" VmHWM >> "$W/peak"
        stop_daemon
    done
    printf '| %s | %s | %.3f s | %.3f s | %.1f MB | %.1f MB |\n' "$daemon" "$image" \
        "$(median < "$W/cold")" "$(median < "$W/warm")" \
        "$(sort -n "$W/peak" | tail -1 | awk '{ print $1 / 1024 }')" "$(median < "$W/idle" | awk '{ print $1 / 1024 }')"
}

command -v bc >/dev/null || { echo "bench-pull: missing bc" >&2; exit 1; }
echo "pull + unpack from a local registry, median of $runs runs; peak = daemon VmHWM, idle = daemon VmRSS before the pull"
echo "containerd: $(containerd --version | awk '{ print $3 }'); limpetd: $("$limpetd" --version | awk '{ print $2 }'); $(nproc) cores"
echo
echo "| daemon | image | cold pull | warm pull | peak RSS | idle RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for image in bench/busybox:latest bench/big:latest; do
    bench limpetd "$image"
    bench containerd "$image"
done
