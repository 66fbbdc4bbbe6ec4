#!/usr/bin/env bash
# fl-sim alone against fl-sim under mpirun -np 2 and -np 4 (simulations/mpi_backend.h):
# the fmnist-cnn preset (100 clients, Dirichlet 0.5, 10 per round) for ROUNDS rounds, one
# run each: wall time, final accuracy, and whether the final global model is bitwise the
# single-process one. The single process runs 2 workers (both cores of a 2-core
# machine); every rank runs RANK_WORKERS workers, all with 1 thread; ranks beyond the
# machine's cores oversubscribe it (--oversubscribe).
#
#   tests/bench/fl_sim_mpi.sh [BUILD_DIR] [ROUNDS] [RANK_WORKERS]
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
rounds="${2:-5}"
rank_workers="${3:-1}"
fl_sim="$build/simulations/fl-sim"
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "no mpirun (apt install openmpi-bin)" >&2; exit 1; }
# OpenMPI refuses root without these (CI runs as root in a container).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# run NAME WORKERS [LAUNCHER...]: one fl-sim run; prints its wall time and final line.
run() {
  local name="$1" workers="$2"
  shift 2
  local start end
  start=$(date +%s%N)
  "$@" "$fl_sim" run --preset fmnist-cnn --rounds "$rounds" --workers "$workers" \
    --progress none --out "$work/$name" >"$work/$name.out" 2>"$work/$name.err"
  end=$(date +%s%N)
  printf '%-7s wall %6.1f s  %s\n' "$name" "$(( (end - start) / 1000000 ))e-3" \
    "$(grep '^final' "$work/$name.out")"
}

echo "$(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run single 2
run np2 "$rank_workers" mpirun -np 2
run np4 "$rank_workers" mpirun -np 4 --oversubscribe
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in np2 np4; do
  if cmp -s "$work/single/models/v$rounds.flps" "$work/$name/models/v$rounds.flps"; then
    echo "$name: final model bitwise equal to the single-process one"
  else
    echo "$name: final model DIFFERS from the single-process one"
  fi
done
