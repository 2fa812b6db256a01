#!/usr/bin/env bash
# Request log cost, side by side in one run: teal serving digits v1 in-process with the
# request log off, then on (every request recorded in the SQLite state file, in batches).
#
# Off and on alternate for ROUNDS rounds and the medians are compared, because on a small
# machine two runs of the same server differ by as much as the effect measured.
#
#   bench/request_log.sh [SECONDS] [CONNECTIONS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
rounds=${3:-3}
. bench/common.sh
prepare_load_run
digits_body "$work/body.json"
run() { # REQUEST_LOG
  local port admin pid state
  port=$(free_port); admin=$(free_port); state=$(mktemp -d -p "$work")
  TEAL_REQUEST_LOG=$1 TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench TEAL_STATE_DIR=$state \
    target/release/teal serve --config examples/teal.toml --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >/dev/null &
  pid=$!
  for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
  BODY_FILE=$work/body.json wrk -t1 -c"$connections" -d"${seconds}s" -s bench/v2_post.lua "http://127.0.0.1:$port/v2/models/digits/infer" | grep '^RESULT'
  sleep 1
  if [ "$1" = 1 ]; then
    python3 -c "import sqlite3,sys; print('RECORDED', sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$state/teal.db"
  fi
  kill $pid; wait $pid 2>/dev/null || true
}
results=()
for _ in $(seq 1 "$rounds"); do
  results+=("OFF $(run 0 | tr '\n' ' ')")
  results+=("ON $(run 1 | tr '\n' ' ')")
done
printf '%s\n' "${results[@]}" > "$work/results.txt"
python3 - "$connections" "$seconds" "$work/results.txt" <<'PY'
import os, statistics, sys
runs = {"OFF": [], "ON": []}
recorded = []
for line in open(sys.argv[3]):
    kind, _, rest = line.partition(" ")
    fields = rest.split()
    result = {k: float(v) for k, v in (f.split("=") for f in fields if "=" in f)}
    if "RECORDED" in fields:
        recorded.append((int(fields[fields.index("RECORDED") + 1]), result["requests"]))
    runs[kind].append(result)
def median(kind, key):
    return statistics.median(r[key] for r in runs[kind])
print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{sys.argv[1]} -d{sys.argv[2]}s, digits v1 in-process; "
      f"{len(runs['OFF'])} rounds of off then on, medians")
print(f"{'':18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}   runs (req/s)")
for name, kind in [("request log off", "OFF"), ("request log on", "ON")]:
    each = ", ".join(f"{r['rps']:.0f}" for r in runs[kind])
    print(f"{name:18}{median(kind, 'rps'):>10.0f}{median(kind, 'p50_ms'):>9.3f}{median(kind, 'p99_ms'):>9.3f}   {each}")
ratios = [on["rps"] / off["rps"] for off, on in zip(runs["OFF"], runs["ON"])]
print(f"ratio on/off (medians): throughput {median('ON', 'rps') / median('OFF', 'rps'):.2f}x, "
      f"p99 {median('ON', 'p99_ms') / median('OFF', 'p99_ms'):.2f}x; per round: "
      + ", ".join(f"{r:.2f}x" for r in ratios))
print("rows in the state file: " + ", ".join(f"{n} of {int(total)}" for n, total in recorded))
PY
