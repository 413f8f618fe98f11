# scripts/bench-env.sh: sourced by the CRI benchmarks (bench-pods.sh, bench-streaming.sh), from
# the repository root, under `set -euo pipefail`. It sets up what they compare on: private
# instances of limpetd (embedded defaults, built-in pause, our shim) and of stock containerd's
# CRI plugin (the Go containerd-shim-runc-v2, a busybox pause stand-in as sandbox_image), the
# same busybox image pushed to a local docker-registry, and one CNI conflist (bridge +
# host-local + portmap on a private bridge, subnet and IPAM dir) that both daemons use.
#
# The caller sets before sourcing:
#   BENCH         its name: log prefix, temp dir /tmp/limpet-$BENCH.XXXX, cgroup parent
#   BENCH_BRIDGE  a short prefix of the bridge's name (the pid is appended)
# and gets:
#   W (the run's directory), LD / LSOCK (limpetd's dir and socket), CD / CSOCK (containerd's),
#   CG (the cgroup parent name), BR (the bridge), IMAGE and PAUSE (in the registry),
#   $limpetd $ctl $shim (release binaries of <target>, built when missing), $target,
#   limpetd_pid / containerd_pid once started, and the functions log, now_ms, alive,
#   shim_pids, stop_pid, launch_limpetd, start_limpetd, start_containerd.
# Everything the run made is removed on exit, ^C included (the EXIT trap is set here).
: "${BENCH:?set BENCH before sourcing bench-env.sh}" "${BENCH_BRIDGE:?set BENCH_BRIDGE}"

[ "$(id -u)" -eq 0 ] || { echo "$BENCH: run as root" >&2; exit 1; }
for t in containerd containerd-shim-runc-v2 runc docker-registry skopeo umoci curl jq ip python3; do
    command -v "$t" >/dev/null || { echo "$BENCH: missing $t (scripts/setup.sh)" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "$BENCH: missing CNI plugins in /usr/lib/cni" >&2; exit 1; }

target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release
limpetd=$target/limpetd
ctl=$target/limpetctl
shim=$target/containerd-shim-limpet-v2
if [ ! -x "$limpetd" ] || [ ! -x "$ctl" ] || [ ! -x "$shim" ]; then
    cargo build --release -p limpetd -p containerd-shim-limpet-v2 >&2
fi

W=$(mktemp -d "/tmp/limpet-$BENCH.XXXX")
LD=$W/limpetd
CD=$W/containerd
LSOCK=$LD/state/limpetd.sock
CSOCK=$CD/c.sock
CG=limpet-$BENCH-$$
BR=$BENCH_BRIDGE$(( $$ % 100000 ))
limpetd_pid= containerd_pid= registry_pid=
netns_before=$(ls /var/run/netns 2>/dev/null || true)

log() { echo "$BENCH: $*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# pids of the shims started for the daemon on socket $1 (`-address $1` in their cmdline)
shim_pids() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "-address $1 " && echo "${p#/proc/}"
    done
    return 0
}

stop_pid() {
    alive "$1" || return 0
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
    if alive "$1"; then kill -9 "$1" 2>/dev/null || true; fi
    wait "$1" 2>/dev/null || true
}

# Everything the run made goes, even after a failure or ^C: pods through their daemon while
# it answers (CNI DEL, netns, mounts), then daemons, stray shims and runc state, mounts,
# cgroups, the bridge and the registry.
cleanup() {
    set +e
    trap - INT TERM
    local pods_left= sock root t m d pid
    if alive "$limpetd_pid"; then
        "$ctl" -r "unix://$LSOCK" -t 5s rmp -a -f >/dev/null 2>&1
    fi
    if alive "$containerd_pid"; then
        "$ctl" -r "unix://$CSOCK" -t 5s rmp -a -f >/dev/null 2>&1 || pods_left=1
    fi
    stop_pid "$limpetd_pid"
    stop_pid "$containerd_pid"
    for sock in "$LSOCK" "$CSOCK"; do
        for pid in $(shim_pids "$sock"); do kill -9 "$pid" 2>/dev/null; done
    done
    for root in "$LD/state/runtime/runc/k8s.io" "$LD/state/runtime/runc" "$CD/runc/k8s.io"; do
        [ -d "$root" ] || continue
        for t in $(runc --root "$root" list -q 2>/dev/null); do
            runc --root "$root" delete -f "$t" >/dev/null 2>&1
        done
    done
    # containerd 1.6 puts pod netns in /var/run/netns: what it made and did not remove
    if [ -n "$pods_left" ]; then
        for m in $(ls /var/run/netns 2>/dev/null); do
            case "$m" in cni-*) ;; *) continue ;; esac
            grep -qxF "$m" <<<"$netns_before" && continue
            umount "/var/run/netns/$m" 2>/dev/null; rm -f "/var/run/netns/$m"
        done
    fi
    awk -v d="$W/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    for d in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    ip link del "$BR" >/dev/null 2>&1
    stop_pid "$registry_pid"
    if grep -q " $W/" /proc/self/mountinfo; then
        log "kept $W: still mounted"
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- images and registry ------------------------------------------------------------------
archive=
for candidate in "${CARGO_TARGET_DIR:-target}/limpet-images/busybox.tar" target/limpet-images/busybox.tar; do
    [ -f "$candidate" ] && archive=$candidate && break
done
if [ -z "$archive" ]; then
    archive=$W/busybox.tar
    bash scripts/build-busybox-image.sh "$archive" >&2
fi
# The pause stand-in: the busybox layer with an idling command that exits on SIGTERM.
mkdir -p "$W/layout"
tar -C "$W/layout" -xf "$archive"
umoci config --image "$W/layout:latest" --tag pause \
    --config.cmd /bin/sh --config.cmd -c --config.cmd "trap 'exit 0' TERM; sleep 2147483647 & wait"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
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
setsid docker-registry serve "$W/registry/config.yml" >"$W/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$REG/v2/" >/dev/null || { log "registry did not start"; cat "$W/registry.log" >&2; exit 1; }
skopeo copy --quiet --dest-tls-verify=false "oci:$W/layout:latest" "docker://$REG/bench/busybox:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$W/layout:pause" "docker://$REG/bench/pause:latest"
IMAGE=$REG/bench/busybox:latest
PAUSE=$REG/bench/pause:latest

# ---- the pod network both runtimes use ----------------------------------------------------
used=$(ip -4 addr; ip -4 route)
third=
for x in $(seq 1 250); do
    grep -qF "10.197.$x." <<<"$used" || { third=$x; break; }
done
[ -n "$third" ] || { log "no free 10.197.x.0/24"; exit 1; }
mkdir -p "$W/net.d" "$W/ipam" "$W/logs" "$W/pods"
cat >"$W/net.d/10-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$BR",
  "plugins": [
    {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "subnet": "10.197.$third.0/24", "dataDir": "$W/ipam",
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# ---- daemons ------------------------------------------------------------------------------
# Daemons run in sessions of their own: a ^C at the terminal reaches the script only, whose
# cleanup then removes the pods through them (limpetd and containerd would stop on SIGINT).
launch_limpetd() {
    setsid "$limpetd" --config "$LD/config.toml" >>"$LD/log" 2>&1 &
    limpetd_pid=$!
}

start_limpetd() {
    mkdir -p "$LD"
    # Embedded defaults but for where it keeps things and which network it runs.
    cat >"$LD/config.toml" <<EOF
root = "$LD/root"
state = "$LD/state"
[grpc]
address = "$LSOCK"
[cni]
conf_dir = "$W/net.d"
bin_dirs = ["/usr/lib/cni"]
EOF
    launch_limpetd
    for _ in $(seq 200); do "$ctl" -r "unix://$LSOCK" -t 1s version >/dev/null 2>&1 && break; sleep 0.05; done
    "$ctl" -r "unix://$LSOCK" version >/dev/null || { log "limpetd did not start"; tail -20 "$LD/log" >&2; exit 1; }
}

start_containerd() {
    mkdir -p "$CD"
    cat >"$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$CSOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = "$PAUSE"
  restrict_oom_score_adj = true
  disable_apparmor = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$W/net.d"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "runc"
  Root = "$CD/runc"
EOF
    setsid containerd --config "$CD/config.toml" >"$CD/log" 2>&1 &
    containerd_pid=$!
    for _ in $(seq 200); do "$ctl" -r "unix://$CSOCK" -t 1s version >/dev/null 2>&1 && break; sleep 0.05; done
    "$ctl" -r "unix://$CSOCK" version >/dev/null || { log "containerd did not start"; tail -20 "$CD/log" >&2; exit 1; }
}
