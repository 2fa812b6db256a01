#!/usr/bin/env bash
# Dynamic batching on a model whose math is the cost of a request: models/heavy (an MLP
# 784-1024-1024-10, about 1.9 million multiply-adds a row), one V2 row per request, in one run:
#   teal unbatched   in-process ONNX slot, workers = cores, intra_op_threads = 1,
#                    [model.limits] max_in_flight = 128 (room for all 64 clients)
#   teal batched     the same with [model.batching] max_batch_size = BATCH,
#                    max_queue_delay_us = DELAY_US (skipped, saying why, if teal refuses it)
#   MLServer 1.7.1   adaptive batching (max_batch_size = BATCH, max_batch_time = DELAY_US),
#                    parallel_workers = cores; MLServer has no ONNX runtime of its own, so it
#                    runs the same file through bench/mlserver_onnx.py (ONNX Runtime, the
#                    session options above)
#   ceiling          ONNX Runtime called directly from Python on the same file with the same
#                    session options, one session per core, batches of BATCH rows back to
#                    back (and of 1 row, for the unbatched case): no protocol, no queue
# each server under wrk -t1 at 1 and at 64 connections (a 1 s warm-up at 64 first, not
# counted); teal also with the row as a binary-tensor request (the V2 binary data extension,
# which tritonclient and perf_analyzer use; rows "-bin"), where no JSON numbers are parsed.
# Before timing, each server answers one request, which must be 200 with the
# label ONNX Runtime gives for that row directly. At 64 connections every request is one
# row, so a server's req/s is comparable with the ceiling's rows/s.
#
#   bench/batching.sh [SECONDS]          (default 10; about 140 s in all at 10)
#   BATCH=32 DELAY_US=1000 bench/batching.sh 10   (the defaults: 64 clients on 2 workers)
#
# DELAY_US = 0 leaves MLServer unbatched (its batching needs max_batch_time > 0).
# Uses target/release/teal as it is (build it first: cargo build --release). Installs what it
# needs when missing: wrk (Debian); .venv with onnxruntime, numpy and onnx, and MLServer in
# .deps/mlserver, through scripts/setup dev; ONNX Runtime (the version teal loads) into
# .deps/mlserver for bench/mlserver_onnx.py; models/heavy/model.onnx (models/make_heavy.py).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
batch=${BATCH:-32}
delay_us=${DELAY_US:-1000}
cores=$(nproc)
workers=$cores
root=$(pwd)
teal_bin=$root/target/release/teal
venv=.deps/mlserver
model=$root/models/heavy/model.onnx
work=$(mktemp -d)
server="" # the running server, leading its own process group
stop_server() {
  [ -n "$server" ] || return 0
  kill -TERM -- "-$server" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 -- "-$server" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap 'stop_server; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

[ -x "$teal_bin" ] || { echo "no $teal_bin: build it first (cargo build --release)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if ! .venv/bin/python -c "import onnxruntime, numpy, onnx" 2>/dev/null || ! [ -x "$venv/bin/mlserver" ]; then
  scripts/setup dev
fi
"$venv/bin/python" -c "import onnxruntime" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "onnxruntime==$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')"
[ -f "$model" ] || .venv/bin/python models/make_heavy.py

. bench/common.sh

# The request body (one holdout-like row) and the answer ONNX Runtime gives for it directly.
.venv/bin/python - "$model" "$work/body.json" "$work/reference.json" <<'PY'
import json, sys
import numpy as np, onnxruntime as ort
model, body, reference = sys.argv[1:4]
row = np.round(np.random.RandomState(1).rand(784), 4)
json.dump({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": row.tolist()}]}, open(body, "w"))
# The same row as a binary-tensor request (the V2 binary data extension, as tritonclient and
# perf_analyzer send it): a JSON header, then the row's 784 float32 bytes; outputs as JSON.
header = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 784 * 4}}],
                     "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                                 {"name": "probabilities", "parameters": {"binary_data": False}}]}).encode()
open(body.replace(".json", ".bin"), "wb").write(header + row.astype("<f4").tobytes())
open(body.replace(".json", ".bin.len"), "w").write(str(len(header)))
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
label, probabilities = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(
    ["label", "probabilities"], {"input": row.astype(np.float32)[None, :]})
json.dump({"label": label.tolist(), "probabilities": probabilities.ravel().tolist()}, open(reference, "w"))
PY

# wait_ready URL SECONDS: 0 when ready, 2 when the server exited first, 1 on timeout.
wait_ready() {
  for _ in $(seq 1 $(( $2 * 20 ))); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    alive "$server" || return 2
    sleep 0.05
  done
  return 1
}
# check NAME URL [bin]: one request (JSON, or with "bin" the binary-tensor one), which must
# be answered 200 with the reference label.
check() {
  local code
  if [ "${3:-}" = bin ]; then
    code=$(curl -s -o "$work/answer-$1.json" -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
      -H "Inference-Header-Content-Length: $(cat "$work/body.bin.len")" \
      --data-binary @"$work/body.bin" "$2") || code=000
  else
    code=$(curl -s -o "$work/answer-$1.json" -w '%{http_code}' -H 'Content-Type: application/json' \
      --data-binary @"$work/body.json" "$2") || code=000
  fi
  if [ "$code" != 200 ]; then
    echo "$1: the check request was answered $code: $(head -c 600 "$work/answer-$1.json" 2>/dev/null)" >&2
    exit 1
  fi
  python3 - "$1" "$work/answer-$1.json" "$work/reference.json" <<'PY'
import json, sys
name, answer, reference = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
outputs = {o["name"]: o for o in answer.get("outputs", [])}
if set(outputs) != {"label", "probabilities"}:
    sys.exit(f"{name}: answered outputs {sorted(outputs)}, not label and probabilities: {answer}")
label, probabilities = outputs["label"], outputs["probabilities"]
if (label["datatype"], label["shape"], probabilities["datatype"], probabilities["shape"]) != ("INT64", [1], "FP32", [1, 10]):
    sys.exit(f"{name}: wrong datatypes or shapes: label {label['datatype']} {label['shape']}, probabilities {probabilities['datatype']} {probabilities['shape']}")
if label["data"] != reference["label"]:
    sys.exit(f"{name}: label {label['data']}, but ONNX Runtime gives {reference['label']} for this row")
diff = max(abs(a - b) for a, b in zip(probabilities["data"], reference["probabilities"]))
print(f"check {name}: 200, label {label['data'][0]} as ONNX Runtime's, probabilities within {diff:.1e}", file=sys.stderr)
PY
}
# load NAME URL CONNECTIONS: a timed wrk run, noted in results.
load() {
  echo "$1 $3 $(BODY_FILE=$work/body.json wrk -t1 -c"$3" -d"${seconds}s" -s bench/v2_post.lua "$2" | grep '^RESULT')" >>"$work/results"
}
# load_binary NAME URL CONNECTIONS: the same with the binary-tensor request.
load_binary() {
  echo "$1 $3 $(BODY_FILE=$work/body.bin INFERENCE_HEADER_LENGTH=$(cat "$work/body.bin.len") \
    wrk -t1 -c"$3" -d"${seconds}s" -s bench/v2_post.lua "$2" | grep '^RESULT')" >>"$work/results"
}
warm_up() { BODY_FILE=$work/body.json wrk -t1 -c64 -d1s -s bench/v2_post.lua "$1" >/dev/null; }
: >"$work/results"
notes=()

# teal_start NAME BATCHING_TABLE: teal serving the heavy model, ready; 3 if teal exited first
# (it refused the configuration), 1 if it was not ready in time.
teal_start() {
  local name=$1 status=0
  port=$(free_port) || return 1
  cat >"$work/$name.toml" <<TOML || return 1
[[model]]
name = "heavy"
$2
# Room for every client: the default bounds (32 running, 16 queued for an unbatched slot)
# would shed part of 64 connections, and a refusal is not a comparison of serving.
[model.limits]
max_in_flight = 128
[model.blue]
version = "v1"
kind = "onnx"
path = "$model"
workers = $workers
intra_op_threads = 1
TOML
  mkdir -p "$work/state-$name" || return 1
  TEAL_STATE_DIR=$work/state-$name setsid "$teal_bin" serve --config "$work/$name.toml" \
    --listen "127.0.0.1:$port" --admin "127.0.0.1:$(free_port)" >/dev/null 2>"$work/$name.log" &
  server=$!
  wait_ready "http://127.0.0.1:$port/v2/models/heavy/ready" 60 || status=$?
  case $status in
    0) return 0 ;;
    2) wait "$server" 2>/dev/null; server=""; return 3 ;;
    *) echo "$name: not ready in 60 s; its log:" >&2; cat "$work/$name.log" >&2; return 1 ;;
  esac
}
# teal_measure NAME: checks and loads the teal teal_start started, then stops it.
teal_measure() {
  local url="http://127.0.0.1:$port/v2/models/heavy/infer"
  if grep -q "batching is off" "$work/$1.log"; then
    notes+=("$1: teal loaded the model unbatched: $(grep -o 'batching is off.*' "$work/$1.log" | head -1)")
  fi
  check "$1" "$url"
  check "$1-bin" "$url" bin
  warm_up "$url"
  load "$1" "$url" 1
  load "$1" "$url" 64
  load_binary "$1-bin" "$url" 1
  load_binary "$1-bin" "$url" 64
  stop_server
}

teal_start teal-unbatched "" || exit 1
teal_measure teal-unbatched
status=0
teal_start teal-batched "
[model.batching]
max_batch_size = $batch
max_queue_delay_us = $delay_us
" || status=$?
case $status in
  0) teal_measure teal-batched ;;
  3)
    notes+=("teal-batched: SKIPPED, teal refused [model.batching] (it exited before it was ready); its stderr:")
    while IFS= read -r line; do notes+=("    $line"); done < <(tail -n 20 "$work/teal-batched.log")
    ;;
  *) exit 1 ;;
esac

# MLServer: the same file through bench/mlserver_onnx.py, with adaptive batching.
mkdir -p "$work/mlserver/heavy"
mport=$(free_port)
cat >"$work/mlserver/settings.json" <<JSON
{"http_port": $mport, "grpc_port": $(free_port), "metrics_port": $(free_port), "debug": false, "parallel_workers": $workers}
JSON
cat >"$work/mlserver/heavy/model-settings.json" <<JSON
{"name": "heavy", "implementation": "mlserver_onnx.OnnxModel",
 "max_batch_size": $batch, "max_batch_time": $(awk -v d="$delay_us" 'BEGIN {print d / 1e6}'),
 "parameters": {"uri": "$model", "version": "v1"}}
JSON
(cd "$work/mlserver" && PYTHONPATH="$root/bench" exec setsid "$root/$venv/bin/mlserver" start . >"$work/mlserver.log" 2>&1) &
server=$!
status=0; wait_ready "http://127.0.0.1:$mport/v2/models/heavy/ready" 120 || status=$?
if [ $status != 0 ]; then echo "MLServer: not ready; its log:" >&2; tail -n 40 "$work/mlserver.log" >&2; exit 1; fi
check mlserver "http://127.0.0.1:$mport/v2/models/heavy/infer"
python3 - "$work" <<'PY'
import json, sys
label = lambda f: next(o["data"] for o in json.load(open(f"{sys.argv[1]}/answer-{f}.json"))["outputs"] if o["name"] == "label")
assert label("teal-unbatched") == label("mlserver"), "teal and MLServer disagree on the label"
PY
warm_up "http://127.0.0.1:$mport/v2/models/heavy/infer"
load mlserver "http://127.0.0.1:$mport/v2/models/heavy/infer" 1
load mlserver "http://127.0.0.1:$mport/v2/models/heavy/infer" 64
stop_server

# The ceiling: ONNX Runtime directly, one session per worker, each on its own thread.
ceiling=$(.venv/bin/python - "$model" "$workers" "$batch" "$seconds" <<'PY'
import sys, threading, time
import numpy as np, onnxruntime as ort
model, workers, batch, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def session():
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
sessions = [session() for _ in range(workers)]
def rows_per_second(rows, duration):
    x = np.round(np.random.RandomState(2).rand(rows, 784), 4).astype(np.float32)
    for s in sessions:
        s.run(["label", "probabilities"], {"input": x})  # warm-up
    counts = [0] * workers
    def loop(i, deadline):
        n = 0
        while time.perf_counter() < deadline:
            sessions[i].run(["label", "probabilities"], {"input": x})
            n += 1
        counts[i] = n
    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i, start + duration)) for i in range(workers)]
    for t in threads: t.start()
    for t in threads: t.join()
    return sum(counts) * rows / (time.perf_counter() - start)
# ONNX Runtime releases the GIL while it runs, so the threads compute in parallel.
print(f"{rows_per_second(batch, seconds):.1f} {rows_per_second(1, seconds / 2):.1f}")
PY
)

python3 - "$work/results" "$ceiling" "$cores" "$workers" "$batch" "$delay_us" "$seconds" "${notes[@]}" <<'PY'
import sys
results_file, ceiling, cores, workers, batch, delay_us, seconds = sys.argv[1:8]
notes = sys.argv[8:]
ceiling_batch, ceiling_one = map(float, ceiling.split())
delay_us = int(delay_us)
runs = {}
for line in open(results_file):
    name, conc, _, *kvs = line.split()
    r = {k: float(v) for k, v in (kv.split("=") for kv in kvs)}
    r["ok_rps"] = (r["requests"] - r["non2xx"]) / r["seconds"]
    runs[name, int(conc)] = r
print(f"machine: {cores} cores; settings: BATCH={batch} DELAY_US={delay_us} W={workers} (workers, MLServer parallel_workers, ceiling threads)")
print(f"load: wrk -t1 -d{seconds}s, one V2 row per request (FP32 [1, 784]) on models/heavy (MLP 784-1024-1024-10);"
      " -bin: the same row as a binary-tensor request (3,136 bytes after a JSON header)")
print(f"{'':18}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}{'2xx/s':>9}{'of ceiling':>11}")
for (name, conc), r in runs.items():
    print(f"{name:18}{conc:>5}{r['rps']:>9.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['non2xx']:>9.0f}{r['errors']:>9.0f}{r['ok_rps']:>9.0f}{r['ok_rps'] / ceiling_batch:>10.0%}")
print(f"{'ceiling (ORT)':18}{'-':>5}{ceiling_batch:>9.0f} rows/s in batches of {batch}; {ceiling_one:.0f} rows/s one row a call")
print()
b64, u64, m64 = runs.get(("teal-batched", 64)), runs.get(("teal-unbatched", 64)), runs.get(("mlserver", 64))
def ratio(label, a, b):
    print(f"{label}: " + (f"{a['ok_rps'] / (b['ok_rps'] if isinstance(b, dict) else b):.2f}x" if a and b else "n/a (teal batched skipped)"))
print("c=64, 2xx answers per second (each one row):")
ratio("  teal batched / ceiling", b64, ceiling_batch)
ratio("  teal batched / teal unbatched", b64, u64)
ratio("  teal batched / MLServer (batched)", b64, m64)
bb64, ub64 = runs.get(("teal-batched-bin", 64)), runs.get(("teal-unbatched-bin", 64))
print("c=64, binary-tensor requests (as tritonclient and perf_analyzer send them):")
ratio("  teal batched / ceiling", bb64, ceiling_batch)
ratio("  teal batched / teal unbatched", bb64, ub64)
ratio("  teal batched / MLServer (batched, JSON)", bb64, m64)
if u64 and m64:
    print(f"  teal unbatched / ceiling one row a call: {u64['ok_rps'] / ceiling_one:.2f}x; MLServer / ceiling: {m64['ok_rps'] / ceiling_batch:.2f}x")
b1, u1, m1 = runs.get(("teal-batched", 1)), runs.get(("teal-unbatched", 1)), runs.get(("mlserver", 1))
print("c=1, the wait for a batch to fill:")
if b1 and u1:
    print(f"  teal batched p50 - unbatched p50 = {(b1['p50_ms'] - u1['p50_ms']) * 1000:.0f} us (DELAY_US = {delay_us} us)")
else:
    print("  teal batched p50 - unbatched p50: n/a (teal batched skipped)")
if m1 and u1:
    print(f"  MLServer p50 - teal unbatched p50 = {(m1['p50_ms'] - u1['p50_ms']) * 1000:.0f} us (its max_batch_time = {delay_us} us, plus its protocol)")
bad = [f"{n} c={c}" for (n, c), r in runs.items() if r["non2xx"] or r["errors"]]
if bad:
    print(f"note: non-2xx answers or socket errors in {', '.join(bad)}: req/s and the latencies count them,"
          " 2xx/s, 'of ceiling' and the ratios do not (teal answers 503 past [model.limits], whose defaults"
          " admit fewer than 64 requests at once to an unbatched slot)")
for note in notes:
    print(f"note: {note}" if not note.startswith("    ") else note)
PY
