#!/bin/bash
# Side-by-side benchmark of the shims under one private containerd 1.x, on one locally
# built busybox image: our shim, the Go containerd-shim-runc-v2, and bare `runc run` on an
# unpacked bundle. Prints a markdown table:
#   - latency of `ctr run --rm IMG ID sh -c :` (median, p90 over N runs);
#   - PSS and private memory per shim process (/proc/PID/smaps_rollup) with 1 and with M
#     containers running (each `ctr run -d` gets its own shim);
#   - wall time to start M containers concurrently.
#
# Usage: scripts/bench-shim.sh [OUR_SHIM]
#   OUR_SHIM / $LIMPET_SHIM  our shim binary (default: the workspace's release build; its
#                            column shows n/a when it does not exist)
#   $GO_SHIM                 the reference shim (default /usr/bin/containerd-shim-runc-v2)
#   $N (default 20), $M (default 20)
set -euo pipefail

cd "$(dirname "$0")/.."
N=${N:-20}
M=${M:-20}
GO_SHIM=${GO_SHIM:-/usr/bin/containerd-shim-runc-v2}
if [ -n "${1:-}" ]; then
    OUR_SHIM=$1
elif [ -n "${LIMPET_SHIM:-}" ]; then
    OUR_SHIM=$LIMPET_SHIM
else
    target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory || echo target)
    OUR_SHIM=$target_dir/release/containerd-shim-limpet-v2
fi

[ "$(id -u)" -eq 0 ] || { echo "bench-shim: needs root" >&2; exit 1; }
for tool in containerd ctr runc umoci jq; do
    command -v "$tool" >/dev/null || { echo "bench-shim: missing $tool (scripts/setup.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/lb-XXXXXX)
sock=$work/c.sock
image=localhost/limpet/busybox:latest
containerd_pid=

log() { echo "bench: $*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
c() { ctr -a "$sock" -n "$ns" "$@"; }

# Everything the run made goes, even after a failure or ^C: tasks through containerd while
# it answers, then shims, containers, runc state, mounts and cgroups directly.
cleanup() {
    set +e
    local n t k pid argv
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        for n in bench-limpet bench-go; do
            for t in $(ctr --connect-timeout 2s -a "$sock" -n "$n" tasks ls -q 2>/dev/null); do
                ctr -a "$sock" -n "$n" tasks delete -f "$t" >/dev/null 2>&1
            done
            for k in $(ctr --connect-timeout 2s -a "$sock" -n "$n" containers ls -q 2>/dev/null); do
                ctr -a "$sock" -n "$n" containers rm "$k" >/dev/null 2>&1
            done
        done
        kill "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    for pid in /proc/[0-9]*; do
        argv=$(tr '\0' ' ' 2>/dev/null <"$pid/cmdline") || continue
        case "$argv" in *"-address $sock"*) kill -9 "${pid#/proc/}" 2>/dev/null ;; esac
    done
    for n in bench-limpet bench-go; do
        for t in $(runc --root "/run/containerd/runc/$n" list -q 2>/dev/null); do
            runc --root "/run/containerd/runc/$n" delete -f "$t" >/dev/null 2>&1
        done
    done
    for t in $(runc --root "$work/runc" list -q 2>/dev/null); do
        runc --root "$work/runc" delete -f "$t" >/dev/null 2>&1
    done
    grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    for n in bench-limpet bench-go; do
        rmdir /sys/fs/cgroup/*/"$n"/*/ /sys/fs/cgroup/*/"$n"/ /run/containerd/runc/"$n" 2>/dev/null
    done
    rmdir /sys/fs/cgroup/*/bench-runc-* 2>/dev/null
    if grep -q " $work" /proc/self/mountinfo; then
        log "kept $work: still mounted"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- image: cached by the test harness, else built here
archive=
for candidate in "${CARGO_TARGET_DIR:-target}/limpet-images/busybox.tar" target/limpet-images/busybox.tar; do
    [ -f "$candidate" ] && archive=$candidate && break
done
if [ -z "$archive" ]; then
    archive=$work/busybox.tar
    bash scripts/build-busybox-image.sh "$archive"
fi

# --- private containerd; both shims reachable by runtime name through its PATH
mkdir -p "$work/bin"
ln -s "$GO_SHIM" "$work/bin/containerd-shim-runc-v2"
have_ours=
if [ -x "$OUR_SHIM" ]; then
    ln -s "$(readlink -f "$OUR_SHIM")" "$work/bin/containerd-shim-limpet-v2"
    have_ours=1
else
    log "our shim $OUR_SHIM not found: its column is n/a"
fi
cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"
TOML
(cd "$work" && PATH=$work/bin:$PATH exec containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1) &
containerd_pid=$!
for _ in $(seq 200); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.05; done
ctr -a "$sock" version >/dev/null || { log "containerd did not start"; cat "$work/containerd.log" >&2; exit 1; }

for ns in bench-limpet bench-go; do
    c images import --base-name localhost/limpet/busybox "$archive" >/dev/null
done

# --- measurements
# percentile P of the numbers on stdin (nearest rank)
percentile() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if(i<1)i=1; print a[i]}'; }

shim_pids() {
    local p argv
    for p in /proc/[0-9]*; do
        argv=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        case "$argv" in *"-namespace $ns "*"-address $sock"*) echo "${p#/proc/}" ;; esac
    done
}

# average "PSS PRIVATE DIRTY COUNT" (KiB) over the shims of namespace $ns. PSS and
# private (clean + dirty) depend on how many other processes map the same binary; private
# dirty (heap, stacks) is what each shim costs whatever runs beside it.
shim_memory() {
    local pid pss priv dirty total_pss=0 total_priv=0 total_dirty=0 count=0
    for pid in $(shim_pids); do
        read -r pss priv dirty < <(awk '/^Pss:/ {p=$2} /^Private_(Clean|Dirty):/ {v+=$2}
            /^Private_Dirty:/ {d=$2} END {print p, v, d}' "/proc/$pid/smaps_rollup")
        total_pss=$((total_pss + pss)); total_priv=$((total_priv + priv))
        total_dirty=$((total_dirty + dirty)); count=$((count + 1))
    done
    [ "$count" -gt 0 ] || { echo "n/a n/a n/a 0"; return; }
    echo "$((total_pss / count)) $((total_priv / count)) $((total_dirty / count)) $count"
}

remove_all() {
    local t
    for t in $(c tasks ls -q); do c tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for t in $(c containers ls -q); do c containers rm "$t" >/dev/null 2>&1 || true; done
}

# One timed `ctr run --rm ... sh -c :` in namespace $ns with runtime $1; prints ms.
time_ctr_run() {
    local t0
    t0=$(now_ms)
    c run --rm --runtime "$1" "$image" "lat-$2" sh -c : >/dev/null
    echo $(( $(now_ms) - t0 ))
}

# One timed bare `runc run` of the same command; prints ms.
time_runc_run() {
    local t0
    t0=$(now_ms)
    runc --root "$work/runc" run -b "$work/runc-bundle" "bench-runc-$1" </dev/null >/dev/null
    echo $(( $(now_ms) - t0 ))
}

# bench_memory RUNTIME: sets mem1* memM* startM for namespace $ns
bench_memory() {
    local runtime=$1 i t0 pids=()
    c run -d --runtime "$runtime" "$image" one sleep 1000 >/dev/null
    sleep 0.5
    read -r mem1 mem1_priv mem1_dirty _ < <(shim_memory)
    remove_all

    t0=$(now_ms)
    for i in $(seq "$M"); do
        c run -d --runtime "$runtime" "$image" "many-$i" sleep 1000 >/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    startM=$(( $(now_ms) - t0 ))
    [ "$(c tasks ls -q | wc -l)" -eq "$M" ] || log "$runtime: not all $M containers started"
    sleep 0.5
    read -r memM memM_priv memM_dirty _ < <(shim_memory)
    remove_all
}

prepare_runc_bundle() {
    local bundle=$work/runc-bundle
    mkdir -p "$work/layout" "$work/runc"
    tar -C "$work/layout" -xf "$archive"
    umoci unpack --image "$work/layout:latest" "$bundle" >/dev/null
    jq '.process.args = ["sh", "-c", ":"] | .process.terminal = false' "$bundle/config.json" >"$bundle/c.json"
    mv "$bundle/c.json" "$bundle/config.json"
}

# Concurrent bare runc starts; sets runc_startM.
bench_runc_concurrent() {
    local bundle=$work/runc-bundle i t0 pids=()
    # One bundle dir each, all on the same read-only rootfs.
    for i in $(seq "$M"); do
        mkdir -p "$work/rb-$i"
        jq --arg r "$bundle/rootfs" '.process.args = ["sleep", "1000"] | .root.path = $r | .root.readonly = true' \
            "$bundle/config.json" >"$work/rb-$i/config.json"
    done
    t0=$(now_ms)
    for i in $(seq "$M"); do
        runc --root "$work/runc" run -d -b "$work/rb-$i" "bench-runc-many-$i" </dev/null >/dev/null 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    runc_startM=$(( $(now_ms) - t0 ))
    for i in $(seq "$M"); do runc --root "$work/runc" delete -f "bench-runc-many-$i" >/dev/null 2>&1 || true; done
}

prepare_runc_bundle

# Latency: the three columns interleaved run by run, so that drift hits all alike.
log "latency: $N runs each (after one warm-up)"
lat_go=() lat_ours=() lat_runc=()
for i in $(seq 0 "$N"); do
    ns=bench-go t=$(time_ctr_run io.containerd.runc.v2 "$i")
    [ "$i" -gt 0 ] && lat_go+=("$t")
    if [ -n "$have_ours" ]; then
        ns=bench-limpet t=$(time_ctr_run io.containerd.limpet.v2 "$i")
        [ "$i" -gt 0 ] && lat_ours+=("$t")
    fi
    t=$(time_runc_run "$i")
    [ "$i" -gt 0 ] && lat_runc+=("$t")
done
stats() { [ $# -gt 0 ] || { echo "n/a n/a"; return; }; echo "$(printf '%s\n' "$@" | percentile 50) $(printf '%s\n' "$@" | percentile 90)"; }

log "memory and concurrent start: Go shim ($GO_SHIM)"
ns=bench-go
bench_memory io.containerd.runc.v2
read -r med p90 < <(stats "${lat_go[@]}")
go=("$med" "$p90" "$mem1" "$mem1_priv" "$mem1_dirty" "$memM" "$memM_priv" "$memM_dirty" "$startM")

if [ -n "$have_ours" ]; then
    log "memory and concurrent start: our shim ($OUR_SHIM)"
    ns=bench-limpet
    bench_memory io.containerd.limpet.v2
    read -r med p90 < <(stats "${lat_ours[@]}")
    ours=("$med" "$p90" "$mem1" "$mem1_priv" "$mem1_dirty" "$memM" "$memM_priv" "$memM_dirty" "$startM")
else
    ours=(n/a n/a n/a n/a n/a n/a n/a n/a n/a)
fi

log "concurrent start: bare runc"
bench_runc_concurrent
read -r runc_med runc_p90 < <(stats "${lat_runc[@]}")

rows=(
    "\`ctr run --rm\` sh -c : median (ms)"
    "\`ctr run --rm\` sh -c : p90 (ms)"
    "shim PSS, 1 container (KiB)"
    "shim private, 1 container (KiB)"
    "shim private dirty, 1 container (KiB)"
    "shim PSS, $M containers, per shim (KiB)"
    "shim private, $M containers, per shim (KiB)"
    "shim private dirty, $M containers, per shim (KiB)"
    "start $M containers concurrently (ms)"
)
runc_col=("$runc_med" "$runc_p90" - - - - - - "$runc_startM")

echo
echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1 {print $3}'), N=$N, M=$M, $(nproc) cores"
echo
echo "| | limpet ($(basename "$OUR_SHIM")) | Go shim | bare runc |"
echo "|---|---:|---:|---:|"
for i in "${!rows[@]}"; do
    echo "| ${rows[$i]} | ${ours[$i]} | ${go[$i]} | ${runc_col[$i]} |"
done
echo
echo "bare runc: \`runc run\` of the unpacked image (no containerd, no shim); its concurrent"
echo "start is \`runc run -d\` without stdio relay. PSS and private memory include the shim"
echo "binary's pages, shared only with other processes running the same binary; private"
echo "dirty (heap, stacks) is each shim's own cost."
