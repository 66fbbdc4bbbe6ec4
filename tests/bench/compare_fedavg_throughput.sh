#!/usr/bin/env bash
# Training throughput of fl-sim against a plain PyTorch FedAvg loop on the same workload:
# the fmnist-cnn preset (100 clients, Dirichlet 0.5, 10 per round, 1 local epoch, batch 32,
# SGD), the same partition (fl-sim export-partition) and the same clients per round
# (replayed from fl-sim's run record), run back to back on this machine.
#
#   tests/bench/compare_fedavg_throughput.sh [BUILD_DIR] [ROUNDS] [extra fl-sim flags...]
#
# Both figures count training examples per second of local training plus aggregation,
# excluding evaluation. fl-sim uses its default 2 workers x 1 thread; PyTorch gets 2
# intra-op threads, i.e. both use the machine's 2 cores.
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

echo "== PyTorch (Python) FedAvg loop, same partition and client selection"
py_line=$("$python" "$root/tests/bench/pytorch_fedavg.py" --rounds "$rounds" \
            --partition-file "$work/partition.json" --selection-from "$work/sim/run.db" \
            --lr "$lr" --momentum "$momentum" --threads 2 | tee /dev/stderr | tail -1)
py_rate=$(echo "$py_line" | sed -E 's/.*: ([0-9.]+) samples\/s$/\1/')

awk -v s="$sim_rate" -v p="$py_rate" 'BEGIN {
  printf "fl-sim: %.0f samples/s   pytorch: %.0f samples/s   ratio fl-sim/pytorch: %.2fx\n", s, p, s / p }'
