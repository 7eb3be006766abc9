#!/usr/bin/env bash
# outrigger beside HAProxy and nginx, one run, same backend, same load, same CPU placement.
#
#   benches/load/run.sh [-r ROUNDS] [-d SECONDS] [-c CONNS] [SCENARIO...]
#   scenarios: h1 (wrk, keep-alive, 2-byte body; default), h1-16k, h2c (h2load 16x4 streams),
#              h1-close (a new client connection per request: wrk with `Connection: close`),
#              tls (h1 keep-alive over TLS 1.3 terminated by the proxy),
#              all (h1 h1-16k h1-close h2c tls, then benches/load/tcp.sh for TCP bulk),
#              latency (open loop: h2load at a constant 1000 req/s over 10 connections; median
#                       and p99 added over going to the backend directly),
#              memory (RSS: fresh and idle; holding 10,000 idle keep-alive client connections (6 s
#                      after the last one was answered);
#                      5 s after a 64-connection burst; HAProxy is left out here, as it cannot
#                      take 10,000 connections within this machine's 20,000 descriptor limit)
#
# Needs Debian's haproxy, nginx, wrk and nghttp2-client (it says which is missing), builds
# outrigger in release mode (or measures $OUTRIGGER_BIN, e.g. the PGO build of
# docker/pgo-build.sh), and uses only 127.0.0.1. Pinned: the proxy alone on CPU 1 with one
# worker; wrk/h2load and the nginx backend on CPU 0. Rounds rotate the candidates' order so a
# noisy minute hits all of them; the table shows medians and the paired ratio to HAProxy. Proxy
# CPU per request (utime+stime of the proxy's processes over the measured window) is the stable
# figure on shared machines; req/s swings between rounds.
set -euo pipefail
ROUNDS=3 DURATION=10 CONNS=64
while getopts "r:d:c:" o; do case $o in r) ROUNDS=$OPTARG;; d) DURATION=$OPTARG;; c) CONNS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND - 1)); SCENARIOS=("${@:-h1}")
if [ "${SCENARIOS[*]}" = all ]; then SCENARIOS=(h1 h1-16k h1-close h2c tls); RUN_TCP=1; fi
source "$(dirname "$0")/common.sh"
require "haproxy nginx wrk nghttp2-client" haproxy nginx wrk h2load taskset
build_outrigger
PORT=19100 B1=19181 B2=19182 ADMIN=19190
ports_free $PORT $B1 $B2 $ADMIN

# Backend: nginx on CPU 0, one worker, two ports.
head -c 16384 /dev/urandom > "$WORK/16k"; printf ok > "$WORK/ok"
chmod 755 "$WORK"; chmod 644 "$WORK/16k" "$WORK/ok"    # nginx workers run as nobody
# One self-signed certificate for every candidate's TLS listener (scenario tls).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/combined.pem"; chmod 644 "$WORK"/*.pem
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; root $WORK;
           location = / { try_files /ok =404; } location = /16k { try_files /16k =404; } } }
CONF
taskset -c 0 nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)

outrigger_conf() { # scenario
  local tls=""; [ "$1" = tls ] && tls=", tls: { cert: \"$WORK/cert.pem\", key: \"$WORK/key.pem\" }"
  cat > "$WORK/outrigger.yaml" <<CONF
server: { worker_threads: 1 }
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - { name: bench, address: "127.0.0.1:$PORT"$tls, routes: [{ match: { path_prefix: / }, cluster: b }] }
clusters:
  - { name: b, lb: round_robin, endpoints: [{address: "127.0.0.1:$B1"}, {address: "127.0.0.1:$B2"}] }
CONF
}
haproxy_conf() { # scenario
  local bind=""; [ "$1" = tls ] && bind=" ssl crt $WORK/combined.pem alpn http/1.1"
  cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$PORT$bind
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:$B1
  server s2 127.0.0.1:$B2
CONF
}   # haproxy detects the h2c preface on a plain bind
nginx_conf() { # nginx 1.22 speaks h2c only on an HTTP/2-only listen, so that is per scenario
  local h2="" ssl=""; [ "$1" = h2c ] && h2=" http2"
  [ "$1" = tls ] && ssl=" ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.3"
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log stderr error;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  upstream b { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 128; }
  server { listen 127.0.0.1:$PORT$h2$ssl;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
}

start() {
  case $1 in
    outrigger) TOKIO_WORKER_THREADS=1 taskset -c 1 "$BIN" --config "$WORK/outrigger.yaml" 2>"$WORK/outrigger.log" & ;;
    haproxy)   taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" & ;;
    nginx)     taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx.log" & ;;
  esac
  PROXY=$!; PIDS+=("$PROXY")
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return; sleep 0.05; done
  echo "$1 did not start" >&2; cat "$WORK/$1.log" >&2; exit 1
}
stop() { kill "$PROXY" 2>/dev/null || true; wait "$PROXY" 2>/dev/null || true
         for _ in $(seq 50); do ss -ltn | grep -q ":$PORT " || return 0; sleep 0.05; done; }

load() { # scenario seconds -> "ok_responses p50ms p99ms errors"
  case $1 in
    h1|h1-16k|h1-close|tls) local path=/ scheme=http hdr=(); [ "$1" = h1-16k ] && path=/16k
      [ "$1" = h1-close ] && hdr=(-H "Connection: close"); [ "$1" = tls ] && scheme=https
      taskset -c 0 wrk -t1 -c"$CONNS" -d"$2"s --latency "${hdr[@]}" "$scheme://127.0.0.1:$PORT$path" > "$WORK/wrk.out"
      awk '/requests in/{r=$1} /^ +50%/{p50=$2} /^ +99%/{p99=$2} /Non-2xx/{e+=$NF}
           /Socket errors/{gsub(",", ""); e+=$4+$6+$8+$10}
           function ms(v){ if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
           END{printf "%d %.3f %.3f %d\n", r-e, ms(p50), ms(p99), e}' "$WORK/wrk.out" ;;
    h2c) taskset -c 0 h2load -c16 -m4 -t1 -D"$2" "http://127.0.0.1:$PORT/" > "$WORK/h2.out" 2>&1
      awk '/^requests:/{e=$12+$14+$16} /^status codes:/{r=$3; e+=$9+$11}
           END{printf "%d - - %d\n", r, e}' "$WORK/h2.out" ;;
  esac
}

# Open-loop latency: 10 connections x 100 req/s for DURATION seconds; per-request times from
# h2load's log (microseconds, third column).
latency_at_1000() { # port -> "p50_us p99_us requests"
  rm -f "$WORK/lat.log"   # h2load appends to its log file
  taskset -c 0 h2load --h1 -c10 -t1 --rps 100 -D"$DURATION" --log-file="$WORK/lat.log" "http://127.0.0.1:$1/" > "$WORK/lat.out" 2>&1
  awk '$2 == 200 {print $3}' "$WORK/lat.log" | sort -n | awk '{a[NR] = $1} END {printf "%d %d %d\n", a[int(NR*0.5)], a[int(NR*0.99)], NR}'
}

scenario_latency() {
  echo; echo "## latency: open loop, 1000 req/s (10 connections x 100 req/s), ${DURATION}s per round"
  : > "$WORK/lat.rows"
  for r in $(seq "$ROUNDS"); do
    read -r p50 p99 n < <(latency_at_1000 "$B1"); echo "$r direct $p50 $p99 $n" >> "$WORK/lat.rows"
    for c in "${CANDS[@]}"; do
      start "$c"; load h1 1 >/dev/null
      read -r p50 p99 n < <(latency_at_1000 "$PORT"); stop
      echo "$r $c $p50 $p99 $n" >> "$WORK/lat.rows"
      echo "  round $r $c: p50 ${p50} us" >&2
    done
  done
  echo "| path | p50 µs | p99 µs | requests | added p50 µs over direct | added p99 µs over direct |"
  echo "|---|---:|---:|---:|---:|---:|"
  awk 'function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                         return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    { p50[$2, $1] = $3; p99[$2, $1] = $4; n[$2] += $5; R = ($1 > R ? $1 : R) }
    END { split("direct outrigger haproxy nginx", cs, " ")
      for (k = 1; k <= 4; k++) { c = cs[k]
        for (r = 1; r <= R; r++) { a[r] = p50[c, r]; b[r] = p99[c, r]; d[r] = p50[c, r] - p50["direct", r]; e[r] = p99[c, r] - p99["direct", r] }
        printf "| %s | %d | %d | %d | %d | %d |\n", c, median(a, R), median(b, R), n[c], median(d, R), median(e, R) } }' "$WORK/lat.rows"
}

scenario_memory() {
  echo; echo "## memory: RSS MiB of the proxy process"
  echo "| candidate | fresh | 10,000 idle keep-alive connections (answered) | 5 s after a ${DURATION}s 64-connection burst |"
  echo "|---|---:|---:|---:|"
  for c in outrigger nginx; do
    sed -i 's/worker_connections [0-9]*/worker_connections 16384/' "$WORK/nginx.conf"
    start "$c"; sleep 1; fresh=$(rss_now "$PROXY")
    python3 "$ROOT/benches/load/idle_clients.py" 10000 "$PORT" > "$WORK/idle.out" & local holder=$!
    for _ in $(seq 600); do grep -q ready "$WORK/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 6; held=$(rss_now "$PROXY"); answered=$(awk '{print $2}' "$WORK/idle.out")
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
    load h1 "$DURATION" >/dev/null; sleep 5; after=$(rss_now "$PROXY"); stop
    awk -v c="$c" -v f="$fresh" -v h="$held" -v a="$after" -v n="$answered" \
      'BEGIN { printf "| %s | %.1f | %.1f (%s) | %.1f |\n", c, f / 1024, h / 1024, n, a / 1024 }'
  done
}

CANDS=(outrigger haproxy nginx)
echo "# outrigger load benchmark  $(date -u +%FT%TZ)"
echo "pinned: proxy on CPU 1 (1 worker), load + backend on CPU 0; $ROUNDS rounds x ${DURATION}s; $CONNS wrk connections"
echo "versions: $("$BIN" --version), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
for scen in "${SCENARIOS[@]}"; do
  nginx_conf "$scen"; outrigger_conf "$scen"; haproxy_conf "$scen"
  case $scen in latency) scenario_latency; continue ;; memory) scenario_memory; continue ;; esac
  : > "$WORK/rows"
  for r in $(seq "$ROUNDS"); do
    order=("${CANDS[@]:$(( (r-1) % 3 ))}" "${CANDS[@]:0:$(( (r-1) % 3 ))}")
    for c in "${order[@]}"; do
      start "$c"; load "$scen" 2 >/dev/null
      c0=$(cpu_ticks "$PROXY"); read -r reqs p50 p99 errs < <(load "$scen" "$DURATION"); c1=$(cpu_ticks "$PROXY")
      rss=$(rss_kib "$PROXY"); stop
      echo "$r $c $reqs $p50 $p99 $(( c1 - c0 )) $rss $errs" >> "$WORK/rows"
      echo "  round $r $c: $((reqs / DURATION)) req/s" >&2
    done
  done
  echo; echo "## $scen"
  echo "| candidate | req/s | p50 ms | p99 ms | errors | proxy CPU s/10k req | peak RSS MiB | req/s vs haproxy | CPU/req vs haproxy |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -v D="$DURATION" -v HZ="$HZ" '
    function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                     return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    { rate[$2, $1] = $3 / D; cpu[$2, $1] = $6 / HZ / $3 * 10000; p50[$2, $1] = $4; p99[$2, $1] = $5; rss[$2, $1] = $7 / 1024; err[$2] += $8; R = ($1 > R ? $1 : R) }
    END {
      split("outrigger haproxy nginx", cs, " ")
      for (k = 1; k <= 3; k++) { c = cs[k]
        for (r = 1; r <= R; r++) { a[r] = rate[c, r]; b[r] = cpu[c, r]; q[r] = rate[c, r] / rate["haproxy", r]; w[r] = cpu[c, r] / cpu["haproxy", r]; x[r] = p50[c, r]; y[r] = p99[c, r]; z[r] = rss[c, r] }
        printf "| %s | %d | %s | %s | %d | %.3f | %.1f | %.2f | %.2f |\n", c, median(a, R), median(x, R), median(y, R), err[c], median(b, R), median(z, R), median(q, R), median(w, R) } }' "$WORK/rows"
done
if [ -n "${RUN_TCP:-}" ]; then echo; "$(dirname "$0")/tcp.sh" -r "$ROUNDS" -d "$DURATION"; fi
