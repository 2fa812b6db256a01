#!/usr/bin/env bash
# Overload: teal serving a model in-process (MODEL: digits v1 by default, or heavy) with its default admission control
# ([model.limits], as shipped), offered 1x, 2x and 4x its capacity; beside it, the reference:
# nginx (one worker) with limit_conn in front of the same model server (teal serving the same
# model with admission off), its connection limit set to teal's default running plus queued
# requests; and that model server alone, with nothing shed.
#
# The request is a batch: ROWS rows of the digits holdout (FP32 [ROWS, 64], the same body for
# every target), so that decoding, running and encoding a request costs far more than reading
# and refusing one: the model's work is the bottleneck, as where models are heavy.
#
# Capacity is measured first, closed-loop: 32 clients against the model served with admission
# off, each sending its next request as soon as it has an answer. Then the load is open-loop: 1x, 2x and 4x that rate
# are offered on a fixed schedule, whatever the answers (CONNECTIONS connections opened
# beforehand; a request finding them all busy waits in the generator and counts as late, one
# still waiting at the end as unsent). A 503 is not retried: an arrival is one request.
# Latency is measured from the time a request was due, so waiting in the generator counts.
# The load generator (crates/teal/examples/loadgen.rs) is one thread, like wrk -t1, and times
# answers by status, so admitted requests (200) are measured apart from shed ones (503).
# "lag p99" is how late the generator itself sent requests: it shares the cores with the
# server, and where it lags, the level offered is not the level asked for.
# Reported per level: offered and admitted requests/s, admitted p50 and p99, the share shed
# with 503, requests sent late or never, and the server's peak resident memory (VmHWM,
# reset before each level where the kernel allows it).
#
#   bench/overload.sh [SECONDS] [MODEL]   (default 5 s per level and target, digits;
#                                          CONNECTIONS=256; ROWS per request: 256 for digits,
#                                          1 for heavy, 16 for deep)
#   bench/overload.sh 5 deep
#
# MODEL (the second argument, or the MODEL variable) picks the model: digits (v1, the default), heavy (models/heavy, an MLP
# 784-1024-1024-10; random rows, fixed seed) or deep (models/heavy-deep, an MLP 64-512x8-10
# on digits holdout rows); both made by models/make_heavy.py when missing. The generator
# shares the two cores with the server, and it can only offer 4x where 4x is not too many
# requests or bytes for it: with digits' 256-row body (86 kB) on a machine where the model
# serves over 3,000 requests/s, 4x is over a GB/s of bodies, and with heavy's one-row body,
# 4x is over 30,000 requests/s; either way its lag ("lag p99") becomes most of the 4x row's
# latency. deep does heavy's math on a twelfth of the numbers, so at ROWS=16 (5.5 kB) 4x is
# some 10,000 requests/s and 60 MB/s, which it offers on time.
#
# Target: at 4x, admitted requests' p99 within 2x of the p99 at 1x; the rest shed with 503
# and Retry-After; memory bounded. Installs what it needs when missing: nginx (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
model_name=${2:-${MODEL:-digits}}
case $model_name in digits) rows=${ROWS:-256} ;; heavy) rows=${ROWS:-1} ;; *) rows=${ROWS:-16} ;; esac
connections=${CONNECTIONS:-256}
clients=32
levels=(1 2 4)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
scripts/setup
cargo build --release --locked --quiet -p teal --bin teal --example loadgen
. bench/common.sh
case $model_name in
  digits) model_file=$PWD/models/digits/v1/model.onnx; width=64 ;;
  heavy)
    model_file=$PWD/models/heavy/model.onnx; width=784
    [ -f "$model_file" ] || { scripts/setup dev >/dev/null && .venv/bin/python models/make_heavy.py; }
    ;;
  deep)
    model_file=$PWD/models/heavy-deep/model.onnx; width=64
    [ -f "$model_file" ] || { scripts/setup dev >/dev/null && .venv/bin/python models/make_heavy.py deep; }
    ;;
  *) echo "MODEL is digits, heavy or deep, not $model_name" >&2; exit 2 ;;
esac
python3 - "$work/body.json" "$rows" "$model_name" <<'PY'
import json, random, sys
out, rows, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if model in ("digits", "deep"):
    lines = open("models/digits/holdout.jsonl").read().splitlines()
    data = [x for i in range(rows) for x in json.loads(lines[i % len(lines)])["features"]]
    width = 64
else:
    rng = random.Random(1)
    width = 784
    data = [round(rng.random(), 4) for _ in range(rows * width)]
json.dump({"inputs": [{"name": "input", "shape": [rows, width], "datatype": "FP32", "data": data}]}, open(out, "w"))
PY
wait_ready() { for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }
infer=/v2/models/$model_name/infer
# closed PORT: the closed-loop run; open PORT RATE: the open-loop run at RATE requests/s.
closed() { target/release/examples/loadgen "127.0.0.1:$1" "$infer" "$work/body.json" "$clients" "$seconds"; }
open_load() { target/release/examples/loadgen "127.0.0.1:$1" "$infer" "$work/body.json" "$connections" "$seconds" "$2"; }
rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# Resets a process's peak resident memory to its current one (Linux 4.0 and later).
reset_peak() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true; }

# teal_config NAME PORT ADMIN LIMITS: the model in-process, request log on, as shipped.
teal_config() {
  cat > "$work/$1.toml" <<CONF
[server]
listen = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
state_dir = "$work/$1-state"

[[model]]
name = "$model_name"
$4
[model.blue]
version = "v1"
kind = "onnx"
path = "$model_file"
CONF
}
teal_port=$(free_port); teal_admin=$(free_port); open_port=$(free_port); open_admin=$(free_port); nginx_port=$(free_port)
# TEAL_LIMITS: a [model.limits] table for teal instead of its defaults (with NGINX_LIMIT, the
# reference's bound to match).
teal_config teal "$teal_port" "$teal_admin" "${TEAL_LIMITS:-}"
# The model server behind nginx: the same teal with admission off (bounds it never reaches).
teal_config open "$open_port" "$open_admin" $'[model.limits]\nmax_in_flight = 1000000\nmax_queued = 1000000\ntimeout_ms = 3600000'
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/teal.toml" >/dev/null 2>"$work/teal.log" & pids+=($!); teal_pid=$!
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/open.toml" >/dev/null 2>"$work/open.log" & pids+=($!); open_pid=$!

# The reference: one nginx worker, upstream keep-alive, at most as many requests at once as
# teal's defaults let run and wait (max_in_flight + max_queued); past it 503 with
# Retry-After, as teal answers. Bodies and answers are kept in memory, not spooled to files.
# teal's defaults: 32 places and 16 queued (a 256-row request takes 8 places).
nginx_limit=${NGINX_LIMIT:-48}
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  limit_conn_zone \$server_name zone=model:1m;
  limit_conn_status 503;
  limit_conn_log_level info;
  client_body_buffer_size 1m;
  proxy_buffer_size 64k;
  proxy_buffers 16 64k;
  upstream model { server 127.0.0.1:$open_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    server_name model;
    location / {
      limit_conn model $nginx_limit;
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      error_page 503 = @shed;
    }
    location @shed {
      add_header Retry-After 1 always;
      default_type application/json;
      return 503 '{"error": "overloaded"}';
    }
  }
}
CONF
"$NGINX" -c "$work/nginx.conf" -p "$work"
wait_ready "http://127.0.0.1:$teal_port/v2/health/ready"; wait_ready "http://127.0.0.1:$open_port/v2/health/ready"
wait_ready "http://127.0.0.1:$nginx_port/v2/health/ready"

# Capacity: the model's closed-loop throughput at 32 clients, on the teal with admission off
# (after a warm-up of each target): teal with its bounds would shed some of 32 clients, and
# its rate of answered requests would understate what the model serves.
closed "$teal_port" >/dev/null; closed "$nginx_port" >/dev/null; closed "$open_port" >/dev/null
measured=$(closed "$open_port")
capacity=$(sed -n 's/.* ok_rps=\([0-9.]*\).*/\1/p' <<<"$measured")
echo "capacity $measured" > "$work/results.txt"
# The levels; the targets take turns at each level.
for k in "${levels[@]}"; do
  rate=$(python3 -c "print(round($capacity * $k, 1))")
  reset_peak "$teal_pid"; echo "teal $k $(open_load "$teal_port" "$rate") rss=$(rss "$teal_pid")"
  reset_peak "$open_pid"; echo "nginx $k $(open_load "$nginx_port" "$rate") rss=$(rss "$open_pid")"
  reset_peak "$open_pid"; echo "open $k $(open_load "$open_port" "$rate") rss=$(rss "$open_pid")"
done >> "$work/results.txt"

python3 - "$work/results.txt" "$(nproc)" "$seconds" "$rows" "$connections" "$nginx_limit" "$model_name" "$width" "$(wc -c < "$work/body.json")" <<'PY'
import sys
rows, capacity = {}, None
for line in open(sys.argv[1]):
    parts = line.split()
    fields = {k: float(v) for k, v in (p.split("=") for p in parts if "=" in p)}
    if parts[0] == "capacity":
        capacity = fields
        continue
    rows[(parts[0], int(parts[1]))] = fields
levels = sorted({k for _, k in rows})
limit = sys.argv[6]
names = {"teal": "teal (admission on)", "nginx": f"nginx limit_conn {limit}", "open": "teal, admission off"}
print(f"machine: {sys.argv[2]} cores; body: {sys.argv[4]} {sys.argv[7]} rows (FP32 [{sys.argv[4]}, {sys.argv[8]}], {int(sys.argv[9]):,} bytes); "
      f"open-loop, one thread, {sys.argv[5]} connections, {sys.argv[3]}s per level and target")
print(f"capacity: the model (teal, admission off) closed-loop at 32 clients {capacity['ok_rps']:.0f} req/s "
      f"(p50 {capacity['ok_p50_ms']:.2f} ms, p99 {capacity['ok_p99_ms']:.2f} ms, shed {capacity['shed'] / max(capacity['requests'], 1):.1%}); 1x offers that rate")
print(f"{'':24} {'load':>5} {'offered/s':>9} {'ok req/s':>9} {'ok p50 ms':>10} {'ok p99 ms':>10} {'shed 503':>9} "
      f"{'late':>6} {'lag p99':>8} {'unsent':>7} {'other':>6} {'errors':>6} {'peak RSS MB':>11}")
shed = lambda r: r["shed"] / max(r["scheduled"], 1)
for name in ("teal", "nginx", "open"):
    for k in levels:
        r = rows[(name, k)]
        print(f"{names[name]:24} {k:>4}x {r['offered_rps']:>9.0f} {r['ok_rps']:>9.0f} {r['ok_p50_ms']:>10.3f} {r['ok_p99_ms']:>10.3f} "
              f"{shed(r):>8.1%} {r['late'] / max(r['scheduled'], 1):>6.1%} {r['lag_p99_ms']:>8.3f} {r['unsent']:>7.0f} {r['other']:>6.0f} {r['errors']:>6.0f} {r['rss']:>11.1f}")
def summary(name):
    one, two, four = (rows[(name, k)] for k in levels)
    return (f"admitted p99 4x/1x {four['ok_p99_ms'] / one['ok_p99_ms']:.2f}x "
            f"({one['ok_p99_ms']:.1f} -> {four['ok_p99_ms']:.1f} ms), shed at 2x {shed(two):.0%}, at 4x {shed(four):.0%}, "
            f"late or unsent at 4x {(four['late'] + four['unsent']) / max(four['scheduled'], 1):.0%}; "
            f"throughput 4x/1x {four['ok_rps'] / one['ok_rps']:.2f}x; peak RSS at 4x {four['rss']:.1f} MB")
print(f"overload: model capacity {capacity['ok_rps']:.0f} req/s; teal: {summary('teal')}")
print(f"overload: nginx limit_conn {limit}: {summary('nginx')}")
print(f"overload: admission off: {summary('open')}")
PY
