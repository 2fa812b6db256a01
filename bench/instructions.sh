#!/usr/bin/env bash
# Instructions per proxied request, teal against nginx, counted by callgrind: unlike time on
# a shared machine, the count repeats from run to run. A fixed-answer nginx is the upstream;
# the proxy under test (teal on one runtime thread with an upstream slot, or one nginx worker
# with proxy_pass and upstream keep-alive) runs under valgrind; wrk warms it for 2 s, then
# the count over the next SECONDS is divided by the requests wrk had answered. User-space
# instructions only: the kernel's share (the same four socket calls per request) is not
# counted.
#
#   bench/instructions.sh [SECONDS]     (default 6)
#
# TEAL names another teal binary to count (default: this tree's, built for release);
# INSTRUCTIONS_KEEP=DIR keeps the measured part's callgrind files there, for
# `callgrind_annotate --inclusive=yes DIR/teal.out.2`.
#
# Installs what it needs when missing: wrk, nginx, valgrind (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-6}
work=$(mktemp -d)
cleanup() {
  [ -f "$work/upstream.pid" ] && kill "$(cat "$work/upstream.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

missing=()
for tool in wrk nginx valgrind; do command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool"); done
[ "${missing[*]/nginx/nginx-light}" = "" ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]/nginx/nginx-light}" >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
scripts/setup
cargo build --release --locked --quiet

. bench/common.sh
wait_ready() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
load() { BODY_FILE=$work/body.json wrk -t1 -c8 -d"$2s" -s bench/v2_post.lua "$1/v2/models/digits/infer" | grep '^RESULT'; }

digits_body "$work/body.json"
up=$(free_port); proxy=$(free_port); teal_port=$(free_port); teal_admin=$(free_port)
cat > "$work/upstream.conf" <<CONF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$up; default_type application/json;
    location / { return 200 '{"model_name":"digits","model_version":"a","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[3]}]}'; } }
}
CONF
cat > "$work/proxy.conf" <<CONF
master_process off;
daemon off;
worker_processes 1;
pid $work/proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$proxy;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
cat > "$work/teal.toml" <<CONF
[server]
listen = "127.0.0.1:$teal_port"
admin = "127.0.0.1:$teal_admin"
state_dir = "$work/teal-state"
request_log = false
[[model]]
name = "digits"
[model.blue]
version = "a"
kind = "upstream"
urls = ["http://127.0.0.1:$up"]
CONF
"$NGINX" -c "$work/upstream.conf" -p "$work"
wait_ready "http://127.0.0.1:$up/"

# count NAME URL COMMAND...: runs COMMAND under callgrind and prints instructions per request.
count() {
  local name=$1 url=$2 line requests total
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  # count runs in a command substitution: stop its valgrind when that subshell ends, however.
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  wait_ready "$url/v2/health/ready" 2>/dev/null || wait_ready "$url/"
  load "$url" 2 >/dev/null
  callgrind_control -d "$pid" >/dev/null   # part 1: start-up and warm-up
  line=$(load "$url" "$seconds")
  callgrind_control -d "$pid" >/dev/null   # part 2: the measured requests only
  kill "$pid"; wait "$pid" 2>/dev/null || true
  requests=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$line")
  total=$(sed -n 's/^summary: //p' "$work/$name.out.2")
  [ -z "${INSTRUCTIONS_KEEP:-}" ] || { mkdir -p "$INSTRUCTIONS_KEEP"; cp "$work/$name.out.2" "$INSTRUCTIONS_KEEP/"; }
  echo "$name $requests $total"
}
nginx_line=$(count nginx "http://127.0.0.1:$proxy" "$NGINX" -c "$work/proxy.conf" -p "$work")
teal_line=$(TEAL_THREADS=1 TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench \
  count teal "http://127.0.0.1:$teal_port" "${TEAL:-target/release/teal}" serve --config "$work/teal.toml")

python3 - "$seconds" "$nginx_line" "$teal_line" <<'PY'
import sys
seconds = sys.argv[1]
rows = [line.split() for line in sys.argv[2:]]
print(f"callgrind, user-space instructions per proxied request (wrk -t1 -c8, {seconds}s after a 2 s warm-up; one nginx worker, teal on one runtime thread)")
per = {}
for name, requests, total in rows:
    per[name] = int(total) / int(requests)
    print(f"{name:8}{int(requests):>10} requests{per[name]:>12.0f} instructions per request")
print(f"ratio teal/nginx: instructions per request {per['teal'] / per['nginx']:.2f}x")
PY
