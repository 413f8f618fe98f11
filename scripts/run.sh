#!/bin/bash
# scripts/run.sh [start|stop|status]
# Installs what limpet needs, builds limpetd, limpetctl and the shim (release), starts limpetd
# with its built-in default config (root /var/lib/limpet, socket /run/limpet/limpetd.sock,
# CNI configs in /etc/cni/net.d) and a local docker-registry on $LIMPET_REGISTRY (default
# 127.0.0.1:5000) seeded with a busybox image built from the host's static busybox, then pulls
# it and runs a pod with one container, showing the pod, its IP and the container's log.
# Without any CNI config, a bridge network (limpet0, 10.89.0.0/24) is written to
# /etc/cni/net.d/10-limpet.conflist first. Everything keeps running; `scripts/run.sh stop`
# removes the pod and stops both. Logs and pid files: $LIMPET_RUN_DIR (default /tmp/limpet-run).
set -euo pipefail

cd "$(dirname "$0")/.."
run_dir=${LIMPET_RUN_DIR:-/tmp/limpet-run}
registry=${LIMPET_REGISTRY:-127.0.0.1:5000}
socket=/run/limpet/limpetd.sock

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
alive() { [ -f "$run_dir/$1.pid" ] && kill -0 "$(cat "$run_dir/$1.pid")" 2>/dev/null; }

stop() {
    if alive limpetd && [ -x "$limpetctl" ]; then
        "$limpetctl" rmp --all --force >/dev/null 2>&1 || true
    fi
    for name in limpetd registry; do
        if alive "$name"; then
            kill "$(cat "$run_dir/$name.pid")"
            for _ in $(seq 50); do alive "$name" || break; sleep 0.1; done
            echo "stopped $name"
        fi
        rm -f "$run_dir/$name.pid"
    done
}

target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory 2>/dev/null || echo target)/release
limpetd=$target/limpetd
limpetctl=$target/limpetctl

case ${1:-start} in
    stop) stop; exit 0 ;;
    status)
        for name in limpetd registry; do
            if alive "$name"; then echo "$name: running (pid $(cat "$run_dir/$name.pid"))"; else echo "$name: stopped"; fi
        done
        exit 0 ;;
    start) ;;
    *) sed -n '2,/^set/s/^# \{0,1\}//p' "$0" | sed '$d' >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (limpetd unpacks images as root)" >&2; exit 1; }
bash scripts/setup.sh
cargo build --release -p limpetd -p containerd-shim-limpet-v2
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release
limpetd=$target/limpetd
limpetctl=$target/limpetctl
mkdir -p "$run_dir"

# A pod network, unless the host has one.
if ! ls /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist >/dev/null 2>&1; then
    mkdir -p /etc/cni/net.d
    cat > /etc/cni/net.d/10-limpet.conflist <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "limpet",
  "plugins": [
    {"type": "bridge", "bridge": "limpet0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "subnet": "10.89.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    echo "wrote /etc/cni/net.d/10-limpet.conflist (bridge limpet0, 10.89.0.0/24)"
fi

# The registry, with a busybox image pushed once.
if ! alive registry; then
    mkdir -p "$run_dir/registry"
    cat > "$run_dir/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $run_dir/registry/data
  delete:
    enabled: true
http:
  addr: $registry
EOF
    docker-registry serve "$run_dir/registry/config.yml" > "$run_dir/registry.log" 2>&1 &
    echo $! > "$run_dir/registry.pid"
    for _ in $(seq 50); do curl -fs "http://$registry/v2/" >/dev/null && break; sleep 0.1; done
    curl -fs "http://$registry/v2/" >/dev/null || { echo "registry did not start:" >&2; tail -3 "$run_dir/registry.log" >&2; exit 1; }
fi
if ! curl -fs "http://$registry/v2/busybox/tags/list" | grep -q latest; then
    bash scripts/build-busybox-image.sh "$run_dir/busybox.tar"
    skopeo copy --quiet --dest-tls-verify=false "oci-archive:$run_dir/busybox.tar:latest" "docker://$registry/busybox:latest"
fi

# limpetd with no config file: every key at its default (`limpetd config default`).
if ! alive limpetd; then
    "$limpetd" > "$run_dir/limpetd.log" 2>&1 &
    echo $! > "$run_dir/limpetd.pid"
    for _ in $(seq 100); do [ -S "$socket" ] && break; alive limpetd || break; sleep 0.1; done
    [ -S "$socket" ] || { echo "limpetd did not start:" >&2; tail -5 "$run_dir/limpetd.log" >&2; exit 1; }
fi

say limpetctl version
"$limpetctl" version
say limpetctl pull "$registry/busybox:latest"
"$limpetctl" pull "$registry/busybox:latest"
say limpetctl images
"$limpetctl" images

# A pod and a container, in the JSON crictl takes.
cat > "$run_dir/pod.json" <<EOF
{"metadata": {"name": "hello", "namespace": "default", "uid": "hello-uid"},
 "hostname": "hello", "log_directory": "/var/log/pods/default_hello",
 "linux": {"cgroup_parent": "/limpet-demo"}}
EOF
cat > "$run_dir/container.json" <<EOF
{"metadata": {"name": "greeter"}, "image": {"image": "$registry/busybox:latest"},
 "command": ["/bin/sh", "-c", "echo hello from \$(hostname), \$(ip -4 -o addr show eth0 | awk '{print \$4}'); while sleep 5; do date; done"],
 "log_path": "greeter/0.log"}
EOF
"$limpetctl" rmp --all --force >/dev/null 2>&1 || true
say limpetctl runp "$run_dir/pod.json"
pod=$("$limpetctl" runp "$run_dir/pod.json")
echo "$pod"
say limpetctl create "${pod:0:13}" "$run_dir/container.json" "$run_dir/pod.json"
ctr=$("$limpetctl" create "$pod" "$run_dir/container.json" "$run_dir/pod.json")
echo "$ctr"
say limpetctl start "${ctr:0:13}"
"$limpetctl" start "$ctr"
sleep 1
say limpetctl pods
"$limpetctl" pods
say limpetctl ps
"$limpetctl" ps
say limpetctl logs "${ctr:0:13}"
"$limpetctl" logs "$ctr"
say "echo 'typed into stdin' | limpetctl exec -i ${ctr:0:13} sh -c 'cat; ls /'"
echo 'typed into stdin' | "$limpetctl" exec -i "$ctr" sh -c 'cat; ls /'
echo
echo "limpetd (pid $(cat "$run_dir/limpetd.pid")) serves CRI on unix://$socket; logs in $run_dir."
echo "Try: $limpetctl logs -f ${ctr:0:13}; $limpetctl exec -it ${ctr:0:13} sh; $limpetctl port-forward ${pod:0:13} 8080:80; $limpetctl inspectp ${pod:0:13}; $limpetctl stats"
echo "Stop everything with: scripts/run.sh stop"
