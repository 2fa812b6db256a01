#!/usr/bin/env bash
# Every comparison, side by side on the machine it runs on, and one results file:
#   serving      teal in-process versus MLServer, and versus Flask + scikit-learn under gunicorn
#   gateway      teal versus direct, nginx and HAProxy; switching under load versus nginx reload
#   instructions instructions per proxied request, teal versus nginx (callgrind)
#   mirroring    the cost of shadow traffic to live latency
#   request log  the cost of recording every request
#   rollback     time from a fault to traffic back on the old version
# Memory is in the serving table (idle and loaded resident memory of each server).
#
#   bench/all.sh [SECONDS]     (default 10 s per load run, half that per gateway round; about 16 minutes in all)
#
# Writes bench/results/latest.md: ratios first, then each benchmark's full table, with the
# machine and the commands. Do not compile or run anything else meanwhile: the machine's
# cores are part of what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
out=bench/results
mkdir -p "$out"
runs=(
  "bench/serving.sh $seconds 32"
  "bench/gateway.sh $(( seconds > 1 ? seconds / 2 : 1 )) 32 3"
  "bench/instructions.sh"
  "bench/mirroring.sh $seconds 32"
  "bench/request_log.sh $seconds 32 3"
  "bench/rollback.sh"
  "bench/overload.sh 5"
  "bench/overload.sh 5 deep"
  "bench/batching.sh $seconds"
)
# A run's name: its script's, with any word after it that is not a number (overload-deep).
run_name() { awk '{n = $1; sub(".*/", "", n); sub("[.]sh$", "", n); for (i = 2; i <= NF; i++) if ($i !~ /^[0-9]+$/) n = n "-" $i; print n}' <<<"$1"; }
for run in "${runs[@]}"; do
  name=$(run_name "$run")
  echo "== $run" >&2
  $run | tee "$out/$name.txt"
done

{
  echo "# Benchmark results"
  echo
  echo "\`bench/all.sh $seconds\`, $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "Machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)."
  echo
  echo "## Ratios"
  echo
  echo '```'
  for run in "${runs[@]}"; do
    name=$(run_name "$run")
    grep -hE "^(ratio|added|switching|10,000|fault appears|rollback decided|requests v3 failed|overload:)" "$out/$name.txt" | sed "s/^/$name: /"
  done
  echo '```'
  for run in "${runs[@]}"; do
    name=$(run_name "$run")
    echo
    echo "## $name: \`$run\`"
    echo
    echo '```'
    cat "$out/$name.txt"
    echo '```'
  done
} >"$out/latest.md"
echo "results: $out/latest.md" >&2
