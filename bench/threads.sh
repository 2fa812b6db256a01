#!/usr/bin/env bash
# One event loop against work-stealing threads, side by side in one run: teal serving digits
# v1 in-process (examples/teal.toml, request log on, as it starts) with `--threads 1` and
# with `--threads THREADS` (default: a thread per core). Both servers run at once and take
# turns under load for ROUNDS rounds; the medians are compared. (The same comparison for the
# upstream gateway is part of bench/gateway.sh.)
#
#   bench/threads.sh [SECONDS] [CONNECTIONS] [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
connections=${2:-32}
rounds=${3:-3}
threads=${4:-$(nproc)}
[ "$threads" -gt 1 ] || { echo "THREADS must be 2 or more (this machine has $(nproc) core(s); give THREADS)" >&2; exit 2; }
. bench/common.sh
prepare_load_run
digits_body "$work/body.json"
declare -A port
for n in 1 "$threads"; do
  port[$n]=$(free_port)
  TEAL_LOG=warn TEAL_ADMIN_TOKEN=bench TEAL_STATE_DIR=$(mktemp -d -p "$work") target/release/teal serve \
    --config examples/teal.toml --threads "$n" --listen "127.0.0.1:${port[$n]}" --admin "127.0.0.1:$(free_port)" >/dev/null &
done
for n in 1 "$threads"; do
  for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:${port[$n]}/v2/health/ready" && break; sleep 0.05; done
done
for round in $(seq 1 "$rounds"); do
  for n in 1 "$threads"; do
    echo "$n $round $(BODY_FILE=$work/body.json wrk -t1 -c"$connections" -d"${seconds}s" -s bench/v2_post.lua \
      "http://127.0.0.1:${port[$n]}/v2/models/digits/infer" | grep '^RESULT')"
  done
done > "$work/results.txt"
python3 - "$threads" "$connections" "$seconds" "$work/results.txt" <<'PY'
import os, statistics, sys
threads, c, seconds, path = sys.argv[1:]
runs = {}
for line in open(path):
    n, rnd, rest = line.split(" ", 2)
    runs.setdefault(n, []).append({k: float(v) for k, v in (kv.split("=") for kv in rest.split() if "=" in kv)})
print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{c} -d{seconds}s, {len(runs['1'])} rounds taking turns, medians; digits v1 in-process")
print(f"{'':28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
labels = {"1": "teal --threads 1", threads: f"teal --threads {threads}"}
for n, label in labels.items():
    med = lambda key: statistics.median(r[key] for r in runs[n])
    errors = sum(r["errors"] + r["non2xx"] for r in runs[n])
    print(f"{label:28}{med('rps'):>10.0f}{med('p50_ms'):>9.3f}{med('p99_ms'):>9.3f}{errors:>8.0f}")
ratios = [a["rps"] / b["rps"] for a, b in zip(runs["1"], runs[threads])]
p99 = statistics.median(a["p99_ms"] / b["p99_ms"] for a, b in zip(runs["1"], runs[threads]))
print(f"ratio 1 thread/{threads} threads: throughput {statistics.median(ratios):.2f}x, p99 {p99:.2f}x; per round, throughput: "
      + ", ".join(f"{r:.2f}x" for r in ratios))
PY
