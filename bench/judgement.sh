#!/usr/bin/env bash
# How often the gates judge right: false failures of harmless candidates and misses of
# harmful ones, each over RUNS validations (`teal validate --holdout`), counted per verdict.
#
#   saturated   two CPU-spinning processes, plus live load at c=8 on the live slot (wrk)
#     harmless: digits v2 against v1, in-process               (target: pass >= 19 of 20)
#     harmless: digits v2 retrained with another seed           (target: pass >= 19 of 20)
#     harmful:  a model server 15 ms slower than live's         (target: fail latency 20 of 20)
#   quiet       nothing else running
#     harmful:  a model server twice as slow as live's, and at least 1 ms more
#                                                               (target: fail latency >= 19 of 20)
#
#   bench/judgement.sh [RUNS] [BASELINE_TEAL]
#
# RUNS defaults to 20. BASELINE_TEAL, when given, is another teal binary (an older release)
# measured the same way in the same run, printed beside this one's figures. TEAL names the
# binary under test (default: this tree's, built for release).
# The model servers are tests/python/onnx_model_server.py, started by teal as process slots,
# one for live and one for the candidate, the same model with a different added delay.
#
# Each case prints one line: the verdicts' counts (pass, fail, inconclusive, and errors:
# validations that could not run or gave no report), the gates that did not pass and how
# often, and for saturated cases the live load's rate and its failed requests.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
baseline=${2:-}
case $runs in '' | *[!0-9]* | 0) echo "judgement: RUNS must be a positive number, not '$runs'" >&2; exit 2 ;; esac
. bench/common.sh
prepare_load_run
holdout="$PWD/models/digits/holdout.jsonl"
digits_body "$work/body.json"

# Every waiting step is bounded: seconds until teal serves (both slots loaded), for one
# validation, and for a process to exit after SIGTERM before it gets SIGKILL.
ready_s=180 validate_s=300 stop_s=20

# What the case running now started (see stop_case in bench/common.sh). The cases run in this
# shell, not in a subshell, so the exit trap below reaches all of them, on an interrupt too.
pids=() teal="" groups=()

trap 'stop_case; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# slot COLOR VERSION KIND ARG: one [model.COLOR] table: an ONNX file run in-process (ARG its
# path), or a model server teal starts (ARG its added delay in ms).
slot() {
  local color=$1 version=$2 kind=$3 arg=$4
  if [ "$kind" = onnx ]; then
    printf '[model.%s]\nversion = "%s"\nkind = "onnx"\npath = "%s"\n' "$color" "$version" "$arg"
  else
    printf '[model.%s]\nversion = "%s"\nkind = "process"\nworkdir = "%s"\nready_timeout_ms = 60000\ncommand = ".venv/bin/python tests/python/onnx_model_server.py --port {port} --model models/digits/v1/model.onnx --version %s --delay-ms %s"\n' \
      "$color" "$version" "$PWD" "$version" "$arg"
  fi
}

# judge BIN LOAD BLUE GREEN: RUNS validations of green against blue; sets `result` to
# "pass N, fail N, inconclusive N, errors N of RUNS; gates not passing: ...".
judge() {
  local bin=$1 load=$2 blue=$3 green=$4
  local port admin dir
  port=$(free_port); admin=$(free_port)
  while [ "$admin" = "$port" ]; do admin=$(free_port); done
  dir=$(mktemp -d -p "$work")
  { printf '[server]\nstate_dir = "%s/state"\n\n[[model]]\nname = "digits"\n\n' "$dir"
    # shellcheck disable=SC2086
    slot blue $blue; echo; slot green $green; } > "$dir/teal.toml"
  TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench "$bin" serve --config "$dir/teal.toml" \
    --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >"$dir/teal.log" 2>&1 &
  teal=$!
  local ready="" i
  for ((i = 0; i < ready_s * 10; i++)); do
    curl -fs -m 1 -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && { ready=1; break; }
    alive "$teal" || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    local why
    alive "$teal" && why="not ready after $ready_s s" || why="teal exited"
    why="$why: $(tail -n 1 "$dir/teal.log" 2>/dev/null | cut -c1-200)"
    stop_case
    result="pass 0, fail 0, inconclusive 0, errors $runs of $runs; $why"
    return
  fi
  local wrk_pid=""
  if [ "$load" = saturated ]; then
    spin
    BODY_FILE=$work/body.json wrk -t1 -c8 -d1h -s bench/v2_post.lua \
      "http://127.0.0.1:$port/v2/models/digits/infer" >"$dir/wrk.out" 2>&1 &
    wrk_pid=$!
    pids+=("$wrk_pid")
    sleep 1
  fi
  local pass=0 fail=0 inconclusive=0 errors=0 gates="" error="" report verdict run
  for ((run = 0; run < runs; run++)); do
    report=$(TEAL_ADMIN_URL=http://127.0.0.1:$admin TEAL_ADMIN_TOKEN=bench \
      timeout --foreground -k 5 "$validate_s" "$bin" validate digits --holdout "$holdout" --json \
      2>"$dir/validate.err" || true)
    # "VERDICT GATE,GATE" (the gates not passing), or "error WHY".
    verdict=$(printf '%s' "$report" | python3 -c 'import json,sys
try:
    r = json.load(sys.stdin)
    bad = [g["gate"] for g in r["gates"] if g["verdict"] != "pass"]
    print(r["verdict"], ",".join(bad))
except Exception as e:
    print("error", "no report:", type(e).__name__)')
    case "${verdict%% *}" in
      pass) pass=$((pass + 1)) ;;
      fail) fail=$((fail + 1)) ;;
      inconclusive) inconclusive=$((inconclusive + 1)) ;;
      *) errors=$((errors + 1))
         error=$(tail -n 1 "$dir/validate.err" | cut -c1-200)
         [ -n "$error" ] || error=${verdict#error }
         continue ;;
    esac
    gates="$gates ${verdict#* }"
  done
  local load_figures=""
  if [ -n "$wrk_pid" ]; then
    # SIGINT makes wrk print its summary (bench/v2_post.lua's RESULT line) before it exits.
    stop INT "$wrk_pid"
    load_figures=$(sed -n 's/^RESULT .* errors=\([0-9]*\) non2xx=\([0-9]*\) .* rps=\([0-9.]*\) .*/live load \3 req\/s, \1 errors, \2 non-2xx/p' "$dir/wrk.out")
    [ -n "$load_figures" ] || load_figures="live load: no summary from wrk"
  fi
  stop_case
  local counts
  counts=$(printf '%s\n' $gates | tr ',' '\n' | sed '/^$/d' | sort | uniq -c |
    awk '{printf "%s%s x%d", sep, $2, $1; sep=", "}')
  result="pass $pass, fail $fail, inconclusive $inconclusive, errors $errors of $runs"
  result+="${counts:+; gates not passing: $counts}${error:+; last error: $error}"
  result+="${load_figures:+; $load_figures}"
}

cases=(
  "harmless digits v2, saturated|saturated|v1 onnx $PWD/models/digits/v1/model.onnx|v2 onnx $PWD/models/digits/v2/model.onnx"
  "harmless digits v2 reseeded, saturated|saturated|v1 onnx $PWD/models/digits/v1/model.onnx|v2r onnx $PWD/models/digits/variants/v2-reseed/model.onnx"
  "harmful: server 15 ms slower, saturated|saturated|v1 process 0|v1s process 15"
  "harmful: server twice as slow (1.5 ms more), quiet|quiet|v1 process 1.5|v1s process 3"
)
echo "judgement: $runs validations per case, holdout of $(wc -l < "$holdout") rows; $(nproc) cores"
for case in "${cases[@]}"; do
  IFS='|' read -r label load blue green <<<"$case"
  judge "${TEAL:-target/release/teal}" "$load" "$blue" "$green"
  if [ -n "$baseline" ]; then
    now=$result
    judge "$baseline" "$load" "$blue" "$green"
    echo "judgement: $label: $now [before: $result]"
  else
    echo "judgement: $label: $result"
  fi
done
