#!/usr/bin/env bash
# Gateway overhead and switching under load, side by side in one run:
#   1. a fast upstream (nginx answering a fixed V2 response) called directly, through nginx
#      proxy_pass with upstream keep-alive (one worker, and a worker per core), through
#      HAProxy (one thread), and through teal (upstream slot; one runtime thread, and its
#      default of one per core);
#      the targets take turns, round after round, and each figure is the median over the
#      rounds (a ratio is the median of the rounds' own ratios), so a machine that slows
#      down or speeds up during the run does not favour whichever target ran first;
#   2. failed requests while nginx is switched between two upstreams by config reload 20
#      times, versus teal switched between two upstream slots 100 times.
#
#   bench/gateway.sh [SECONDS] [CONNECTIONS] [ROUNDS]
#
# SECONDS per target and round (default 5), ROUNDS (default 3).
# Installs what it needs when missing: wrk, nginx, haproxy (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-32}
rounds=${3:-3}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/proxy.pid" ] && kill "$(cat "$work/proxy.pid")" 2>/dev/null || true
  [ -f "$work/proxy2.pid" ] && kill "$(cat "$work/proxy2.pid")" 2>/dev/null || true
  [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

missing=()
for tool in wrk nginx haproxy; do command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool"); done
[ "${missing[*]/nginx/nginx-light}" = "" ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]/nginx/nginx-light}" >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
scripts/setup
cargo build --release --locked --quiet

. bench/common.sh
wait_ready() { for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }
load() { BODY_FILE=$work/body.json wrk -t1 -c"$2" -d"${3:-$seconds}s" -s bench/v2_post.lua "$1" | grep '^RESULT'; }
# CPU time (ns) the given processes have used, all their threads: run time from schedstat.
cpu_ns() {
  local total=0 ns _
  for p in "$@"; do for f in /proc/"$p"/task/*/schedstat; do read -r ns _ < "$f" && total=$((total + ns)); done; done
  echo "$total"
}
# load URL CONNECTIONS, adding the CPU time the proxy's processes (PID...) spent meanwhile.
measure() {
  local url=$1 c=$2 before line
  shift 2
  before=$(cpu_ns "$@")
  line=$(load "$url" "$c")
  echo "$line cpu_ns=$(( $(cpu_ns "$@") - before ))"
}

digits_body "$work/body.json"

up_a=$(free_port); up_b=$(free_port); proxy=$(free_port); proxy2=$(free_port); hap=$(free_port); teal_port=$(free_port); teal_admin=$(free_port)
teal1_port=$(free_port); teal1_admin=$(free_port)
answer() { echo "{\"model_name\":\"digits\",\"model_version\":\"$1\",\"outputs\":[{\"name\":\"label\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[3]}]}"; }

# The fast upstream: one nginx worker, two servers (A and B) answering a fixed V2 response.
cat > "$work/upstream.conf" <<CONF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$up_a; default_type application/json; location / { return 200 '$(answer a)'; } }
  server { listen 127.0.0.1:$up_b; default_type application/json; location / { return 200 '$(answer b)'; } }
}
CONF
# The reference proxy: one nginx worker, proxy_pass with upstream keep-alive.
echo "server 127.0.0.1:$up_a;" > "$work/active.conf"
cat > "$work/proxy.conf" <<CONF
worker_processes 1;
pid $work/proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { include $work/active.conf; keepalive 64; }
  server {
    listen 127.0.0.1:$proxy;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$hap
  default_backend b
backend b
  server a 127.0.0.1:$up_a
CONF
cat > "$work/teal.toml" <<CONF
[server]
listen = "127.0.0.1:$teal_port"
admin = "127.0.0.1:$teal_admin"
state_dir = "$work/teal-state"
[[model]]
name = "digits"
[model.blue]
version = "a"
kind = "upstream"
urls = ["http://127.0.0.1:$up_a"]
[model.green]
version = "b"
kind = "upstream"
urls = ["http://127.0.0.1:$up_b"]
CONF

"$NGINX" -c "$work/upstream.conf" -p "$work"
"$NGINX" -c "$work/proxy.conf" -p "$work"
# The same proxy with one worker per core: the resources teal takes by default.
sed -e "s/^worker_processes 1;/worker_processes $(nproc);/" -e "s|$work/proxy.pid|$work/proxy2.pid|" \
  -e "s/127.0.0.1:$proxy;/127.0.0.1:$proxy2;/" "$work/proxy.conf" > "$work/proxy2.conf"
"$NGINX" -c "$work/proxy2.conf" -p "$work"
"$HAPROXY" -f "$work/haproxy.cfg" -q & pids+=($!); haproxy_pid=$!
# Like nginx and HAProxy here (access_log off, no logging), teal runs without its request log.
export TEAL_REQUEST_LOG=0
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/teal.toml" >/dev/null & pids+=($!); teal_pid=$!
# The same teal on one thread (TEAL_THREADS=1, one event loop): the resources of one nginx
# worker or one HAProxy thread.
TEAL_THREADS=1 TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench TEAL_STATE_DIR=$work/teal1-state target/release/teal serve \
  --config "$work/teal.toml" --listen 127.0.0.1:$teal1_port --admin 127.0.0.1:$teal1_admin >/dev/null & pids+=($!); teal1_pid=$!
wait_ready "http://127.0.0.1:$up_a/"; wait_ready "http://127.0.0.1:$proxy/"; wait_ready "http://127.0.0.1:$proxy2/"; wait_ready "http://127.0.0.1:$hap/"
wait_ready "http://127.0.0.1:$teal_port/v2/health/ready"; wait_ready "http://127.0.0.1:$teal1_port/v2/health/ready"

infer=/v2/models/digits/infer
declare -A result
# The proxy's CPU time per request is reported too: it is steadier than throughput on a
# machine whose two cores are shared with wrk and the upstream.
nginx_worker=$(pgrep -P "$(cat "$work/proxy.pid")")
nginx2_workers=$(pgrep -P "$(cat "$work/proxy2.pid")" | tr '\n' ' ')
for round in $(seq 1 "$rounds"); do
  for c in "$connections" 1; do
    echo "direct $c $round $(measure "http://127.0.0.1:$up_a$infer" "$c")"
    echo "nginx $c $round $(measure "http://127.0.0.1:$proxy$infer" "$c" $nginx_worker)"
    echo "nginx2 $c $round $(measure "http://127.0.0.1:$proxy2$infer" "$c" $nginx2_workers)"
    echo "haproxy $c $round $(measure "http://127.0.0.1:$hap$infer" "$c" "$haproxy_pid")"
    echo "teal $c $round $(measure "http://127.0.0.1:$teal_port$infer" "$c" "$teal_pid")"
    echo "teal1 $c $round $(measure "http://127.0.0.1:$teal1_port$infer" "$c" "$teal1_pid")"
  done
done > "$work/results.txt"

# Switching under load: nginx by config reload (20 times), teal by its admin API (100 times).
switch_seconds=10
load "http://127.0.0.1:$proxy$infer" "$connections" "$switch_seconds" > "$work/nginx-switch.txt" &
wrk_pid=$!
sleep 0.5
for i in $(seq 1 20); do
  if [ $((i % 2)) = 1 ]; then echo "server 127.0.0.1:$up_b;" > "$work/active.conf"; else echo "server 127.0.0.1:$up_a;" > "$work/active.conf"; fi
  "$NGINX" -c "$work/proxy.conf" -p "$work" -s reload 2>/dev/null
  sleep $(python3 -c "print(($switch_seconds - 1) / 20)")
done
wait $wrk_pid
load "http://127.0.0.1:$teal_port$infer" "$connections" "$switch_seconds" > "$work/teal-switch.txt" &
wrk_pid=$!
sleep 0.5
for i in $(seq 1 100); do
  if [ $((i % 2)) = 1 ]; then to=green; else to=blue; fi
  curl -fs -o /dev/null -H "authorization: Bearer bench" -H 'content-type: application/json' \
    -d "{\"to\":\"$to\"}" "http://127.0.0.1:$teal_admin/api/v1/models/digits/switch"
  sleep $(python3 -c "print(($switch_seconds - 1) / 100)")
done
wait $wrk_pid

python3 - "$connections" "$seconds" "$rounds" "$switch_seconds" "$work/results.txt" \
  "$(cat "$work/nginx-switch.txt")" "$(cat "$work/teal-switch.txt")" <<'PY'
import os, statistics, sys
def parse(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split() if "=" in kv)}
c, seconds, rounds, switch_seconds, results = sys.argv[1:6]
nginx_switch, teal_switch = parse(sys.argv[6]), parse(sys.argv[7])
runs = {}
for line in open(results):
    target, conns, rnd, rest = line.split(" ", 3)
    m = parse(rest)
    m["cpu_us"] = m["cpu_ns"] / 1000 / m["requests"] if m["cpu_ns"] else 0
    runs[(target, conns, rnd)] = m
rnds = sorted({k[2] for k in runs})
def med(target, conns, key):
    return statistics.median(runs[(target, conns, r)][key] for r in rnds)
def ratio(a, b, conns, key):
    return statistics.median(runs[(a, conns, r)][key] / runs[(b, conns, r)][key] for r in rnds)
names = {"direct": "direct", "nginx": "nginx proxy_pass", "nginx2": "nginx, a worker/core", "haproxy": "HAProxy",
         "teal": "teal", "teal1": "teal, 1 thread"}
print(f"machine: {os.cpu_count()} cores; wrk -t1, {seconds}s per target and round, {rounds} rounds taking turns, medians; "
      "one nginx worker, one HAProxy thread; fixed V2 answer upstream")
print(f"{'':20}{'req/s c=' + c:>14}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU us/req':>12}   {'p50 ms c=1':>11}{'p99 ms c=1':>11}{'added p50 c=1':>15}")
for t, name in names.items():
    errors = sum(runs[(t, c, r)]["errors"] + runs[(t, c, r)]["non2xx"] for r in rnds)
    used = f"{med(t, c, 'cpu_us'):>12.1f}" if t != "direct" else f"{'-':>12}"
    added = (med(t, "1", "p50_ms") - med("direct", "1", "p50_ms")) * 1000
    print(f"{name:20}{med(t, c, 'rps'):>14.0f}{med(t, c, 'p50_ms'):>9.3f}{med(t, c, 'p99_ms'):>9.3f}{errors:>8.0f}{used}   "
          f"{med(t, '1', 'p50_ms'):>11.3f}{med(t, '1', 'p99_ms'):>11.3f}{added:>12.0f} us")
# Equal resources: teal on one runtime thread against one nginx worker; teal as it starts
# (a runtime thread per core) against nginx with a worker per core.
for t, label, ref in (("teal1", "teal 1 thread", "nginx"), ("teal", "teal", "nginx2"), ("teal", "teal", "nginx")):
    print(f"ratio {label}/{names[ref]}: throughput {ratio(t, ref, c, 'rps'):.2f}x, p99 {ratio(t, ref, c, 'p99_ms'):.2f}x, "
          f"CPU per request {ratio(t, ref, c, 'cpu_us'):.2f}x; per round, throughput: "
          + ", ".join(f"{runs[(t, c, r)]['rps'] / runs[(ref, c, r)]['rps']:.2f}x" for r in rnds))
print(f"ratio teal 1 thread/HAProxy: throughput {ratio('teal1', 'haproxy', c, 'rps'):.2f}x")
def added_p99(t):
    return statistics.median((runs[(t, c, r)]["p99_ms"] - runs[("direct", c, r)]["p99_ms"]) * 1000 for r in rnds)
print(f"added p99 at c={c} over direct: teal 1 thread {added_p99('teal1'):.0f} us, nginx {added_p99('nginx'):.0f} us; "
      f"teal {added_p99('teal'):.0f} us, nginx with a worker per core {added_p99('nginx2'):.0f} us")
print(f"switching under load (c={c}, {switch_seconds}s): nginx reload x20: {nginx_switch['errors'] + nginx_switch['non2xx']:.0f} failed of {nginx_switch['requests']:.0f}; "
      f"teal switch x100: {teal_switch['errors'] + teal_switch['non2xx']:.0f} failed of {teal_switch['requests']:.0f}")
PY
