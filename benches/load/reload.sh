#!/usr/bin/env bash
# Reload under load: requests/s through outrigger with no reloads vs one POST /reload per
# second, alternating rounds (so drift on a shared machine hits both), same pinning as run.sh.
#
#   benches/load/reload.sh [-r ROUNDS] [-d SECONDS]
#
# Needs Debian's nginx and wrk; only 127.0.0.1. Prints the median req/s of each mode and the
# ratio. Each reload alternates between two configs that route / to different (equal) clusters,
# so every reload really swaps the route table.
set -euo pipefail
ROUNDS=3 DURATION=10
while getopts "r:d:" o; do case $o in r) ROUNDS=$OPTARG;; d) DURATION=$OPTARG;; *) exit 2;; esac; done
source "$(dirname "$0")/common.sh"
require "nginx wrk curl" nginx wrk taskset curl
build_outrigger
PORT=19200 B1=19281 B2=19282 ADMIN=19290
ports_free $PORT $B1 $B2 $ADMIN
printf ok > "$WORK/ok"; chmod 644 "$WORK/ok"
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; root $WORK; location = / { try_files /ok =404; } } }
CONF
taskset -c 0 nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)
config() {
  cat > "$WORK/outrigger.yaml.tmp" <<CONF
server: { worker_threads: 1, watch_config: false }
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - { name: bench, address: "127.0.0.1:$PORT", routes: [{ match: { path_prefix: / }, cluster: $1 }] }
clusters:
  - { name: one, endpoints: [{address: "127.0.0.1:$B1"}, {address: "127.0.0.1:$B2"}] }
  - { name: two, endpoints: [{address: "127.0.0.1:$B1"}, {address: "127.0.0.1:$B2"}] }
CONF
  mv "$WORK/outrigger.yaml.tmp" "$WORK/outrigger.yaml"
}
config one
TOKIO_WORKER_THREADS=1 taskset -c 1 "$BIN" --config "$WORK/outrigger.yaml" 2>"$WORK/outrigger.log" & PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT/" >/dev/null   # warm-up

measure() { # mode -> req/s
  local reloader=""
  if [ "$1" = reloads ]; then
    ( i=0; while :; do sleep 1; i=$((i + 1)); if [ $((i % 2)) = 1 ]; then config two; else config one; fi
        curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'x-outrigger-admin: 1' "http://127.0.0.1:$ADMIN/reload" >> "$WORK/reload-codes"; done ) &
    reloader=$!
  fi
  taskset -c 0 wrk -t1 -c64 -d"$DURATION"s "http://127.0.0.1:$PORT/" > "$WORK/wrk.out"
  [ -n "$reloader" ] && { kill "$reloader" 2>/dev/null || true; wait "$reloader" 2>/dev/null || true; }
  if grep -q "Non-2xx\|Socket errors" "$WORK/wrk.out"; then echo "errors during $1:" >&2; grep "Non-2xx\|Socket errors" "$WORK/wrk.out" >&2; fi
  awk '/^Requests\/sec/{print $2}' "$WORK/wrk.out"
}
: > "$WORK/rows"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="none reloads"; else order="reloads none"; fi
  for m in $order; do v=$(measure "$m"); echo "$m $v" >> "$WORK/rows"; echo "  round $r $m: $v req/s" >&2; done
done
echo "# reload under load: outrigger pinned to CPU 1, wrk (64 connections) + nginx backend on CPU 0, $ROUNDS x ${DURATION}s per mode"
awk 'function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                     return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
     { if ($1 == "none") n[++a] = $2; else r[++b] = $2 }
     END { mn = median(n, a); mr = median(r, b)
           printf "| mode | req/s (median) |\n|---|---:|\n| no reloads | %.0f |\n| 1 reload per second | %.0f |\n", mn, mr
           printf "throughput with reloads / without: %.3f (loss %.1f%%)\n", mr / mn, (1 - mr / mn) * 100 }' "$WORK/rows"
echo "reloads answered: $(sort "$WORK/reload-codes" | uniq -c | tr '\n' ' ')"
