#!/bin/bash
# Builds a small OCI image archive from the host's static busybox, with no network:
# umoci lays out an empty image, busybox and one symlink per applet form the single layer.
# Usage: build-busybox-image.sh OUT.tar
set -euo pipefail

out=${1:?usage: build-busybox-image.sh OUT.tar}
busybox=${BUSYBOX:-/bin/busybox}

for tool in umoci tar "$busybox"; do
    command -v "$tool" >/dev/null || { echo "build-busybox-image: missing $tool" >&2; exit 1; }
done
# A dynamically linked busybox would need the host's libc inside the image.
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-busybox-image: $busybox is not statically linked (install busybox-static)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/limpet-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs

mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$rootfs/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
# --list-full gives each applet's conventional directory (bin/sh, usr/bin/env, ...).
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$rootfs/etc/group"

umoci repack --image "$layout:latest" "$work/bundle" >/dev/null
# The platform must match the host, or containerd will not unpack it for `ctr run`.
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac
umoci config --image "$layout:latest" --os linux --architecture "$arch" \
    --config.cmd /bin/sh --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci gc --layout "$layout"

mkdir -p "$(dirname "$out")"
tar -C "$layout" -cf "$out.tmp.$$" .
mv -f "$out.tmp.$$" "$out"
