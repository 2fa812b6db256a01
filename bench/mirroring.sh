#!/usr/bin/env bash
# Validation costs, side by side in one run:
#   1. live latency with no mirroring, then with 100% of live traffic mirrored to the
#      candidate (a shadow validation session open), same load;
#   2. time and memory of a 10,000-sample holdout validation.
#
#   bench/mirroring.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
. bench/common.sh
prepare_load_run
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
port=$(free_port); admin=$(free_port)
python3 - "$work/body.json" "$work/holdout10k.jsonl" <<'PY'
import json, sys
rows = open("models/digits/holdout.jsonl").read().splitlines()
json.dump({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": json.loads(rows[0])["features"]}]}, open(sys.argv[1], "w"))
with open(sys.argv[2], "w") as f:
    for i in range(10_000):
        f.write(rows[i % len(rows)] + "\n")
PY

export TEAL_ADMIN_TOKEN=bench TEAL_ADMIN_URL=http://127.0.0.1:$admin TEAL_LOG=warn
TEAL_STATE_DIR=$work/state target/release/teal serve --config examples/teal.toml --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >/dev/null &
pid=$!
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
load() { BODY_FILE=$work/body.json wrk -t1 -c"$1" -d"${seconds}s" -s bench/v2_post.lua "http://127.0.0.1:$port/v2/models/digits/infer" | grep '^RESULT'; }

off=$(load "$connections"); off4=$(load 4)
target/release/teal validate digits --shadow 100000 --window $((2 * seconds + 5)) --json > "$work/shadow.json" 2>/dev/null &
validate_pid=$!
sleep 1
on=$(load "$connections"); on4=$(load 4)
wait $validate_pid || true

idle=$(rss_mb $pid)
start=$(date +%s%N)
target/release/teal validate digits --holdout "$work/holdout10k.jsonl" --json > "$work/report.json" || true
validate_ms=$(( ($(date +%s%N) - start) / 1000000 ))
after=$(rss_mb $pid); peak=$(hwm_mb $pid)

python3 - "$off" "$on" "$work/shadow.json" "$work/report.json" "$validate_ms" "$idle" "$after" "$peak" "$connections" "$seconds" "$off4" "$on4" <<'PY'
import json, os, sys
def parse(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
off, on = parse(sys.argv[1]), parse(sys.argv[2])
off4, on4 = parse(sys.argv[11]), parse(sys.argv[12])
shadow = json.load(open(sys.argv[3]))
report = json.load(open(sys.argv[4]))
print(f"machine: {os.cpu_count()} cores; wrk -t1 -d{sys.argv[10]}s on digits v1 (in-process), candidate v2 (in-process)")
print(f"{'':32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
c = sys.argv[9]
for name, r in [(f"c={c} no mirroring", off), (f"c={c} 100% mirrored to green", on), ("c=4 no mirroring", off4), ("c=4 100% mirrored to green", on4)]:
    print(f"{name:32}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['errors'] + r['non2xx']:>8.0f}")
print(f"ratio mirrored/unmirrored at c={c}: p99 {on['p99_ms']/off['p99_ms']:.2f}x, throughput {on['rps']/off['rps']:.2f}x")
print(f"ratio mirrored/unmirrored at c=4: p99 {on4['p99_ms']/off4['p99_ms']:.2f}x, throughput {on4['rps']/off4['rps']:.2f}x; comparisons collected: {shadow.get('samples')}")
print(f"10,000-sample holdout validation: {sys.argv[5]} ms end to end ({report['samples']} samples, verdict {report['verdict']}); "
      f"teal RSS {sys.argv[6]} MB before, {sys.argv[7]} MB after, peak {sys.argv[8]} MB")
PY
