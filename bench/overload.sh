#!/usr/bin/env bash
# Overload: teal serving digits v1 in-process with its default admission control
# ([model.limits]: 32 requests running, 16 queued), offered 1x, 2x and 4x the load that
# reaches its capacity; beside it, the reference: nginx (one worker) with limit_conn in front
# of the same model server (teal serving the same model with admission off), its connection
# limit set to the same 48 requests at once; and that model server alone, with nothing shed.
#
# Load is closed-loop, like the other benchmarks: 1x is 32 clients each sending its next
# request as soon as it has an answer, the harness's usual load, which keeps the server at
# its capacity (its throughput there is printed first); 2x and 4x are 64 and 128 such
# clients. The load generator (crates/teal/examples/loadgen.rs, one thread like wrk -t1)
# times answers by status, so admitted requests (200) are measured apart from shed ones
# (503). Reported per level: admitted requests/s, their p50 and p99, the share shed with
# 503, and teal's peak resident memory (VmHWM) over the whole run.
#
#   bench/overload.sh [SECONDS]     (default 5 s per level and target)
#
# Target: at 4x, admitted requests' p99 within 2x of the p99 at 1x; the rest shed with 503
# and Retry-After; memory bounded. Installs what it needs when missing: nginx (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
levels=(32 64 128)
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
digits_body "$work/body.json"
wait_ready() { for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }
infer=/v2/models/digits/infer
load() { target/release/examples/loadgen "127.0.0.1:$1" "$infer" "$work/body.json" "$2" "$seconds"; }

# teal_config NAME PORT ADMIN LIMITS: digits v1 in-process, request log on, as shipped.
teal_config() {
  cat > "$work/$1.toml" <<CONF
[server]
listen = "127.0.0.1:$2"
admin = "127.0.0.1:$3"
state_dir = "$work/$1-state"

[[model]]
name = "digits"
$4
[model.blue]
version = "v1"
kind = "onnx"
path = "$PWD/models/digits/v1/model.onnx"
CONF
}
teal_port=$(free_port); teal_admin=$(free_port); open_port=$(free_port); open_admin=$(free_port); nginx_port=$(free_port)
teal_config teal "$teal_port" "$teal_admin" ""
# The model server behind nginx: the same teal with admission off (bounds it never reaches).
teal_config open "$open_port" "$open_admin" $'[model.limits]\nmax_in_flight = 1000000\nmax_queued = 1000000\ntimeout_ms = 3600000'
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/teal.toml" >/dev/null & pids+=($!); teal_pid=$!
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/open.toml" >/dev/null & pids+=($!); open_pid=$!

# The reference: one nginx worker, upstream keep-alive, at most 48 requests at once (teal's
# 32 running and 16 queued); past it 503 with Retry-After, as teal answers.
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
  upstream model { server 127.0.0.1:$open_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    server_name model;
    location / {
      limit_conn model 48;
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

# Warm-up, then the levels; the targets take turns at each level.
load "$teal_port" 32 >/dev/null; load "$nginx_port" 32 >/dev/null
for c in "${levels[@]}"; do
  echo "teal $c $(load "$teal_port" "$c")"
  echo "nginx $c $(load "$nginx_port" "$c")"
  echo "open $c $(load "$open_port" "$c")"
done > "$work/results.txt"
rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo "rss teal $(rss "$teal_pid") open $(rss "$open_pid")" >> "$work/results.txt"

python3 - "$work/results.txt" "$(nproc)" "$seconds" <<'PY'
import sys
rows, rss = {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "rss":
        rss = {parts[1]: float(parts[2]), parts[3]: float(parts[4])}
        continue
    fields = dict(p.split("=") for p in parts[3:])
    rows[(parts[0], int(parts[1]))] = {k: float(v) for k, v in fields.items()}
levels = sorted({c for _, c in rows})
names = {"teal": "teal (admission on)", "nginx": "nginx limit_conn 48", "open": "teal, admission off"}
print(f"machine: {sys.argv[2]} cores; closed-loop clients, one thread, {sys.argv[3]}s per level and target; digits v1 in-process; 1x = 32 clients")
print(f"{'':26} {'load':>5} {'ok req/s':>9} {'ok p50 ms':>10} {'ok p99 ms':>10} {'shed 503':>9} {'other':>6} {'errors':>7}")
for name in ("teal", "nginx", "open"):
    for c in levels:
        r = rows[(name, c)]
        shed = r["shed"] / max(r["requests"], 1)
        print(f"{names[name]:26} {c // levels[0]:>4}x {r['ok_rps']:>9.0f} {r['ok_p50_ms']:>10.3f} {r['ok_p99_ms']:>10.3f} {shed:>8.1%} {r['other']:>6.0f} {r['errors']:>7.0f}")
print(f"peak resident memory: teal {rss['teal']:.1f} MB, teal with admission off {rss['open']:.1f} MB")
def summary(name):
    one, four = rows[(name, levels[0])], rows[(name, levels[-1])]
    two = rows[(name, levels[1])]
    shed = lambda r: r["shed"] / max(r["requests"], 1)
    return (f"admitted p99 4x/1x {four['ok_p99_ms'] / one['ok_p99_ms']:.2f}x, "
            f"shed at 2x {shed(two):.0%}, at 4x {shed(four):.0%}; throughput 4x/1x {four['ok_rps'] / one['ok_rps']:.2f}x")
print(f"overload: teal capacity {rows[('teal', levels[0])]['ok_rps']:.0f} req/s; {summary('teal')}; peak RSS {rss['teal']:.1f} MB")
print(f"overload: nginx limit_conn: {summary('nginx')}")
print(f"overload: admission off: {summary('open')}; peak RSS {rss['open']:.1f} MB")
PY
