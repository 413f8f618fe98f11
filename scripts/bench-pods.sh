#!/bin/bash
# scripts/bench-pods.sh [N]
# Pods side by side: limpetd (its embedded defaults, built-in pause, our shim) against stock
# containerd's CRI plugin (the Go containerd-shim-runc-v2, a busybox pause stand-in as
# sandbox_image), both driven by limpetctl over CRI, with the same busybox image from a local
# docker-registry and the same CNI conflist (bridge + host-local + portmap on a private bridge,
# subnet and IPAM dir). Prints a markdown table:
#   - RunPodSandbox + CreateContainer + StartContainer (`sleep 3600`) wall time, median and
#     p90 over N pods each (default 20; the runtimes alternate pod by pod, each pod removed
#     after, one warm-up first);
#   - wall time to start M pods (runp + create + start each) concurrently (M=20);
#   - with those M pods running: daemon VmRSS, total PSS of its shims (processes whose cmdline
#     has the daemon's `-address`) and of the pod sandbox processes;
#   - limpetd only: from relaunch after SIGKILL to `limpetctl pods` listing all M pods ready,
#     and the `elapsed_ms` limpetd logs in its "re-attached" line.
# Private instances only: roots, states, sockets, runc roots, the CNI network and cgroup
# parent are the run's own; the registry listens on 127.0.0.1. Everything is removed on exit,
# ^C included.
# Binaries: <target>/release/{limpetd,limpetctl,containerd-shim-limpet-v2} (built when
# missing; <target> honours CARGO_TARGET_DIR). Env: M (default 20).
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-20}
M=${M:-20}
BENCH=bench-pods
BENCH_BRIDGE=lbp
# Checks, binaries, the run's directory and cleanup trap, registry and image, pod network,
# and the daemons' start functions.
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh

# ---- measurements -------------------------------------------------------------------------
# percentile P of the numbers on stdin (nearest rank)
percentile() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if(i<1)i=1; print a[i]}'; }
stats() { echo "$(printf '%s\n' "$@" | percentile 50) $(printf '%s\n' "$@" | percentile 90)"; }
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
pss() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
ppid_of() { awk '/^PPid:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# Total PSS (KiB) and count of the processes whose pids are on stdin.
sum_pss() {
    local pid total=0 count=0 k
    while read -r pid; do
        [ -n "$pid" ] || continue
        k=$(pss "$pid"); total=$(( total + ${k:-0} )); count=$(( count + 1 ))
    done
    echo "$total $count"
}

# The pod sandbox processes under the given shims: limpetd's built-in `/pause pause`, or
# containerd's stand-in (`/bin/sh -c ...` and its `sleep`).
sandbox_pids() {
    local shims=" $* " p argv parent
    for p in /proc/[0-9]*; do
        argv=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        case "$argv" in
            "/pause pause "|"/bin/sh -c trap 'exit 0' TERM; sleep 2147483647 & wait ") ;;
            *) continue ;;
        esac
        parent=$(ppid_of "${p#/proc/}")
        case "$shims" in *" $parent "*) ;; *) continue ;; esac
        echo "${p#/proc/}"
        pgrep -P "${p#/proc/}" || true
    done
}

pod_json() { # NAME -> file
    local f=$W/pods/$1.json
    mkdir -p "$W/logs/$1/sleep"
    cat >"$f" <<EOF
{"metadata": {"name": "$1", "namespace": "bench", "uid": "$1-$$"},
 "hostname": "$1", "log_directory": "$W/logs/$1",
 "linux": {"cgroup_parent": "/$CG"}}
EOF
    echo "$f"
}
cat >"$W/container.json" <<EOF
{"metadata": {"name": "sleep"}, "image": {"image": "$IMAGE"},
 "command": ["sleep", "3600"], "log_path": "sleep/0.log"}
EOF

# runp + create + start of pod $2 on endpoint $1; prints "total runp create start" in ms.
start_pod() {
    local ep=$1 f pod c t0 t1 t2 t3
    f=$(pod_json "$2")
    t0=$(now_ms)
    pod=$("$ctl" -r "$ep" runp "$f")
    echo "$pod" >"$W/pods/$2.id"
    t1=$(now_ms)
    c=$("$ctl" -r "$ep" create "$pod" "$W/container.json" "$f")
    t2=$(now_ms)
    "$ctl" -r "$ep" start "$c" >/dev/null
    t3=$(now_ms)
    echo "$((t3 - t0)) $((t1 - t0)) $((t2 - t1)) $((t3 - t2))"
}

declare -A R

# One timed pod on runtime $1 (endpoint $2), then stopp + rmp; iteration 0 is the warm-up.
# Appends to the R[$1,lat|runp|create|start|rm] lists.
one_pod() {
    local rt=$1 ep=$2 i=$3 total runp create start id t0
    read -r total runp create start < <(start_pod "$ep" "$rt-one-$i")
    [ -n "$start" ] || { log "$rt: pod $rt-one-$i did not start"; exit 1; }
    id=$(cat "$W/pods/$rt-one-$i.id")
    t0=$(now_ms)
    "$ctl" -r "$ep" stopp "$id" >/dev/null
    "$ctl" -r "$ep" rmp "$id" >/dev/null
    [ "$i" -gt 0 ] || return 0
    R[$rt,rm]+=" $(( $(now_ms) - t0 ))"
    R[$rt,lat]+=" $total"; R[$rt,runp]+=" $runp"; R[$rt,create]+=" $create"; R[$rt,start]+=" $start"
}

median_of() { # RUNTIME KEY: the median of that list
    # shellcheck disable=SC2086 # one number per word
    stats ${R[$1,$2]} | cut -d' ' -f1
}

# many RUNTIME ENDPOINT SOCKET DAEMON_PID: M pods at once, then memory with them running.
many() {
    local rt=$1 ep=$2 sock=$3 dpid=$4 i t0 pids=() failed=0 shims
    log "$rt: $M pods at once"
    t0=$(now_ms)
    for i in $(seq "$M"); do
        start_pod "$ep" "$rt-many-$i" >/dev/null 2>"$W/pods/$rt-many-$i.err" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || failed=$((failed + 1)); done
    R[$rt,many]=$(( $(now_ms) - t0 ))
    if [ "$failed" -gt 0 ]; then
        log "$rt: $failed of $M concurrent pod starts failed:"
        cat "$W"/pods/"$rt"-many-*.err >&2
        R[$rt,many]="${R[$rt,many]} ($failed failed)"
    fi
    sleep 1
    R[$rt,running]=$("$ctl" -r "$ep" ps -q -s running | grep -c . || true)
    R[$rt,rss]=$(kb "$dpid" VmRSS)
    shims=$(shim_pids "$sock" | tr '\n' ' ')
    read -r "R[$rt,shim_pss]" "R[$rt,shims]" < <(tr ' ' '\n' <<<"$shims" | sum_pss)
    # shellcheck disable=SC2086 # one pid per word
    read -r "R[$rt,pause_pss]" "R[$rt,pauses]" < <(sandbox_pids $shims | sum_pss)
}

remove_all() { # ENDPOINT RUNTIME
    local t0
    t0=$(now_ms)
    "$ctl" -r "$1" rmp -a -f >/dev/null
    R[$2,rmall]=$(( $(now_ms) - t0 ))
}

start_limpetd
"$ctl" -r "unix://$LSOCK" pull "$IMAGE" >/dev/null
start_containerd
"$ctl" -r "unix://$CSOCK" pull "$IMAGE" >/dev/null
"$ctl" -r "unix://$CSOCK" pull "$PAUSE" >/dev/null

# Single pods: the two runtimes interleaved pod by pod, so that drift hits both alike.
log "$N pods one by one on each (after one warm-up)"
for i in $(seq 0 "$N"); do
    one_pod limpetd "unix://$LSOCK" "$i"
    one_pod containerd "unix://$CSOCK" "$i"
done
for rt in limpetd containerd; do
    # shellcheck disable=SC2086 # one number per word
    read -r "R[$rt,med]" "R[$rt,p90]" < <(stats ${R[$rt,lat]})
    for k in runp create start rm; do R[$rt,$k]=$(median_of "$rt" "$k"); done
done

# --- limpetd: M pods, then SIGKILL and re-attach
many limpetd "unix://$LSOCK" "$LSOCK" "$limpetd_pid"
log "limpetd: SIGKILL with $M pods running, relaunch"
kill -9 "$limpetd_pid"; wait "$limpetd_pid" 2>/dev/null || true
t0=$(now_ms)
launch_limpetd
R[reattach]=timeout
while [ $(( $(now_ms) - t0 )) -lt 30000 ]; do
    n=$("$ctl" -r "unix://$LSOCK" -t 1s pods -q -s ready 2>/dev/null | grep -c . || true)
    if [ "$n" -eq "$M" ]; then R[reattach]=$(( $(now_ms) - t0 )); break; fi
    alive "$limpetd_pid" || { log "limpetd exited on relaunch"; tail -20 "$LD/log" >&2; exit 1; }
done
line=$(grep 're-attached' "$LD/log" | tail -1 || true)
R[reattach_log]=$(grep -o 'elapsed_ms: [0-9]*' <<<"$line" | awk '{print $2}' || true)
log "limpetd: ${line:-no re-attached line}"
sleep 1
R[limpetd,running_after]=$("$ctl" -r "unix://$LSOCK" ps -q -s running | grep -c . || true)
R[limpetd,rss_after]=$(kb "$limpetd_pid" VmRSS)
remove_all "unix://$LSOCK" limpetd
stop_pid "$limpetd_pid"

# --- containerd: M pods
many containerd "unix://$CSOCK" "$CSOCK" "$containerd_pid"
remove_all "unix://$CSOCK" containerd
stop_pid "$containerd_pid"

# ---- table --------------------------------------------------------------------------------
mark() { if [ "$1" = 1 ]; then echo ✓; else echo ✗; fi; }
L=limpetd C=containerd
ok_start=$(( ${R[$L,med]} * 2 <= ${R[$C,med]} ))
ok_rss=$(( ${R[$L,rss]} * 4 <= ${R[$C,rss]} ))
ok_reattach=0
if [ "${R[reattach]}" != timeout ] && [ "${R[reattach]}" -lt 100 ]; then ok_reattach=1; fi
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "containerd $(containerd --version | awk '{print $3}') (CRI, Go shim), limpetd $("$limpetd" --version | awk '{print $2}'), runc $(runc --version | awk 'NR==1 {print $3}'), N=$N, M=$M, $(nproc) cores"
echo
echo "| | limpetd | containerd | target | |"
echo "|---|---:|---:|---|---|"
echo "| runp + create + start, median (ms) | ${R[$L,med]} | ${R[$C,med]} | ≤ ½ containerd | $(mark "$ok_start") |"
echo "| runp + create + start, p90 (ms) | ${R[$L,p90]} | ${R[$C,p90]} | | |"
echo "| runp / create / start, medians (ms) | ${R[$L,runp]} / ${R[$L,create]} / ${R[$L,start]} | ${R[$C,runp]} / ${R[$C,create]} / ${R[$C,start]} | | |"
echo "| stopp + rmp one pod, median (ms) | ${R[$L,rm]} | ${R[$C,rm]} | | |"
echo "| $M pods started concurrently (ms) | ${R[$L,many]} | ${R[$C,many]} | | |"
echo "| containers running after it | ${R[$L,running]} | ${R[$C,running]} | | |"
echo "| daemon RSS, $M pods (MiB) | $(mib "${R[$L,rss]}") | $(mib "${R[$C,rss]}") | ≤ ¼ containerd | $(mark "$ok_rss") |"
echo "| shims, total PSS (MiB) | $(mib "${R[$L,shim_pss]}") (${R[$L,shims]} shims) | $(mib "${R[$C,shim_pss]}") (${R[$C,shims]} shims) | | |"
echo "| pod sandbox processes, total PSS (MiB) | $(mib "${R[$L,pause_pss]}") (${R[$L,pauses]} procs) | $(mib "${R[$C,pause_pss]}") (${R[$C,pauses]} procs) | | |"
echo "| re-attach: relaunch after SIGKILL to \`pods\` listing $M ready (ms) | ${R[reattach]} | - | < 100 ms | $(mark "$ok_reattach") |"
echo "| limpetd's logged \`elapsed_ms\` (reconcile) | ${R[reattach_log]:-n/a} | - | | |"
echo "| containers running / daemon RSS after re-attach | ${R[$L,running_after]} / $(mib "${R[$L,rss_after]}") MiB | - | | |"
echo "| remove $M pods (\`rmp -a -f\`, ms) | ${R[$L,rmall]} | ${R[$C,rmall]} | | |"
echo
echo "Each pod: RunPodSandbox, CreateContainer (busybox \`sleep 3600\`), StartContainer through"
echo "three limpetctl runs (ImageStatus before CreateContainer, as crictl does). limpetd's"
echo "sandbox is its shim's built-in pause; containerd's a busybox image idling in sh + sleep."
