#!/usr/bin/env bash
# outrigger beside HAProxy and nginx, one run, same backend, same load, same CPU placement.
#
#   benches/load/run.sh [-r ROUNDS] [-d SECONDS] [-c CONNS] [SCENARIO...]
#   scenarios: h1 (wrk, keep-alive, 2-byte body; default), h1-16k, h2c (h2load 16x4 streams)
#
# Needs Debian's haproxy, nginx, wrk and nghttp2-client (it says which is missing), builds
# outrigger in release mode, and uses only 127.0.0.1. Pinned: the proxy alone on CPU 1 with one
# worker; wrk/h2load and the nginx backend on CPU 0. Rounds rotate the candidates' order so a
# noisy minute hits all of them; the table shows medians and the paired ratio to HAProxy. Proxy
# CPU per request (utime+stime of the proxy's processes over the measured window) is the stable
# figure on shared machines; req/s swings between rounds.
set -euo pipefail
ROUNDS=3 DURATION=10 CONNS=64
while getopts "r:d:c:" o; do case $o in r) ROUNDS=$OPTARG;; d) DURATION=$OPTARG;; c) CONNS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND - 1)); SCENARIOS=("${@:-h1}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
for t in haproxy nginx wrk h2load taskset; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install haproxy nginx wrk nghttp2-client" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/outrigger
WORK=$(mktemp -d); PIDS=()
PORT=19100 B1=19181 B2=19182 ADMIN=19190
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill "$p" 2>/dev/null || true; }; done; sleep 0.3
            for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p" 2>/dev/null || true; }; done
            wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for p in $PORT $B1 $B2 $ADMIN; do ss -ltn | grep -q ":$p " && { echo "port $p is taken" >&2; exit 1; }; done

# Backend: nginx on CPU 0, one worker, two ports.
head -c 16384 /dev/urandom > "$WORK/16k"; printf ok > "$WORK/ok"
chmod 755 "$WORK"; chmod 644 "$WORK/16k" "$WORK/ok"    # nginx workers run as nobody
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; root $WORK;
           location = / { try_files /ok =404; } location = /16k { try_files /16k =404; } } }
CONF
taskset -c 0 nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)

cat > "$WORK/outrigger.yaml" <<CONF
server: { worker_threads: 1 }
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - { name: bench, address: "127.0.0.1:$PORT", routes: [{ match: { path_prefix: / }, cluster: b }] }
clusters:
  - { name: b, lb: round_robin, endpoints: [{address: "127.0.0.1:$B1"}, {address: "127.0.0.1:$B2"}] }
CONF
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
  bind 127.0.0.1:$PORT proto h2,http/1.1
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:$B1
  server s2 127.0.0.1:$B2
CONF
sed -i 's/ proto h2,http\/1.1//' "$WORK/haproxy.cfg"   # haproxy detects the h2c preface on a plain bind
nginx_conf() { # nginx 1.22 speaks h2c only on an HTTP/2-only listen, so that is per scenario
  local h2=""; [ "$1" = h2c ] && h2=" http2"
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log stderr error;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  upstream b { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 128; }
  server { listen 127.0.0.1:$PORT$h2;
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
procs() { echo "$1"; ps -o pid= --ppid "$1" 2>/dev/null || true; }
cpu_ticks() { local t=0; for p in $(procs "$1"); do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kib() { local t=0; for p in $(procs "$1"); do [ -r /proc/$p/status ] && t=$((t + $(awk '/VmHWM/{print $2}' /proc/$p/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)

load() { # scenario seconds -> "ok_responses p50ms p99ms errors"
  case $1 in
    h1|h1-16k) local path=/; [ "$1" = h1-16k ] && path=/16k
      taskset -c 0 wrk -t1 -c"$CONNS" -d"$2"s --latency "http://127.0.0.1:$PORT$path" > "$WORK/wrk.out"
      awk '/requests in/{r=$1} /^ +50%/{p50=$2} /^ +99%/{p99=$2} /Non-2xx/{e+=$NF}
           /Socket errors/{gsub(",", ""); e+=$4+$6+$8+$10}
           function ms(v){ if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
           END{printf "%d %.3f %.3f %d\n", r-e, ms(p50), ms(p99), e}' "$WORK/wrk.out" ;;
    h2c) taskset -c 0 h2load -c16 -m4 -t1 -D"$2" "http://127.0.0.1:$PORT/" > "$WORK/h2.out" 2>&1
      awk '/^requests:/{e=$12+$14+$16} /^status codes:/{r=$3; e+=$9+$11}
           END{printf "%d - - %d\n", r, e}' "$WORK/h2.out" ;;
  esac
}

CANDS=(outrigger haproxy nginx)
echo "# outrigger load benchmark  $(date -u +%FT%TZ)"
echo "pinned: proxy on CPU 1 (1 worker), load + backend on CPU 0; $ROUNDS rounds x ${DURATION}s; $CONNS wrk connections"
echo "versions: $("$BIN" --version), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
for scen in "${SCENARIOS[@]}"; do
  : > "$WORK/rows"; nginx_conf "$scen"
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
