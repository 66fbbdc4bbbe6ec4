#!/usr/bin/env bash
# Training throughput of fl-sim against a plain PyTorch FedAvg loop on the same workload:
# the fmnist-cnn preset (100 clients, Dirichlet 0.5, 10 per round, 1 local epoch, batch 32,
# SGD), the same partition (fl-sim export-partition) and the same clients per round
# (replayed from fl-sim's run record), on this machine.
#
#   tests/bench/compare_fedavg_throughput.sh [BUILD_DIR] [ROUNDS] [REPEATS] [fl-sim flags...]
#
# Every figure counts training examples per second of local training plus aggregation,
# excluding evaluation. fl-sim runs its default 2 workers x 1 thread, i.e. both cores.
# PyTorch gets both cores as 2 intra-op threads, once with libgomp's default
# spin-waiting and once with OMP_WAIT_POLICY=PASSIVE, and also runs with 1 thread: on a
# shared 2-core machine a spinning OpenMP thread that loses its core stalls every
# parallel region, so the default 2-thread run can be the slowest. The runs are
# interleaved and repeated; each setting's best run counts (interference from other
# work on the machine only ever slows a run down), and the ratio that counts is fl-sim
# against the fastest PyTorch setting.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
rounds="${2:-5}"
repeats="${3:-3}"
shift $(( $# > 3 ? 3 : $# ))
fl_sim="$build/simulations/fl-sim"
python=/usr/bin/python3   # Debian's python3-torch; a pyenv python on PATH has no torch
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
"$python" -c 'import torch' 2>/dev/null || { echo "$python lacks torch (apt install python3-torch)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$fl_sim" export-partition --out "$work/partition.json" "$@" >/dev/null
config="$("$fl_sim" --print-config "$@")"
lr=$(awk '/^train:/{t=1} t && /^  lr:/{print $2; exit}' <<<"$config")
momentum=$(awk '/^train:/{t=1} t && /^  momentum:/{print $2; exit}' <<<"$config")
echo "fmnist-cnn, $rounds rounds, lr $lr, momentum $momentum, $repeats repeats, $(nproc) cores"

best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
sim_best=0 py_2_default=0 py_2_passive=0 py_1_default=0
for rep in $(seq "$repeats"); do
  line=$("$fl_sim" --rounds "$rounds" --eval-every "$rounds" --progress none \
           --out "$work/sim" "$@" 2>/dev/null | tail -1)
  rate=$(sed -E 's/.*, ([0-9.]+) samples\/s\)$/\1/' <<<"$line")
  echo "[$rep] fl-sim 2 workers x 1 thread: $line"
  sim_best=$(best "$sim_best" "$rate")
  for setting in "2 default" "2 passive" "1 default"; do
    read -r threads policy <<<"$setting"
    if [ "$policy" = passive ]; then env_cmd=(env OMP_WAIT_POLICY=PASSIVE); else env_cmd=(env -u OMP_WAIT_POLICY); fi
    line=$("${env_cmd[@]}" "$python" "$root/tests/bench/pytorch_fedavg.py" --rounds "$rounds" \
             --partition-file "$work/partition.json" --selection-from "$work/sim/run.db" \
             --lr "$lr" --momentum "$momentum" --threads "$threads" | tail -1)
    rate=$(sed -E 's/.*: ([0-9.]+) samples\/s$/\1/' <<<"$line")
    echo "[$rep] pytorch $threads thread(s), wait policy $policy: $line"
    var="py_${threads}_$policy"
    printf -v "$var" '%s' "$(best "${!var}" "$rate")"
  done
done

awk -v s="$sim_best" -v a="$py_2_default" -v b="$py_2_passive" -v c="$py_1_default" 'BEGIN {
  printf "best of each:\n"
  printf "  fl-sim, 2 workers x 1 thread:           %7.0f samples/s\n", s
  printf "  pytorch, 2 threads, default waiting:    %7.0f samples/s  (fl-sim/pytorch %.2fx)\n", a, s / a
  printf "  pytorch, 2 threads, OMP passive:        %7.0f samples/s  (fl-sim/pytorch %.2fx)\n", b, s / b
  printf "  pytorch, 1 thread:                      %7.0f samples/s  (fl-sim/pytorch %.2fx)\n", c, s / c
  m = a; if (b > m) m = b; if (c > m) m = c
  printf "fl-sim / fastest pytorch: %.2fx\n", s / m }'
