#!/usr/bin/env bash
# In-process serving: teal (ONNX, in-process) versus MLServer 1.7.1 (scikit-learn) on the
# same digits LogisticRegression, same V2 request body, same load generator, one run; then
# teal's simple JSON endpoint versus the classic Flask + scikit-learn service under gunicorn
# (5 sync workers, 2 x cores + 1 as gunicorn's docs advise), same {"features": ...} body.
#
#   bench/serving.sh [SECONDS] [CONNECTIONS]
#
# Installs what it needs when missing: wrk (Debian), and MLServer in .deps/mlserver through
# scripts/setup dev (PyPI, with uvloop<0.22: newer uvloop crashes MLServer's inference worker),
# and Flask and gunicorn into the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
root=$(pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
venv=.deps/mlserver
scripts/setup dev
cargo build --release --locked --quiet

. bench/common.sh
digits_body "$work/body.json"
python3 - "$work/body-mlserver.json" <<'PY'
import json, sys
row = json.loads(open("models/digits/holdout.jsonl").readline())["features"]
json.dump({"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": row}]}, open(sys.argv[1], "w"))
PY
python3 - "$work/body-features.json" <<'PY'
import json, sys
row = json.loads(open("models/digits/holdout.jsonl").readline())["features"]
json.dump({"features": [row]}, open(sys.argv[1], "w"))
PY
"$venv/bin/python" -c "import flask, gunicorn" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check flask==3.1.2 gunicorn==23.0.0

wait_ready() { # URL, seconds
  for _ in $(seq 1 $(( $2 * 20 ))); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not ready: $1" >&2; return 1
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
tree_rss_mb() { # a process and its children
  local total=0
  for p in $1 $(pgrep -P "$1" || true); do total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); done
  awk -v kb=$total 'BEGIN {printf "%.1f", kb/1024}'
}
load() { # URL BODY
  BODY_FILE=$2 wrk -t1 -c"$connections" -d"${seconds}s" -s bench/v2_post.lua "$1" | grep '^RESULT'
}

# teal
tport=$(free_port); aport=$(free_port)
TEAL_STATE_DIR=$work/state target/release/teal serve --config examples/teal.toml --listen 127.0.0.1:$tport --admin 127.0.0.1:$aport >/dev/null 2>"$work/teal.log" &
teal_pid=$!
start_ns=$(date +%s%N)
wait_ready "http://127.0.0.1:$tport/v2/health/ready" 30
teal_ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
sleep 1
teal_idle=$(rss_mb $teal_pid)
teal_result=$(load "http://127.0.0.1:$tport/v2/models/digits/infer" "$work/body.json")
teal_loaded=$(rss_mb $teal_pid)
teal_simple=$(load "http://127.0.0.1:$tport/v1/models/digits/predict" "$work/body-features.json")
kill $teal_pid; wait $teal_pid 2>/dev/null || true

# MLServer
"$venv/bin/python" bench/mlserver_model.py "$work/mlserver/digits" "$root"
mport=$(free_port)
cat > "$work/mlserver/settings.json" <<JSON
{"http_port": $mport, "grpc_port": $(free_port), "metrics_port": $(free_port), "debug": false}
JSON
(cd "$work/mlserver" && exec "$root/$venv/bin/mlserver" start . >"$work/mlserver.log" 2>&1) &
ml_pid=$!
start_ns=$(date +%s%N)
wait_ready "http://127.0.0.1:$mport/v2/models/digits/ready" 120
ml_ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
sleep 1
ml_idle=$(tree_rss_mb $ml_pid)
ml_result=$(load "http://127.0.0.1:$mport/v2/models/digits/infer" "$work/body-mlserver.json")
ml_loaded=$(tree_rss_mb $ml_pid)
kill -TERM $ml_pid 2>/dev/null; pkill -TERM -P $ml_pid 2>/dev/null || true
sleep 1; pkill -KILL -P $ml_pid 2>/dev/null || true; kill -KILL $ml_pid 2>/dev/null || true

# Flask + scikit-learn under gunicorn, on the model MLServer loaded
fport=$(free_port)
(cd bench && MODEL_PATH="$work/mlserver/digits/model.joblib" exec "$root/$venv/bin/gunicorn" -w 5 -b "127.0.0.1:$fport" flask_app:app >"$work/flask.log" 2>&1) &
fl_pid=$!
start_ns=$(date +%s%N)
wait_ready "http://127.0.0.1:$fport/health" 60
fl_ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
sleep 1
fl_idle=$(tree_rss_mb $fl_pid)
fl_result=$(load "http://127.0.0.1:$fport/predict" "$work/body-features.json")
fl_loaded=$(tree_rss_mb $fl_pid)
kill -TERM $fl_pid 2>/dev/null || true; sleep 1; pkill -KILL -P $fl_pid 2>/dev/null || true

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
python3 - "$teal_result" "$ml_result" "$teal_simple" "$fl_result" <<PY
import sys
def parse(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
t, m, ts, f = (parse(a) for a in sys.argv[1:5])
print(f"machine: {__import__('os').cpu_count()} cores; wrk -t1 -c$connections -d${seconds}s, one V2 row of digits (FP32 [1, 64])")
print(f"{'':22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ready ms':>10}{'idle MB':>9}{'loaded MB':>10}")
print(f"{'teal (onnx in-proc)':22}{t['rps']:>10.0f}{t['p50_ms']:>9.3f}{t['p99_ms']:>9.3f}{t['errors']+t['non2xx']:>8.0f}{$teal_ready_ms:>10}{$teal_idle:>9}{$teal_loaded:>10}")
print(f"{'MLServer 1.7.1':22}{m['rps']:>10.0f}{m['p50_ms']:>9.3f}{m['p99_ms']:>9.3f}{m['errors']+m['non2xx']:>8.0f}{$ml_ready_ms:>10}{$ml_idle:>9}{$ml_loaded:>10}")
print(f"ratio teal/MLServer: throughput {t['rps']/m['rps']:.1f}x, p50 {t['p50_ms']/m['p50_ms']:.3f}x, p99 {t['p99_ms']/m['p99_ms']:.3f}x")
print()
print(f"simple JSON {{\"features\": [[64 numbers]]}} -> prediction")
print(f"{'':22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ready ms':>10}{'idle MB':>9}{'loaded MB':>10}")
print(f"{'teal /v1 predict':22}{ts['rps']:>10.0f}{ts['p50_ms']:>9.3f}{ts['p99_ms']:>9.3f}{ts['errors']+ts['non2xx']:>8.0f}{'-':>10}{'-':>9}{'-':>10}")
print(f"{'Flask+gunicorn (5 w)':22}{f['rps']:>10.0f}{f['p50_ms']:>9.3f}{f['p99_ms']:>9.3f}{f['errors']+f['non2xx']:>8.0f}{$fl_ready_ms:>10}{$fl_idle:>9}{$fl_loaded:>10}")
print(f"ratio teal/Flask+gunicorn: throughput {ts['rps']/f['rps']:.1f}x, p50 {ts['p50_ms']/f['p50_ms']:.3f}x, p99 {ts['p99_ms']/f['p99_ms']:.3f}x")
PY
