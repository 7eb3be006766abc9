#!/usr/bin/env bash
# Runs the image docker/build-image.sh made, from the image alone, as a container runtime
# would, and checks it: it becomes ready, proxies a request to an upstream on the host, runs as
# uid 65532 on a read-only root, and is smaller than 15 MB. CI runs this (.ci/run).
#
# No container engine runs in CI's sandbox (podman's crun cannot set rlimits there), so the
# OCI layout is unpacked with umoci and its entrypoint, user and environment, read from the
# image config, are run with chroot in a mount namespace of their own: the unpacked root
# bind-mounted read-only, /proc mounted and the config directory mounted over
# /etc/outrigger (as a ConfigMap is), everything else as the image has it (no /dev, no
# /etc/hosts or resolv.conf: the binary needs none of them). Needs root,
# umoci, jq, python3 and curl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
OCI=target/image/oci
[ -d "$OCI" ] || { echo "image-test: no $OCI; run docker/build-image.sh first" >&2; exit 1; }
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "image-test: FAILED: $*" >&2; if [ -f "$WORK/proxy.log" ]; then tail -n 20 "$WORK/proxy.log" >&2; fi; exit 1; }

# Size: the compressed layers a node pulls, and the unpacked root.
manifest=$(jq -r '.manifests[0].digest' "$OCI/index.json" | sed 's/sha256://')
layers=$(jq '[.layers[].size] | add' "$OCI/blobs/sha256/$manifest")
umoci unpack --image "$OCI:$VERSION" "$WORK/bundle" >/dev/null
rootfs=$WORK/bundle/rootfs
unpacked=$(du -sb "$rootfs" | cut -f1)
printf 'image-test: image size %.1f MB compressed (%d bytes in layers), %.1f MB unpacked\n' \
  "$(echo "$layers / 1000000" | bc -l)" "$layers" "$(echo "$unpacked / 1000000" | bc -l)"
[ "$layers" -lt 15000000 ] || fail "the image is $layers bytes, over the 15 MB target"
[ "$unpacked" -lt 15000000 ] || fail "the unpacked image is $unpacked bytes, over 15 MB"

# What the image says to run, and as whom (umoci writes it as an OCI runtime config).
cfg=$WORK/bundle/config.json
uid=$(jq -r '.process.user.uid' "$cfg"); gid=$(jq -r '.process.user.gid' "$cfg")
[ "$uid" = 65532 ] && [ "$gid" = 65532 ] || fail "the image runs as $uid:$gid, not 65532:65532"
mapfile -t argv < <(jq -r '.process.args[]' "$cfg")
mapfile -t envs < <(jq -r '.process.env[]' "$cfg")
[ -x "$rootfs${argv[0]}" ] || fail "the entrypoint ${argv[0]} is not in the image"
file_out=$(file -b "$rootfs${argv[0]}" || true)
case "$file_out" in *"static"*) ;; *) fail "the binary is not statically linked: $file_out" ;; esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); LISTEN=$(free_port); ADMIN=$(free_port)
mkdir -p "$WORK/www" "$WORK/config"
echo "hello from the host upstream" > "$WORK/www/index.html"
python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$WORK/www" > "$WORK/upstream.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$UP/" && break; sleep 0.1; done
# The image's own config reads its addresses from the environment; this one is what a
# ConfigMap would mount. The endpoint is a name, resolved without the C library.
cat > "$WORK/config/outrigger.yaml" <<YAML
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - name: inbound
    address: "127.0.0.1:$LISTEN"
    routes: [{ match: { path_prefix: / }, cluster: app }]
clusters:
  - name: app
    endpoints: [{ address: "localhost:$UP" }]
YAML
chmod -R a+rX "$WORK/config"

# A runtime creates the mount points it needs in the root, as runc does.
mkdir -p "$rootfs/proc"
env -i "${envs[@]}" unshare --mount --propagation private -- sh -c '
  set -e
  root=$1; conf=$2; shift 2
  mount --bind "$root" "$root"
  mount --bind "$conf" "$root/etc/outrigger"
  mount -t proc proc "$root/proc"
  mount -o remount,bind,ro "$root/etc/outrigger"
  mount -o remount,bind,ro "$root"
  exec chroot --userspec=65532:65532 "$root" "$@"
' sh "$rootfs" "$WORK/config" "${argv[@]}" --log-format json > "$WORK/proxy.log" 2>&1 &
proxy=$!
pids+=($proxy)

ready=""
for _ in $(seq 100); do
  if curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready"; then ready=1; break; fi
  kill -0 "$proxy" 2>/dev/null || fail "the container exited"
  sleep 0.1
done
[ -n "$ready" ] || fail "/ready did not answer 200 within 10 s"
body=$(curl -sS "http://127.0.0.1:$LISTEN/" 2>&1) || fail "the request through the proxy failed: $body"
[ "$body" = "hello from the host upstream" ] || fail "proxied body was: $body"

# The process chroot exec'd into: its uid, and a root that refuses writes.
pid=$proxy
grep -q "^Uid:[[:space:]]*65532[[:space:]]65532[[:space:]]65532[[:space:]]65532" "/proc/$pid/status" \
  || fail "not running as 65532: $(grep ^Uid "/proc/$pid/status")"
[ "$(readlink "/proc/$pid/exe")" = "$rootfs/usr/local/bin/outrigger" ] || fail "pid $pid is $(readlink "/proc/$pid/exe")"
if touch "/proc/$pid/root/write-test" 2>/dev/null; then fail "the root filesystem is writable"; fi
awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -q '^ro' || fail "/ is not mounted read-only"
version=$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep '^outrigger_build_info')
case "$version" in *'linkage="static"'*) ;; *) fail "build info: $version" ;; esac
while IFS= read -r line; do
  echo "$line" | jq -e . >/dev/null 2>&1 || fail "a log line is not JSON: $line"
done < "$WORK/proxy.log"
echo "image-test: ready, proxied a request, uid 65532, read-only root; $version"
