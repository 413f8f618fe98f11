#!/bin/bash
# scripts/bench-streaming.sh [N]
# CRI streaming side by side: limpetd (embedded defaults, built-in pause, our shim, its own
# streaming server) against stock containerd's CRI plugin (the Go containerd-shim-runc-v2, a
# busybox pause stand-in as sandbox_image), with the same pod and container configs, the same
# busybox image from a local docker-registry and the same CNI conflist (scripts/bench-env.sh).
# The container runs an echo server, `nc -ll -p 7070 -e cat`. Prints a markdown table:
#   - ExecSync of `sh -c :`: median and p90 over N round trips (default 100, at least 50);
#   - streaming Exec of `sh -c :` (the CRI Exec call, the upgrade of its URL and the command
#     run to its exit status): median and p90 over N, over SPDY and over WebSocket (both held
#     to v4.channel.k8s.io); "-" where the runtime refuses the transport;
#   - port-forward over SPDY: one forwarded connection to the echo server, 256 MiB (env MIB)
#     sent while the echo is read back and checked, MiB/s, median of 3 runs.
# Every measurement runs on a fresh pod of its own, after a warm-up (10 execs; a small echo,
# then a 32 MiB transfer), both runtimes back to back, the one going first alternating row by
# row. The measuring client is tests/src/bin/bench-streaming.rs (one JSON object per run).
# Binaries: <target>/release/{limpetd,limpetctl,containerd-shim-limpet-v2} (built when
# missing) and <target>/release/bench-streaming (always brought up to date); <target> honours
# CARGO_TARGET_DIR. Everything the run made is removed on exit, ^C included.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-100}
MIB=${MIB:-256}
WARMUP=10
RUNS=3
PORT=7070
case "$N" in '' | *[!0-9]*) echo "bench-streaming: N must be a number" >&2; exit 1 ;; esac
[ "$N" -ge 50 ] || { echo "bench-streaming: N must be at least 50" >&2; exit 1; }
BENCH=bench-streaming
BENCH_BRIDGE=lbs
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

cargo build --release -p limpet-tests --bin bench-streaming >&2
client=$target/bench-streaming

# ---- the pod both runtimes run ------------------------------------------------------------
mkdir -p "$W/logs/stream/echo"
cat >"$W/pods/stream.json" <<EOF
{"metadata": {"name": "stream", "namespace": "bench", "uid": "stream-$$"},
 "hostname": "stream", "log_directory": "$W/logs/stream",
 "linux": {"cgroup_parent": "/$CG"}}
EOF
cat >"$W/echo.json" <<EOF
{"metadata": {"name": "echo"}, "command": ["nc", "-ll", "-p", "$PORT", "-e", "cat"],
 "log_path": "echo/0.log"}
EOF

declare -A SOCK=([limpetd]=$LSOCK [containerd]=$CSOCK)
declare -A R

# measure RUNTIME WHAT: one run of the client, its JSON kept in R[RUNTIME,WHAT].
measure() {
    log "$1: $2"
    R[$1,$2]=$("$client" --endpoint "unix://${SOCK[$1]}" --image "$IMAGE" \
        --pod "$W/pods/stream.json" --container "$W/echo.json" --what "$2" \
        -n "$N" --warmup "$WARMUP" --mib "$MIB" --runs "$RUNS" --port "$PORT")
}

start_limpetd
"$ctl" -r "unix://$LSOCK" pull "$IMAGE" >/dev/null
start_containerd
"$ctl" -r "unix://$CSOCK" pull "$IMAGE" >/dev/null
"$ctl" -r "unix://$CSOCK" pull "$PAUSE" >/dev/null

row=0
for what in exec-sync exec-spdy exec-ws port-forward; do
    if [ $(( row % 2 )) -eq 0 ]; then order="limpetd containerd"; else order="containerd limpetd"; fi
    for rt in $order; do measure "$rt" "$what"; done
    row=$(( row + 1 ))
done

# ---- table --------------------------------------------------------------------------------
# "median / p90" in ms, or "-" for a refused transport
latency() {
    jq -r 'if .refused then "-" else [.median_ms, .p90_ms] | @tsv end' <<<"${R[$1,$2]}" |
        awk -F'\t' '$0 == "-" { print; next } { printf "%.1f / %.1f\n", $1, $2 }'
}
# "median (run, run, run)" in MiB/s
rate() {
    jq -r '[.median_mib_per_s] + .mib_per_s | @tsv' <<<"${R[$1,$2]}" |
        awk -F'\t' '{ printf "%.0f (", $1; for (i = 2; i <= NF; i++) printf "%s%.0f", (i > 2 ? ", " : ""), $i; print ")" }'
}
L=limpetd C=containerd

echo
echo "| | limpetd | containerd |"
echo "|---|---:|---:|"
echo "| ExecSync \`sh -c :\`, median / p90 (ms) | $(latency $L exec-sync) | $(latency $C exec-sync) |"
echo "| Exec \`sh -c :\` over SPDY, median / p90 (ms) | $(latency $L exec-spdy) | $(latency $C exec-spdy) |"
echo "| Exec \`sh -c :\` over WebSocket, median / p90 (ms) | $(latency $L exec-ws) | $(latency $C exec-ws) |"
echo "| port-forward over SPDY, $MIB MiB echoed (MiB/s, median of $RUNS) | $(rate $L port-forward) | $(rate $C port-forward) |"
echo
echo "containerd $(containerd --version | awk '{print $3}') (CRI, Go shim), limpetd $("$limpetd" --version | awk '{print $2}'), runc $(runc --version | awk 'NR==1 {print $3}'), N=$N (after $WARMUP warm-up execs), $(nproc) cores"
echo
echo "Exec rows: the CRI Exec call, the upgrade of its URL (v4.channel.k8s.io on both"
echo "transports) and \`sh -c :\` run to its exit status, stdout and stderr requested."
echo "port-forward: one forwarded connection to \`nc -ll -p $PORT -e cat\` in the pod, all bytes"
echo "sent while the echo is read back and compared; the time from the first byte sent to the"
echo "last byte echoed."
for rt in $L $C; do
    for what in exec-spdy exec-ws; do
        reason=$(jq -r '.refused // empty' <<<"${R[$rt,$what]}")
        [ -z "$reason" ] || echo "$rt refused $what: $reason"
    done
done
