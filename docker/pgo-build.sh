#!/usr/bin/env bash
# A profile-guided (PGO) release build of outrigger: what the container image ships.
#
#   docker/pgo-build.sh        -> target/pgo/release/outrigger (the path is printed last)
#   OUTRIGGER_STATIC=1 docker/pgo-build.sh
#                              -> a statically linked one (what the image ships), under
#                                 target/pgo/x86_64-unknown-linux-gnu/release/
#   docker/pgo-build.sh --path prints where the binary goes, and builds nothing.
#
# Why: under callgrind's cache and branch simulation, most of a plain build's extra CPU per
# request over HAProxy is instruction-cache misses (hyper's and tokio's generic code spread over
# many pages), not instructions. With a profile LLVM lays the hot paths out together and
# inlines along them: 33,762 -> 26,244 instructions and 2,152 -> 1,192 I1 misses per keep-alive
# HTTP/1.1 request (README, Performance).
#
# Steps: an instrumented build; a short training run through the bundled demo (`outrigger
# demo`: its own upstreams, 127.0.0.1:15001) with keep-alive and new-connection HTTP/1.1 (wrk)
# and h2c (h2load); then the build that uses the merged profile. Needs wrk, h2load (Debian:
# wrk nghttp2-client), curl, and the llvm-profdata of rustc's LLVM: rustup's
# (`rustup component add llvm-tools-preview`) or Debian's (`apt-get install llvm-NN`, NN from
# `rustc -vV`). Uses ports 15001, 9901 and 18081-18083 on 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Static: glibc linked in (crt-static), for an explicit target so build scripts and proc macros
# stay dynamic. The binary then needs nothing from the image but itself. getrandom calls the
# getrandom(2) system call directly: in a static binary its run-time probe for the libc
# function fails and it would fall back to opening /dev/urandom. (Same flags: build-image.sh.)
STATIC_FLAGS=""; TARGET_ARGS=(); OUT=target/pgo/release/outrigger; GEN=target/pgo-gen/release/outrigger
if [ "${OUTRIGGER_STATIC:-0}" = 1 ]; then
  STATIC_FLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
  TARGET_ARGS=(--target x86_64-unknown-linux-gnu)
  OUT=target/pgo/x86_64-unknown-linux-gnu/release/outrigger
  GEN=target/pgo-gen/x86_64-unknown-linux-gnu/release/outrigger
fi
if [ "${1:-}" = --path ]; then echo "$ROOT/$OUT"; exit 0; fi
for t in wrk h2load curl; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install wrk nghttp2-client curl" >&2; exit 1; }
done
LLVM=$(rustc -vV | awk '/LLVM version/ {split($3, v, "."); print v[1]}')
PROFDATA=""
for c in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata "llvm-profdata-$LLVM" \
         "/usr/lib/llvm-$LLVM/bin/llvm-profdata"; do
  if command -v "$c" >/dev/null 2>&1; then PROFDATA=$c; break; fi
done
[ -n "$PROFDATA" ] || { echo "missing llvm-profdata for LLVM $LLVM: rustup component add llvm-tools-preview, or apt-get install llvm-$LLVM" >&2; exit 1; }

PROFILES=$ROOT/target/pgo/profiles
rm -rf "$PROFILES"; mkdir -p "$PROFILES"
echo "pgo: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$PROFILES $STATIC_FLAGS" \
  cargo build --release --locked --bin outrigger --target-dir target/pgo-gen "${TARGET_ARGS[@]}"

echo "pgo: training" >&2
"$GEN" demo > "$ROOT/target/pgo/training.log" 2>&1 &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:15001/ && break; sleep 0.1; done
curl -sf -o /dev/null http://127.0.0.1:15001/ || { echo "pgo: the demo did not start" >&2; cat "$ROOT/target/pgo/training.log" >&2; exit 1; }
wrk -t1 -c64 -d6s http://127.0.0.1:15001/ > /dev/null
wrk -t1 -c64 -d2s -H "Connection: close" http://127.0.0.1:15001/ > /dev/null
h2load -c16 -m4 -t1 -D3 http://127.0.0.1:15001/ > /dev/null
# The profile is written when the process exits cleanly.
kill -TERM $proxy; wait $proxy || true
trap - EXIT

"$PROFDATA" merge -o "$ROOT/target/pgo/outrigger.profdata" "$PROFILES"
echo "pgo: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$ROOT/target/pgo/outrigger.profdata $STATIC_FLAGS" \
  cargo build --release --locked --bin outrigger --target-dir target/pgo "${TARGET_ARGS[@]}"
echo "$ROOT/$OUT"
