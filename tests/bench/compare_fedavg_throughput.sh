#!/usr/bin/env bash
# Training throughput of fl-sim against a plain PyTorch FedAvg loop on the same workload:
# the fmnist-cnn preset (100 clients, Dirichlet 0.5, 10 per round, 1 local epoch, batch 32,
# SGD), the same partition (fl-sim export-partition) and the same clients per round
# (replayed from fl-sim's run record), run back to back on this machine.
#
#   tests/bench/compare_fedavg_throughput.sh [BUILD_DIR] [ROUNDS] [extra fl-sim flags...]
#
# All figures count training examples per second of local training plus aggregation,
# excluding evaluation. fl-sim uses its default 2 workers x 1 thread, i.e. both cores.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
rounds="${2:-5}"
shift $(( $# > 2 ? 2 : $# ))
fl_sim="$build/simulations/fl-sim"
python=/usr/bin/python3   # Debian's python3-torch; a pyenv python on PATH has no torch
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
"$python" -c 'import torch' 2>/dev/null || { echo "$python lacks torch (apt install python3-torch)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$fl_sim" export-partition --out "$work/partition.json" "$@" >/dev/null
lr=$("$fl_sim" --print-config "$@" | awk '/^train:/{t=1} t && /^  lr:/{print $2; exit}')
momentum=$("$fl_sim" --print-config "$@" | awk '/^train:/{t=1} t && /^  momentum:/{print $2; exit}')

echo "== fl-sim: $rounds rounds of fmnist-cnn (lr $lr, momentum $momentum)"
sim_line=$("$fl_sim" --rounds "$rounds" --eval-every "$rounds" --progress none \
             --out "$work/sim" "$@" | tail -1)
echo "$sim_line"
sim_rate=$(echo "$sim_line" | sed -E 's/.*, ([0-9.]+) samples\/s\)$/\1/')

# PyTorch gets both cores as 2 intra-op threads (the like-for-like setting), once with
# libgomp's default spin-waiting and once with OMP_WAIT_POLICY=PASSIVE, and 1 thread for
# reference: on a shared 2-core machine a spinning OpenMP thread that loses its core
# stalls every parallel region, so the default 2-thread run can be the slowest. The
# ratio that counts is against the fastest of the three.
best=0
summary=""
for setting in "2 default" "2 PASSIVE" "1 default"; do
  set -- $setting
  threads=$1 policy=$2
  echo "== PyTorch (Python) FedAvg loop, $threads thread(s), OMP_WAIT_POLICY=$policy"
  if [ "$policy" = default ]; then env_cmd=(env -u OMP_WAIT_POLICY); else env_cmd=(env OMP_WAIT_POLICY="$policy"); fi
  py_line=$("${env_cmd[@]}" "$python" "$root/tests/bench/pytorch_fedavg.py" --rounds "$rounds" \
              --partition-file "$work/partition.json" --selection-from "$work/sim/run.db" \
              --lr "$lr" --momentum "$momentum" --threads "$threads" | tail -2 | tee /dev/stderr | tail -1)
  rate=$(echo "$py_line" | sed -E 's/.*: ([0-9.]+) samples\/s$/\1/')
  summary+=$(awk -v t="$threads" -v p="$policy" -v r="$rate" -v s="$sim_rate" \
               'BEGIN { printf "pytorch, %s thread(s), wait policy %-8s %6.0f samples/s  (fl-sim/pytorch %.2fx)\\n", t, p":", r, s / r }')
  best=$(awk -v a="$best" -v b="$rate" 'BEGIN { print (b > a ? b : a) }')
done

printf "fl-sim, 2 workers x 1 thread:                %6.0f samples/s\n" "$sim_rate"
printf "$summary"
awk -v s="$sim_rate" -v b="$best" 'BEGIN { printf "ratio against the fastest pytorch run: %.2fx\n", s / b }'
