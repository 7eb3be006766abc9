# Shared by the load scripts (sourced): the outrigger build, a scratch folder with its clean-up,
# tool and port checks, and the per-process CPU and memory readings.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d); chmod 755 "$WORK"; PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill "$p" 2>/dev/null || true; }; done; sleep 0.3
            for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p" 2>/dev/null || true; }; done
            wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# require "apt packages to suggest" tool...
require() { local hint=$1; shift
  for t in "$@"; do command -v "$t" >/dev/null || { echo "missing $t: apt-get install $hint" >&2; exit 1; }; done; }
# ports_free port...
ports_free() { for p in "$@"; do ss -ltn | grep -q ":$p " && { echo "port $p is taken" >&2; exit 1; }; done; return 0; }
# OUTRIGGER_BIN measures a given binary (e.g. docker/pgo-build.sh's) instead of building one.
build_outrigger() { if [ -n "${OUTRIGGER_BIN:-}" ]; then BIN=$OUTRIGGER_BIN; return; fi
                    (cd "$ROOT" && cargo build --release --quiet); BIN=$ROOT/target/release/outrigger; }

# A proxy's processes (itself and its workers), their CPU ticks, peak and current RSS in KiB.
procs() { echo "$1"; ps -o pid= --ppid "$1" 2>/dev/null || true; }
cpu_ticks() { local t=0; for p in $(procs "$1"); do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kib() { local t=0; for p in $(procs "$1"); do [ -r /proc/$p/status ] && t=$((t + $(awk '/VmHWM/{print $2}' /proc/$p/status))); done; echo $t; }
rss_now() { local t=0; for p in $(procs "$1"); do [ -r /proc/$p/status ] && t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)
