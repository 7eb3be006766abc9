#!/usr/bin/env bash
# Runs the README's Install section, command by command, as a new user would, and checks what
# each one left behind. CI runs this (.ci/run).
#
# The section's `export REGISTRY=...` line is replaced by a registry of our own: Debian's
# docker-registry (the CNCF distribution registry) on 127.0.0.1, an ephemeral port, storage
# in a scratch folder, plain HTTP marked insecure for skopeo by a registries.conf.d drop-in
# removed on exit. Every other command runs as written except `kubectl apply`, which needs a cluster: CI
# has none, so the manifest it would apply is checked offline instead (the image reference
# points at the pushed image, kubernetes-validate passes, and the tests check each Pod
# Security rule on the same files). Needs root, python3, curl, skopeo, docker-registry, kubectl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
WORK=$(mktemp -d)
registry_pid=""; dropin=""
cleanup() {
  if [ -n "$dropin" ]; then rm -f "$dropin"; fi
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }

# The commands: the first ```sh block under "## Install", comments and blank lines dropped.
python3 - README.md > "$WORK/commands" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
for line in block.splitlines():
    line = line.split("  #", 1)[0].strip()
    if line and not line.startswith("#"):
        print(line)
EOF
[ -s "$WORK/commands" ] || fail "no sh block in the README's Install section"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<EOF
version: 0.1
storage: { filesystem: { rootdirectory: $WORK/registry } }
http: { addr: 127.0.0.1:$port }
EOF
docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" || { cat "$WORK/registry.log" >&2; fail "the registry did not start"; }
# skopeo 1.9 reads no registries.conf from the environment: a drop-in, removed on exit.
dropin=/etc/containers/registries.conf.d/zz-outrigger-install-test-$port.conf
mkdir -p "$(dirname "$dropin")"
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" > "$dropin"
export REGISTRY=127.0.0.1:$port

ran=0; applied=""
while IFS= read -r cmd; do
  case "$cmd" in
    "export REGISTRY="*) echo "install-test: \$ $cmd  -> REGISTRY=$REGISTRY (a local registry)"; continue ;;
    "kubectl apply "*) applied=$cmd; echo "install-test: \$ $cmd  -> not run: no cluster here; checked offline below"; continue ;;
  esac
  echo "install-test: \$ $cmd"
  bash -euo pipefail -c "$cmd" || fail "\`$cmd\` exited $?"
  ran=$((ran + 1))
done < "$WORK/commands"
[ -n "$applied" ] || fail "the Install section has no kubectl apply"

# The push landed: the registry serves the manifest the OCI layout holds.
local_digest=$(jq -r '.manifests[0].digest' target/image/oci/index.json)
remote_digest=$(skopeo inspect --format '{{.Digest}}' "docker://$REGISTRY/outrigger:$VERSION")
[ "$local_digest" = "$remote_digest" ] || fail "pushed $remote_digest, built $local_digest"
echo "install-test: $REGISTRY/outrigger:$VERSION is $remote_digest"

# What kubectl apply would get: the file it names, pointing at the pushed image, valid.
file=$(echo "$applied" | sed -n 's/.* -f \([^ ]*\).*/\1/p')
[ -f "$file" ] || fail "the manifest \`$applied\` applies ($file) was not written"
grep -q "image: $REGISTRY/outrigger:$VERSION" "$file" || fail "$file does not use $REGISTRY/outrigger:$VERSION"
! grep -q "ghcr.io/example/outrigger" "$file" || fail "$file still names the example image"
kinds=$(python3 -c 'import sys, yaml; print(" ".join(sorted(d["kind"] for d in yaml.safe_load_all(open(sys.argv[1])) if d)))' "$file")
[ "$kinds" = "ConfigMap Deployment PodMonitor Service" ] || fail "$file holds $kinds"
if command -v kubernetes-validate >/dev/null; then
  # PodMonitor is a CRD, with no schema in kubernetes-validate; the rest must pass strictly.
  python3 -c 'import sys, yaml; yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "PodMonitor"], open(sys.argv[2], "w"))' "$file" "$WORK/core.yaml"
  kubernetes-validate --strict "$WORK/core.yaml" > "$WORK/kv.log" 2>&1 || { cat "$WORK/kv.log" >&2; fail "kubernetes-validate"; }
fi
rm -f "$file"
echo "install-test: OK: $ran commands of the README's Install section ran; the manifest for \`kubectl apply\` checked offline"
