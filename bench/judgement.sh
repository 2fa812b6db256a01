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
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
baseline=${2:-}
. bench/common.sh
prepare_load_run
holdout="$PWD/models/digits/holdout.jsonl"
digits_body "$work/body.json"

spinners=()
spin() { for _ in 1 2; do (while :; do :; done) & spinners+=($!); done; }
unspin() { kill "${spinners[@]}" 2>/dev/null || true; wait "${spinners[@]}" 2>/dev/null || true; spinners=(); }

# slot COLOR VERSION KIND ARG: one [model.COLOR] table.
slot() {
  local color=$1 version=$2 kind=$3 arg=$4
  if [ "$kind" = onnx ]; then
    printf '[model.%s]\nversion = "%s"\nkind = "onnx"\npath = "%s"\n' "$color" "$version" "$arg"
  else
    printf '[model.%s]\nversion = "%s"\nkind = "process"\nworkdir = "%s"\nready_timeout_ms = 60000\ncommand = "python3 tests/python/onnx_model_server.py --port {port} --model models/digits/v1/model.onnx --version %s --delay-ms %s"\n' \
      "$color" "$version" "$PWD" "$version" "$arg"
  fi
}

# judge BIN LABEL LOAD BLUE GREEN: RUNS validations of green against blue; prints
# "pass N fail N inconclusive N; failed gates: ..." for the label.
judge() {
  local bin=$1 label=$2 load=$3 blue=$4 green=$5
  local port admin dir
  port=$(free_port); admin=$(free_port); dir=$(mktemp -d -p "$work")
  { printf '[server]\nstate_dir = "%s/state"\n\n[[model]]\nname = "digits"\n\n' "$dir"
    # shellcheck disable=SC2086
    slot blue $blue; echo; slot green $green; } > "$dir/teal.toml"
  TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench "$bin" serve --config "$dir/teal.toml" \
    --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >"$dir/teal.log" 2>&1 &
  local teal=$!
  for _ in $(seq 1 1200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
  local wrk_pid=""
  if [ "$load" = saturated ]; then
    spin
    BODY_FILE=$work/body.json wrk -t1 -c8 -d1h -s bench/v2_post.lua \
      "http://127.0.0.1:$port/v2/models/digits/infer" >/dev/null 2>&1 &
    wrk_pid=$!
    sleep 1
  fi
  local pass=0 fail=0 inconclusive=0 gates=""
  for _ in $(seq 1 "$runs"); do
    local report
    report=$(TEAL_ADMIN_URL=http://127.0.0.1:$admin TEAL_ADMIN_TOKEN=bench \
      "$bin" validate digits --holdout "$holdout" --json 2>/dev/null || true)
    local verdict
    verdict=$(printf '%s' "$report" | python3 -c 'import json,sys
try: r=json.load(sys.stdin)
except Exception: print("error"); sys.exit()
bad=[g["gate"] for g in r.get("gates",[]) if g["verdict"]!="pass"]
print(r.get("verdict","error"), ",".join(bad))')
    case "${verdict%% *}" in
      pass) pass=$((pass + 1)) ;;
      fail) fail=$((fail + 1)) ;;
      *) inconclusive=$((inconclusive + 1)) ;;
    esac
    [ -n "${verdict#* }" ] && [ "${verdict#* }" != "$verdict" ] && gates="$gates ${verdict#* }"
  done
  [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
  unspin
  kill "$teal" 2>/dev/null || true; wait "$teal" 2>/dev/null || true
  local counts
  counts=$(printf '%s\n' $gates | sort | uniq -c | awk 'NF==2 {printf "%s%s x%d", sep, $2, $1; sep=", "}')
  echo "pass $pass, fail $fail, inconclusive $inconclusive of $runs${counts:+; gates not passing: $counts}"
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
  now=$(judge "${TEAL:-target/release/teal}" "$label" "$load" "$blue" "$green")
  if [ -n "$baseline" ]; then
    before=$(judge "$baseline" "$label" "$load" "$blue" "$green")
    echo "judgement: $label: $now [before: $before]"
  else
    echo "judgement: $label: $now"
  fi
done
