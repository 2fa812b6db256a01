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
