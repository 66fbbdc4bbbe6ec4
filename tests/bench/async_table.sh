#!/usr/bin/env bash
# Asynchronous against synchronous federation on fl-sim's virtual clock (issue: CO2):
# fmnist-cnn (CNN, 100 clients, Dirichlet 0.5), clock defaults (compute speed log-normal
# sigma 0.5, 10% stragglers 10x slower, up/down 5/20 Mbps log-normal sigma 0.5, 50 ms).
#
#   tests/bench/async_table.sh BUILD_DIR [RUNS_DIR]
#
#   1. sync FedAvg, 10 clients per round, 50 rounds;
#   2. async (FedBuff weighting (1 + tau)^-1/2), concurrency 20, buffer 10, 100 versions;
#      reports the simulated time at which it first reaches sync's round-50 accuracy;
#   3. the ablation under high staleness (concurrency 50 = 5 x buffer 10, 60 versions):
#      FedBuff weighting only, + gap penalty (rho 2), + clipped outer momentum (beta 0.5,
#      server lr 0.5, adaptive clip 2.5 x the running mean norm), all three (CO2), each
#      without and with client overlap; simulated time to TARGET accuracy.
# Environment: TARGET (0.75), SKIP_MAIN=1 runs only the ablation, SKIP_ABLATION=1 only 1-2.
# Prints markdown tables; `fl-sim compare` draws the curves from RUNS_DIR.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
runs="${2:-$root/runs/async-table}"
fl_sim="$build/simulations/fl-sim"
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
target="${TARGET:-0.75}"
mkdir -p "$runs"

run() {  # name, flags...
  local name="$1"; shift
  "$fl_sim" run --progress none --out "$runs/$name" "$@" > "$runs/$name.log" 2>&1 ||
    echo "  ($name stopped: $(tail -1 "$runs/$name.log"))" >&2
}

# best accuracy, final accuracy, simulated time of the last row, first time >= $2
summary() {  # metrics.csv, threshold
  awk -F, -v t="$2" '
    NR == 1 { for (i = 1; i <= NF; ++i) if ($i == "sim_time_s") c = i; next }
    { if ($2 > best) best = $2; last = $2; time = $c; n = $1
      if (hit == "" && $2 >= t) hit = $c }
    END { printf "%s|%.1f|%.1f|%d|%.0f|%s\n", n, 100 * best, 100 * last, n, time,
          hit == "" ? "not reached" : sprintf("%.0f", hit) }' "$1"
}

if [ "${SKIP_MAIN:-0}" != 1 ]; then
  run sync-r50 --rounds 50
  run async-c20-b10 --rounds 100 --set coordinator.mode=async --set async.concurrency=20 \
      --set async.buffer_size=10
  sync_acc=$(awk -F, 'END { print $2 }' "$runs/sync-r50/metrics.csv")
  echo "| run | versions | best % | final % | simulated s | s to sync's round-50 accuracy ($sync_acc) |"
  echo "|---|---|---|---|---|---|"
  for name in sync-r50 async-c20-b10; do
    IFS='|' read -r n best last _ time hit <<< "$(summary "$runs/$name/metrics.csv" "$sync_acc")"
    echo "| $name | $n | $best | $last | $time | $hit |"
  done
  "$fl_sim" compare --out "$runs/async-vs-sync.svg" "$runs/sync-r50=sync FedAvg" \
      "$runs/async-c20-b10=async, concurrency 20, buffer 10" > /dev/null
fi

if [ "${SKIP_ABLATION:-0}" != 1 ]; then
  high="--rounds 60 --set coordinator.mode=async --set async.concurrency=50 --set async.buffer_size=10 --set async.max_staleness=32"
  gap="--set async.gap_penalty=2"
  mom="--set algorithm.server_momentum=0.5 --set algorithm.server_lr=0.5 --set algorithm.momentum_clip_adaptive=2.5"
  echo
  echo "| rule | overlap | versions | best % | final % | simulated s | s to $target |"
  echo "|---|---|---|---|---|---|---|"
  for overlap in false true; do
    for rule in fedbuff gap mom co2; do
      case "$rule" in
        fedbuff) flags="" ;;
        gap) flags="$gap" ;;
        mom) flags="$mom" ;;
        co2) flags="$gap $mom" ;;
      esac
      name="abl-$rule-overlap-$overlap"
      # shellcheck disable=SC2086
      run "$name" $high $flags --set client.overlap=$overlap
      IFS='|' read -r n best last _ time hit <<< "$(summary "$runs/$name/metrics.csv" "$target")"
      echo "| $rule | $overlap | $n | $best | $last | $time | $hit |"
    done
  done
fi
