#!/usr/bin/env bash
# Final test accuracy of FedAvg and the robust aggregators under Byzantine clients:
# the fmnist-cnn preset (CNN, 100 clients, Dirichlet 0.5, 10 per round, 50 rounds) with a
# fraction of the clients attacking, for each attack x aggregator, next to the clean runs.
#
#   tests/bench/byzantine_table.sh BUILD_DIR [fl-sim flags...]
#
# Environment (defaults give the full table, ~40 runs of ~4 min each on 2 cores):
#   ROUNDS       run.rounds                                    (50)
#   FRACTIONS    byzantine.fraction values                     ("0.1 0.3")
#   ATTACKS      byzantine.attack values       ("sign_flip gaussian inflated_weight label_flip constant")
#   AGGREGATORS  algorithm.aggregator values   ("mean median trimmed_mean multi_krum")
#   OUT          where the markdown table goes                 (byzantine_table.md)
#   CLEAN        0 skips the clean row (when it is already measured) (1)
# Attack strengths: sign_flip scale 4, gaussian sigma 0.1, inflated_weight x100, constant
# 0.01 per coordinate (the honest round delta of this CNN is ~1e-3 per coordinate).
# Each robust rule is matched to the fraction p: trimmed_mean trim_beta = p, multi_krum
# krum_f = round(p * clients_per_round). Attackers are drawn from the whole population,
# so a round of 10 holds p * 10 of them only on average. Clean runs use beta 0.1, f 1.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
shift $(( $# > 0 ? 1 : 0 ))
fl_sim="$build/simulations/fl-sim"
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
rounds="${ROUNDS:-50}"
fractions="${FRACTIONS:-0.1 0.3}"
attacks="${ATTACKS:-sign_flip gaussian inflated_weight label_flip constant}"
aggregators="${AGGREGATORS:-mean median trimmed_mean multi_krum}"
out="${OUT:-byzantine_table.md}"
per_round=10

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

attack_flags() {
  case "$1" in
    sign_flip) echo "--set byzantine.scale=4" ;;
    gaussian) echo "--set byzantine.sigma=0.1" ;;
    inflated_weight) echo "--set byzantine.weight_factor=100" ;;
    constant) echo "--set byzantine.constant=0.01" ;;
    *) echo "" ;;
  esac
}

robust_flags() {  # aggregator fraction
  local beta f
  beta="$2"
  f=$(awk -v p="$2" -v n="$per_round" 'BEGIN { printf "%d", p * n + 0.5 }')
  [ "$f" -ge 1 ] || f=1
  echo "--set algorithm.aggregator=$1 --set algorithm.trim_beta=$beta --set algorithm.krum_f=$f"
}

# run NAME FLAGS... -> prints the final accuracy in percent
run() {
  local name="$1"
  shift
  local log="$work/$name.log"
  local start=$SECONDS
  if ! "$fl_sim" --rounds "$rounds" --progress none --out "$work/$name" "$@" >"$log" 2>&1; then
    echo "run $name failed:" >&2
    tail -5 "$log" >&2
    echo "error"
    return
  fi
  local acc
  acc=$(awk -F, 'NR > 1 && $2 != "" { a = $2 } END { printf "%.1f", a * 100 }' "$work/$name/metrics.csv")
  echo "  $name: $acc% ($((SECONDS - start)) s)" >&2
  echo "$acc"
}

header="| clients attacking | attack |"
rule="|---|---|"
for agg in $aggregators; do
  case "$agg" in
    mean) header+=" FedAvg (mean) |" ;;
    *) header+=" $agg |" ;;
  esac
  rule+="---|"
done
{
  echo "fmnist-cnn${*:+ ($*)}, $rounds rounds, seed 1, $("$fl_sim" --print-config "$@" | awk '/^  clients_per_round:/{print $2; exit}') clients per round; final test accuracy (%)"
  echo
  echo "$header"
  echo "$rule"
} >"$work/table.md"

if [ "${CLEAN:-1}" != 0 ]; then
  row="| 0 | none (clean) |"
  for agg in $aggregators; do
    row+=" $(run "clean-$agg" $(robust_flags "$agg" 0.1) "$@") |"
  done
  echo "$row" >>"$work/table.md"
fi

for p in $fractions; do
  for attack in $attacks; do
    pct=$(awk -v p="$p" 'BEGIN { printf "%d%%", p * 100 + 0.5 }')
    row="| $pct | $attack |"
    for agg in $aggregators; do
      row+=" $(run "$attack-$p-$agg" --set byzantine.fraction="$p" --set byzantine.attack="$attack" \
               $(attack_flags "$attack") $(robust_flags "$agg" "$p") "$@") |"
    done
    echo "$row" >>"$work/table.md"
  done
done

cp "$work/table.md" "$out"
cat "$out"
