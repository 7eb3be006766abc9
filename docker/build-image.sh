#!/usr/bin/env bash
# Builds the outrigger image from docker/Dockerfile's final stage with a plain static release
# binary made here (no Docker engine needed: buildah, or docker if that is what you have), and
# writes it as an OCI layout you can push with skopeo or podman.
#
#   docker/build-image.sh [TAG]      TAG defaults to outrigger:<version>
#   OUTRIGGER_BINARY=FILE docker/build-image.sh   puts FILE (a static build) in the image instead
#     -> the image TAG in buildah's (or docker's) local store
#     -> target/image/oci, an OCI layout holding TAG's version as its tag
#   then, e.g.: skopeo copy oci:target/image/oci:0.1.0 docker://registry.example.com/outrigger:0.1.0
#
# The profile-guided build (docker/pgo-build.sh, ~20 minutes) is what `docker build -f
# docker/Dockerfile .` makes; this one is the plain build (about 20% more instructions per
# request, README "Performance").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
TAG=${1:-outrigger:$VERSION}
COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

mkdir -p docker/dist
if [ -n "${OUTRIGGER_BINARY:-}" ]; then
  # A static binary built elsewhere, e.g. the PGO one: OUTRIGGER_BINARY=$(docker/pgo-build.sh --path)
  echo "build-image: using $OUTRIGGER_BINARY" >&2
  cp "$OUTRIGGER_BINARY" docker/dist/outrigger
else
  echo "build-image: static release build" >&2
  # The flags of docker/pgo-build.sh's static build; it says why each.
  RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked --bin outrigger --target x86_64-unknown-linux-gnu
  cp target/x86_64-unknown-linux-gnu/release/outrigger docker/dist/outrigger
fi
CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA" ] || { echo "build-image: no $CA (Debian: apt-get install ca-certificates)" >&2; exit 1; }
cp "$CA" docker/dist/ca-certificates.crt

rm -rf target/image; mkdir -p target/image
if command -v buildah >/dev/null; then
  # vfs: works where overlay mounts are not allowed (CI sandboxes, rootless).
  B=(buildah --storage-driver vfs)
  "${B[@]}" bud --quiet --layers=false -f docker/Dockerfile --iidfile target/image/id \
    --build-arg BINARY_STAGE=prebuilt --build-arg GIT_COMMIT="$COMMIT" -t "$TAG" . >&2
  # By ID: a short TAG is stored as localhost/TAG, which push does not always resolve back.
  "${B[@]}" push --quiet "$(cat target/image/id)" "oci:$ROOT/target/image/oci:$VERSION" >&2
elif command -v docker >/dev/null; then
  docker build -f docker/Dockerfile --build-arg BINARY_STAGE=prebuilt \
    --build-arg GIT_COMMIT="$COMMIT" -t "$TAG" . >&2
  docker save "$TAG" -o target/image/docker-archive.tar
  echo "build-image: docker archive in target/image/docker-archive.tar" >&2
else
  echo "build-image: needs buildah (apt-get install buildah) or docker" >&2; exit 1
fi
echo "build-image: built $TAG" >&2
