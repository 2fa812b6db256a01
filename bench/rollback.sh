#!/usr/bin/env bash
# Time from a fault in a new live version to traffic back on the old one, with the rollback
# rules doing it on their own. teal serves digits v1 (blue); a rollout moves traffic to v3,
# served by a separate model server teal starts (tests/python/onnx_model_server.py) that
# fails every request once a file appears. Clients keep sending requests throughout; the
# script creates the file and watches the answers.
#
#   bench/rollback.sh [CHECK_INTERVAL] [CONSECUTIVE]     (defaults: 1s and 3, teal's own)
set -euo pipefail
cd "$(dirname "$0")/.."
interval=${1:-1s}
consecutive=${2:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
scripts/setup
cargo build --release --locked --quiet
. bench/common.sh
port=$(free_port); admin=$(free_port)
cat > "$work/teal.toml" <<TOML
[server]
state_dir = "$work/state"
# The candidate is a process slot sent through the admin API.
allow_commands = true
[[model]]
name = "digits"
[model.rollout]
evidence = { holdout = "$PWD/models/digits/holdout.jsonl" }
observe_ms = "10m"
rules = { check_interval_ms = "$interval", consecutive = $consecutive }
[model.blue]
version = "v1"
kind = "onnx"
path = "$PWD/models/digits/v1/model.onnx"
TOML
TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench target/release/teal serve --config "$work/teal.toml" \
  --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >/dev/null &
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
python3 - "$port" "$admin" "$work" "$interval" "$consecutive" <<'PY'
import json, os, sys, threading, time, urllib.request, urllib.error
port, admin, work, interval, consecutive = sys.argv[1:]
row = json.loads(open("models/digits/holdout.jsonl").readline())["features"]
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}).encode()
def call(url, data=None, method="GET"):
    req = urllib.request.Request(url, data=data, method=method, headers={"authorization": "Bearer bench", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
fault = os.path.join(work, "fault")
candidate = {"version": "v3", "kind": "process", "workdir": os.getcwd(), "ready_timeout_ms": 60000,
             "command": f".venv/bin/python tests/python/onnx_model_server.py --port {{port}} --model models/digits/v2/model.onnx --version v3 --fail-when {fault}"}
status, _, text = call(f"http://127.0.0.1:{admin}/api/v1/models/digits/rollouts",
                       json.dumps({"candidate": candidate, "settings": {"evidence": None}}).encode(), "POST")
assert status == 202, text
while json.loads(call(f"http://127.0.0.1:{admin}/api/v1/models/digits/rollout")[2])["phase_name"] != "observing":
    time.sleep(0.05)
answers, stop = [], threading.Event()
def client():
    while not stop.is_set():
        s, h, _ = call(f"http://127.0.0.1:{port}/v2/models/digits/infer", body, "POST")
        lower = {k.lower(): v for k, v in h.items()}
        # An answer v1 gave in v3's place (failover) says so; it is not traffic back on v1.
        version = "failover" if "x-teal-failover" in lower else lower.get("x-teal-version", "")
        answers.append((time.time(), s, version))
threads = [threading.Thread(target=client) for _ in range(4)]
for t in threads: t.start()
time.sleep(2)
open(fault, "w").close()
t0 = time.time()
while json.loads(call(f"http://127.0.0.1:{admin}/api/v1/models/digits/rollout")[2])["phase_name"] != "rolled_back":
    assert time.time() - t0 < 60, "no rollback within 60 s"
    time.sleep(0.01)
time.sleep(1)
stop.set()
for t in threads: t.join()
history = json.loads(call(f"http://127.0.0.1:{admin}/api/v1/models/digits/history?limit=100")[2])["events"]
decided = [e for e in history if e["kind"] == "rollout" and e["detail"]["to"] == "rolled_back"][0]
back = min(t for t, s, v in answers if t > t0 and s == 200 and v == "v1")
# v3's failures: those a client saw, and those the old version answered instead (failover).
first_fail = min((t for t, s, v in answers if t > t0 and (s != 200 or v == "failover")), default=None)
failed = sum(1 for t, s, v in answers if t > t0 and s != 200)
failovers = sum(1 for t, s, v in answers if t > t0 and v == "failover")
print(f"rules: check every {interval}, {consecutive} failing checks in a row; 4 clients, {len(answers)} requests")
if first_fail is not None:
    print(f"fault appears -> first failed answer on v3:    {1000*(first_fail - t0):8.0f} ms")
print(f"fault appears -> traffic back on v1:           {1000*(back - t0):8.0f} ms")
print(f"rollback decided (event) -> first v1 answer:   {1000*back - decided['at_ms']:8.1f} ms")
print(f"requests v3 failed in between: {failed + failovers}; answered by v1 instead (failover): {failovers}; failed for a client: {failed}")
print(f"cause: {decided['detail']['cause']}")
PY
