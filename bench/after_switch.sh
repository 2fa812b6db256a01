#!/usr/bin/env bash
# How often the rules after the switch judge right: rollouts of a candidate through a 60 s
# bake on a saturated machine, RUNS per case, counted by how each ended.
#
#   harmless   the same model server as live's                    (target: promoted RUNS of RUNS)
#   slower     a model server 15 ms slower than live's            (target: rolled back RUNS of RUNS)
#   errors     a model server failing 2% of requests with a 500   (target: rolled back RUNS of RUNS)
#
#   bench/after_switch.sh [RUNS] [BASELINE_TEAL]
#
# RUNS defaults to 10. BASELINE_TEAL, when given, is another teal binary (an older release)
# measured the same way in the same run, printed beside this one's figures. TEAL names the
# binary under test (default: this tree's, built for release).
#
# Each rollout runs on a teal of its own, started for it: live is digits v1 on
# tests/python/onnx_model_server.py, a process slot; two CPU-spinning processes and live
# load at c=8 (wrk) saturate the machine; then a rollout (admin API) of the candidate, the
# same server with the case's delay or error rate, a process slot too. The rollout skips
# the gates (evidence none), bakes for 60 s with checks every second, and keeps nothing
# warm after (keep_warm_ms 0); every other setting is the binary's default. Each binary is
# given only settings it knows.
#
# A rollout is followed until it ends, or until its bake ended without a decision (the
# rollout then waits for an operator or lengthens the bake: counted as inconclusive), and
# is then stopped with its teal. Per case and binary, one line: how the rollouts ended (the
# rule that rolled each back, from its outcome), the median seconds from the switch to the
# rollback (audit events), the median requests the candidate answered before it (teal's
# model_server_requests_total for the candidate's version, read once the candidate has no
# traffic), and the requests that failed as the clients saw them (wrk: non-2xx answers and
# socket errors) over the rollouts' whole runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
baseline=${2:-}
case $runs in '' | *[!0-9]* | 0) echo "after_switch: RUNS must be a positive number, not '$runs'" >&2; exit 2 ;; esac
. bench/common.sh
prepare_load_run
digits_body "$work/body.json"

# Every waiting step is bounded: seconds until teal serves, from the rollout's start until
# its bake begins (the candidate deployed and ready), past the bake's end for the rollout to
# decide, and for a process to exit after SIGTERM before it gets SIGKILL.
ready_s=180 deploy_s=180 grace_s=10 stop_s=20
observe_ms=60000

# What the rollout running now started (see stop_case in bench/common.sh). The rollouts run
# in this shell, not in a subshell, so the exit trap below reaches all of them.
pids=() teal="" groups=()
trap 'stop_case; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# server VERSION ARGS: the command line of a model server for digits v1 as VERSION.
server() {
  printf '.venv/bin/python tests/python/onnx_model_server.py --port {port} --model models/digits/v1/model.onnx --version %s %s' "$1" "$2"
}

# rollout BIN CASE RUN ARGS RECORDS: one rollout of a candidate started with ARGS, on a teal
# of its own under saturation; appends a JSON line to RECORDS.
rollout() {
  local bin=$1 label=$2 run=$3 args=$4 records=$5
  local port admin dir
  port=$(free_port); admin=$(free_port)
  while [ "$admin" = "$port" ]; do admin=$(free_port); done
  dir=$(mktemp -d -p "$work")
  cat >"$dir/teal.toml" <<TOML
[server]
state_dir = "$dir/state"
# The candidate is a process slot sent through the admin API.
allow_commands = true

[[model]]
name = "digits"

[model.blue]
version = "v1"
kind = "process"
workdir = "$PWD"
ready_timeout_ms = 60000
command = "$(server v1 "")"
TOML
  TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench "$bin" serve --config "$dir/teal.toml" \
    --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >"$dir/teal.log" 2>&1 &
  teal=$!
  local ready="" i
  for ((i = 0; i < ready_s * 10; i++)); do
    curl -fs -m 1 -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && { ready=1; break; }
    alive "$teal" || break
    sleep 0.1
  done
  local record
  if [ -z "$ready" ]; then
    local why
    alive "$teal" && why="not ready after $ready_s s" || why="teal exited"
    why="$why: $(tail -n 1 "$dir/teal.log" 2>/dev/null | cut -c1-200)"
    stop_case
    record=$(python3 -c 'import json,sys; print(json.dumps({"end": "error", "why": sys.argv[1]}))' "$why")
  else
    spin
    BODY_FILE=$work/body.json wrk -t1 -c8 -d1h -s bench/v2_post.lua \
      "http://127.0.0.1:$port/v2/models/digits/infer" >"$dir/wrk.out" 2>&1 &
    pids+=($!)
    local wrk_pid=$!
    sleep 2
    # The candidate's version is new in every rollout, so its request counter is its own.
    record=$(python3 - "$admin" "$PWD" "c$((run + 1))" "$(server "c$((run + 1))" "$args")" \
      "$observe_ms" "$deploy_s" "$grace_s" <<'PY'
import json, sys, time, urllib.request, urllib.error
admin, workdir, version, command = sys.argv[1:5]
observe_ms, deploy_s, grace_s = (int(a) for a in sys.argv[5:8])
api = f"http://127.0.0.1:{admin}"

def call(path, data=None, method="GET"):
    req = urllib.request.Request(api + path, data=data, method=method,
                                 headers={"authorization": "Bearer bench", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def state():
    for _ in range(10):
        try:
            status, body = call("/api/v1/models/digits/rollout")
            if status == 200:
                return json.loads(body)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return None

candidate = {"version": version, "kind": "process", "workdir": workdir,
             "ready_timeout_ms": 60000, "command": command}
settings = {"evidence": None, "observe_ms": observe_ms, "keep_warm_ms": 0}
status, body = call("/api/v1/models/digits/rollouts",
                    json.dumps({"candidate": candidate, "settings": settings}).encode(), "POST")
if status != 202:
    print(json.dumps({"end": "error", "why": f"rollout refused ({status}): {body.decode()[:200]}"}))
    sys.exit()
started = time.time()
bake_end = None
while True:
    r = state()
    if r is None:
        end = "error"
        break
    phase = r["phase_name"]
    if r["terminal"] or phase in ("promoted", "tearing_down"):
        end = phase
        break
    # The bake ended without a decision: the rollout waits for an operator, or lengthened
    # its bake (`extended`, in the releases that do).
    if phase == "observing" and (r.get("waiting") or r.get("extended", 0) > 0):
        end = "inconclusive"
        break
    if phase == "observing" and bake_end is None:
        bake_end = time.time() + observe_ms / 1000 + grace_s
    if bake_end is None and time.time() - started > deploy_s:
        end = "not observing after %d s (%s)" % (deploy_s, phase)
        break
    if bake_end is not None and time.time() > bake_end:
        end = "undecided"
        break
    time.sleep(0.2)

events = json.loads(call("/api/v1/models/digits/history?limit=100")[1]).get("events", [])
rid = (r or {}).get("id")
moves = [e for e in events if e["kind"] == "rollout" and e["detail"].get("rollout") == rid]
at = {}
for e in sorted(moves, key=lambda e: e["at_ms"]):
    at.setdefault(e["detail"]["to"], e["at_ms"])
last_cause = max(moves, key=lambda e: e["at_ms"])["detail"]["cause"] if moves else ""
# Requests the candidate answered (a failed one included), once it has no traffic left.
answered = None
if end == "rolled_back":
    time.sleep(0.5)
    metrics = call("/metrics")[1].decode()
    answered = 0
    for line in metrics.splitlines():
        if line.startswith("model_server_requests_total{") and f'version="{version}"' in line:
            answered += int(float(line.rsplit(" ", 1)[1]))
switch = at.get("switching")
print(json.dumps({
    "end": end,
    "outcome": (r or {}).get("outcome"),
    "cause": last_cause,
    "seconds": (at["rolled_back"] - switch) / 1000 if end == "rolled_back" and switch else None,
    "answered": answered,
    "tally": (r or {}).get("tally", {}).get("requests"),
    "baseline": (r or {}).get("baseline", {}).get("requests", (r or {}).get("baseline_requests")),
    "checks": ["%s %s: %s" % (o["rule"], o["verdict"], o["detail"]) for o in (r or {}).get("last_check", [])],
}))
PY
    ) || record='{"end": "error", "why": "the watcher failed"}'
    # SIGINT makes wrk print its summary (bench/v2_post.lua's RESULT line) before it exits.
    stop INT "$wrk_pid"
    stop_case
    local load
    load=$(sed -n 's/^RESULT requests=\([0-9]*\) errors=\([0-9]*\) non2xx=\([0-9]*\) .*/\1 \2 \3/p' "$dir/wrk.out")
    record=$(python3 -c 'import json,sys
r = json.loads(sys.argv[1]); n = sys.argv[2].split()
if n: r["load"] = {"requests": int(n[0]), "failed": int(n[1]) + int(n[2])}
print(json.dumps(r))' "$record" "$load")
  fi
  printf '%s\n' "$record" >>"$records"
  echo "after_switch: $label run $((run + 1)) ($(basename "$bin")): $record"
}

# summary RECORDS EXPECTED: one line on how the rollouts in RECORDS ended; for the last one
# that did not end as EXPECTED (promoted or rolled_back), what its rules said.
summary() {
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
expected = sys.argv[2]
ends = [r["end"] for r in rs]
back = [r for r in rs if r["end"] == "rolled_back"]
promoted = sum(e in ("promoted", "tearing_down", "torn_down") for e in ends)
inconclusive = ends.count("inconclusive")
other = len(rs) - len(back) - promoted - inconclusive
rules = {}
for r in back:
    rule = (r.get("outcome") or "?").split(":")[0]
    rules[rule] = rules.get(rule, 0) + 1
line = f"rolled back {len(back)}, promoted {promoted}, inconclusive {inconclusive}, other {other} of {len(rs)}"
if rules:
    line += "; rolled back by " + ", ".join(f"{k} x{v}" for k, v in sorted(rules.items()))
secs = [r["seconds"] for r in back if r.get("seconds") is not None]
if secs:
    line += f"; median {statistics.median(secs):.1f} s from the switch to the rollback ({min(secs):.1f}-{max(secs):.1f})"
answered = [r["answered"] for r in back if r.get("answered") is not None]
if answered:
    line += f" and {statistics.median(answered):.0f} requests on the candidate before it ({min(answered)}-{max(answered)})"
loads = [r["load"] for r in rs if "load" in r]
if loads:
    line += f"; client-visible failures {sum(l['failed'] for l in loads)} of {sum(l['requests'] for l in loads)} requests"
def ended(r):
    return "promoted" if r["end"] in ("promoted", "tearing_down", "torn_down") else r["end"]
odd = [r for r in rs if ended(r) != expected]
if odd:
    r = odd[-1]
    line += f"; the last not {expected.replace('_', ' ')}: {r['end']}"
    if r.get("why"):
        line += f" ({r['why']})"
    else:
        line += f", {r['baseline']} requests on the old version before the switch; last transition: {r['cause']}; last check: {'; '.join(r['checks'])}"
print(line)
PY
}

# LABEL|EXPECTED END|CANDIDATE'S SERVER ARGUMENTS ({run}: the run, from 1)
cases=(
  "harmless: the same server|promoted|"
  "slower: a server 15 ms slower|rolled_back|--delay-ms 15"
  "errors: a server failing 2% of requests|rolled_back|--error-rate 0.02 --seed {run}"
)
echo "after_switch: $runs rollouts per case, 60 s bake, checks every 1 s, saturated (2 spinners + wrk -c8); $(nproc) cores"
for case in "${cases[@]}"; do
  IFS='|' read -r label expected args <<<"$case"
  bins=("${TEAL:-target/release/teal}")
  [ -z "$baseline" ] || bins+=("$baseline")
  results=()
  for bin in "${bins[@]}"; do
    records=$(mktemp -p "$work")
    for ((run = 0; run < runs; run++)); do
      rollout "$bin" "$label" "$run" "${args//\{run\}/$((run + 1))}" "$records"
    done
    results+=("$(summary "$records" "$expected")")
  done
  if [ -n "$baseline" ]; then
    echo "after_switch: $label: ${results[0]} [before: ${results[1]}]"
  else
    echo "after_switch: $label: ${results[0]}"
  fi
done
