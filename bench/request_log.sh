#!/usr/bin/env bash
# Request log cost, side by side in one run: teal serving digits v1 in-process with the
# request log off, then on (every request recorded in the SQLite state file, in batches).
#
#   bench/request_log.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/setup
cargo build --release --locked --quiet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
python3 - "$work/body.json" <<'PY'
import json, sys
row = json.loads(open("models/digits/holdout.jsonl").readline())["features"]
json.dump({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}, open(sys.argv[1], "w"))
PY
run() { # REQUEST_LOG
  local port admin pid
  port=$(free_port); admin=$(free_port)
  TEAL_REQUEST_LOG=$1 TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench TEAL_STATE_DIR=$work/state-$1 \
    target/release/teal serve --config examples/teal.toml --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >/dev/null &
  pid=$!
  for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
  BODY_FILE=$work/body.json wrk -t1 -c"$connections" -d"${seconds}s" -s bench/v2_post.lua "http://127.0.0.1:$port/v2/models/digits/infer" | grep '^RESULT'
  sleep 1
  if [ "$1" = 1 ]; then
    python3 -c "import sqlite3,sys; print('RECORDED', sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$work/state-1/teal.db"
  fi
  kill $pid; wait $pid 2>/dev/null || true
}
off=$(run 0)
on=$(run 1)
python3 - "$off" "$on" "$connections" "$seconds" <<'PY'
import os, sys
def parse(text):
    line = [l for l in text.splitlines() if l.startswith("RESULT")][0]
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
off, on = parse(sys.argv[1]), parse(sys.argv[2])
recorded = [l for l in sys.argv[2].splitlines() if l.startswith("RECORDED")]
print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{sys.argv[3]} -d{sys.argv[4]}s, digits v1 in-process")
print(f"{'':18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
for name, r in [("request log off", off), ("request log on", on)]:
    print(f"{name:18}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['errors'] + r['non2xx']:>8.0f}")
print(f"ratio on/off: throughput {on['rps']/off['rps']:.2f}x, p99 {on['p99_ms']/off['p99_ms']:.2f}x; "
      f"rows in the state file: {recorded[0].split()[1] if recorded else '?'} of {on['requests']:.0f} requests")
PY
