#!/usr/bin/env bash
# L4: outrigger `protocol: tcp` beside HAProxy `mode tcp`, one run, same pinning as run.sh
# (proxy alone on CPU 1 with one worker; load and backends on CPU 0).
#
#   benches/load/tcp.sh [-r ROUNDS] [-d SECONDS]
#
# Measures, per candidate and round (order rotating):
#   - bulk throughput: iperf3, one stream, through the proxy to one iperf3 server;
#   - connection rate: wrk with `Connection: close` through the proxy to an nginx backend, so
#     every request is a new client connection and a new upstream connection;
#   - peak RSS of a fresh proxy process while 1000 idle client connections are held open.
# Needs Debian's haproxy, nginx, wrk, iperf3 and python3; only 127.0.0.1.
set -euo pipefail
ROUNDS=3 DURATION=8
while getopts "r:d:" o; do case $o in r) ROUNDS=$OPTARG;; d) DURATION=$OPTARG;; *) exit 2;; esac; done
source "$(dirname "$0")/common.sh"
require "haproxy nginx wrk iperf3" haproxy nginx wrk iperf3 python3 taskset
build_outrigger
PORT=19300 HTTPB=19381 IPERF=19382 ADMIN=19390
ports_free $PORT $HTTPB $IPERF $ADMIN
printf ok > "$WORK/ok"; chmod 644 "$WORK/ok"
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log stderr error;
events { worker_connections 8192; }
http { access_log off; server { listen 127.0.0.1:$HTTPB backlog=4096; root $WORK; location = / { try_files /ok =404; } } }
CONF
taskset -c 0 nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)
taskset -c 0 iperf3 -s -p $IPERF >/dev/null 2>&1 & PIDS+=($!)

config() { # candidate backend-port
  case $1 in
    outrigger) cat > "$WORK/o.yaml" <<CONF
server: { worker_threads: 1, watch_config: false }
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - { name: l4, address: "127.0.0.1:$PORT", protocol: tcp, cluster: b }
clusters:
  - { name: b, endpoints: [{address: "127.0.0.1:$2"}] }
CONF
    ;;
    haproxy) printf 'global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nlisten l4\n  bind 127.0.0.1:%s\n  server b 127.0.0.1:%s\n' "$PORT" "$2" > "$WORK/h.cfg" ;;
  esac
}
start() {
  case $1 in
    outrigger) TOKIO_WORKER_THREADS=1 taskset -c 1 "$BIN" --config "$WORK/o.yaml" 2>/dev/null & ;;
    haproxy) taskset -c 1 haproxy -db -f "$WORK/h.cfg" 2>/dev/null & ;;
  esac
  PROXY=$!; PIDS+=("$PROXY")
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}
stop() { kill "$PROXY" 2>/dev/null || true; wait "$PROXY" 2>/dev/null || true
         for _ in $(seq 100); do ss -ltn | grep -q ":$PORT " || return 0; sleep 0.05; done; }
: > "$WORK/rows"
for r in $(seq "$ROUNDS"); do
  order="outrigger haproxy"; [ $((r % 2)) = 0 ] && order="haproxy outrigger"
  for c in $order; do
    config "$c" $IPERF; start "$c"
    c0=$(cpu_ticks "$PROXY")
    gbps=$(taskset -c 0 timeout $((DURATION + 10)) iperf3 -c 127.0.0.1 -p $PORT -t "$DURATION" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))')
    c1=$(cpu_ticks "$PROXY"); bytes_cpu=$(( c1 - c0 )); stop
    config "$c" $HTTPB; start "$c"
    taskset -c 0 wrk -t1 -c32 -d"$DURATION"s -H "Connection: close" "http://127.0.0.1:$PORT/" > "$WORK/wrk.out"
    cps=$(awk '/^Requests\/sec/{printf "%d", $2}' "$WORK/wrk.out")
    errs=$(awk '/Socket errors/{gsub(",",""); e=$4+$6+$8+$10} /Non-2xx/{e+=$NF} END{print e+0}' "$WORK/wrk.out")
    stop; start "$c"   # a fresh process, so the RSS below is the idle connections' alone
    python3 - "$PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
time.sleep(1.5)
for c in conns: c.close()
PY
    idle_rss=$(rss_kib "$PROXY"); stop
    echo "$r $c $gbps $bytes_cpu $cps $errs $idle_rss" >> "$WORK/rows"
    echo "  round $r $c: ${gbps} Gbit/s, ${cps} conn/s (errors $errs), peak RSS ${idle_rss} KiB" >&2
  done
done
echo "# L4 benchmark: proxy pinned to CPU 1 (1 worker), load + backends on CPU 0, $ROUNDS rounds x ${DURATION}s"
echo "versions: $("$BIN" --version), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
echo "| candidate | bulk Gbit/s | proxy CPU s per GB | new connections/s | errors | peak RSS MiB, 1000 idle conns | bulk vs haproxy | conn/s vs haproxy |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
awk -v D="$DURATION" -v HZ="$HZ" '
  function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                   return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  { g[$2,$1] = $3; cpu[$2,$1] = ($4 / HZ) / ($3 * D / 8); c[$2,$1] = $5; e[$2] += $6; m[$2,$1] = $7 / 1024; R = ($1 > R ? $1 : R) }
  END { split("outrigger haproxy", cs, " ")
        for (k = 1; k <= 2; k++) { n = cs[k]
          for (r = 1; r <= R; r++) { a[r] = g[n,r]; b[r] = cpu[n,r]; x[r] = c[n,r]; y[r] = m[n,r]; q[r] = g[n,r] / g["haproxy",r]; w[r] = c[n,r] / c["haproxy",r] }
          printf "| %s | %.2f | %.3f | %d | %d | %.1f | %.2f | %.2f |\n", n, median(a,R), median(b,R), median(x,R), e[n], median(y,R), median(q,R), median(w,R) } }' "$WORK/rows"
