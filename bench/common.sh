# Shared by the benchmark scripts (sourced from the repository's root).

# prepare_load_run: a work folder in $work, removed (and background jobs stopped) on exit;
# wrk installed if missing; ONNX Runtime set up and teal built for release.
prepare_load_run() {
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  scripts/setup
  cargo build --release --locked --quiet
}

# A free port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# digits_body FILE: writes a V2 infer request of the first digits holdout row (FP32 [1, 64]).
digits_body() {
  python3 - "$1" <<'PY'
import json, sys
row = json.loads(open("models/digits/holdout.jsonl").readline())["features"]
json.dump({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}, open(sys.argv[1], "w"))
PY
}

# Process bookkeeping for scripts that start and stop things case by case (judgement.sh,
# after_switch.sh). The script declares, in its own shell (not a subshell, so its exit trap
# reaches them, on an interrupt too): `pids` (spinners, load generators), `teal` (its pid) and
# `groups` (process groups of the model servers teal started, each leading its own), and
# `stop_s`, the seconds a process has to exit after a signal before it gets SIGKILL.

# alive PID: the process exists and has not exited (a zombie waiting to be reaped has).
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }

# stop SIGNAL PID...: sends SIGNAL, SIGKILL to those still running after stop_s, then reaps.
stop() {
  local signal=$1 pid i; shift
  [ $# -gt 0 ] || return 0
  kill -s "$signal" "$@" 2>/dev/null || true
  for pid in "$@"; do
    for ((i = 0; i < stop_s * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
  done
}

# stop_case: stops everything the case started, and checks nothing of it is left.
stop_case() {
  local group
  stop TERM "${pids[@]}"
  pids=()
  if [ -n "$teal" ]; then
    # teal stops its model servers on SIGTERM; their groups are noted first, for a teal that
    # had to be killed.
    groups+=($(pgrep -P "$teal" || true))
    stop TERM "$teal"
    teal=""
  fi
  for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
  groups=()
}

# spin: two CPU-spinning processes, noted in pids.
spin() { for _ in 1 2; do (while :; do :; done) & pids+=($!); done; }
