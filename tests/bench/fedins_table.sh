#!/usr/bin/env bash
# FedIns against its baselines on W3 `fmnist-vit-shift` (issue: FedIns): vit-tiny
# pretrained on clean images 0-29,999, then 10 clients, each holding 3 of the 5 domains
# (clean, inverted, rot90, noise, blur) and a Dirichlet(0.5) label skew over images
# 30,000-59,999; all clients every round, the preset's rounds and local steps.
#
#   tests/bench/fedins_table.sh BUILD_DIR [RUNS_DIR] [extra fl-sim flags...]
#
#   1. `fl-sim pretrain` writes RUNS_DIR/backbone.flps (skipped when it exists);
#   2. FedIns (pool of 10), federated SSF (one SSF set + head), the head alone on
#      the frozen backbone, and full fine-tuning, each FedAvg-aggregated;
#   3. one markdown table: final and best test accuracy (shifted test set), accuracy per
#      domain, and bytes per client per round up and down, with upload as a fraction of
#      full fine-tuning's; then FedIns's selection counts per domain and entry.
# Each method runs at the client lr that did best in the grid README lists (head 0.2,
# ssf 0.5, fedins 0.5, full 0.05) and FedIns with top_k 2 (best of 1, 2, 3).
# Environment: METHODS (default "fedins ssf head full") to run a subset; LR_<method>
# (e.g. LR_full=0.01) to override train.lr for one method; TOP_K for FedIns's top_k;
# MIN_FRACTION for fedins.upload_min_fraction (0).
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
runs="${2:-$root/runs/fedins-table}"
shift $(( $# > 2 ? 2 : $# ))
# shellcheck source=w3_backbone.sh
source "$root/tests/bench/w3_backbone.sh"

methods="${METHODS:-fedins ssf head full}"
for m in $methods; do
  flags=(--set "model.backbone=$backbone" --set "model.tuning=$m")
  [ "$m" != fedins ] && flags+=(--set algorithm.name=fedavg)
  declare -A tuned_lr=([head]=0.2 [ssf]=0.5 [fedins]=0.5 [full]=0.05)
  lr_var="LR_$m"
  flags+=(--set "train.lr=${!lr_var:-${tuned_lr[$m]}}")
  [ "$m" = fedins ] && flags+=(--set "fedins.top_k=${TOP_K:-2}" \
                               --set "fedins.upload_min_fraction=${MIN_FRACTION:-0}")
  "$fl_sim" run --preset fmnist-vit-shift --progress none --out "$runs/$m" "${flags[@]}" "$@" \
      > "$runs/$m.log" 2>&1 || echo "  ($m stopped: $(tail -1 "$runs/$m.log"))" >&2
done

# metrics.csv columns by name: final and best accuracy, mean bytes up/down per client-round
summary() {
  awk -F, '
    NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
    { acc = $col["accuracy"]; if (acc != "" && acc + 0 > best) best = acc + 0
      if (acc != "") last = acc + 0
      up += $col["bytes_up"]; down += $col["bytes_down"]; clients += $col["clients"] }
    END { printf "%.2f|%.2f|%.0f|%.0f\n", 100 * last, 100 * best, up / clients, down / clients }' "$1"
}

full_up=""
[ -f "$runs/full/metrics.csv" ] && full_up=$(summary "$runs/full/metrics.csv" | cut -d'|' -f3)
domains=$(awk -F, 'NR > 1 { printf "%s%s", sep, $1; sep = "|" }' "$runs/fedins/per_domain.csv" 2>/dev/null)
echo "| method | final % | best % | ${domains//|/ % | } % | up B/client/round | down B/client/round | up vs full |"
echo "|---|---|---|$(echo "$domains" | sed 's/[^|]*/---/g')|---|---|---|"
for m in $methods; do
  [ -f "$runs/$m/metrics.csv" ] || continue
  IFS='|' read -r last best up down <<< "$(summary "$runs/$m/metrics.csv")"
  per=$(awk -F, 'NR > 1 { printf "%s%.1f", sep, 100 * $3; sep = " | " }' "$runs/$m/per_domain.csv")
  ratio="-"
  [ -n "$full_up" ] && ratio=$(awk -v a="$up" -v b="$full_up" 'BEGIN { printf "%.3f", a / b }')
  echo "| $m | $last | $best | $per | $up | $down | $ratio |"
done
if [ -f "$runs/fedins/selection.csv" ]; then
  echo
  echo "FedIns: test images per domain that selected each entry (top-${TOP_K:-2} of 10):"
  echo
  awk -F, 'NR == 1 { printf "|"; for (i = 1; i <= NF; ++i) printf " %s |", $i; printf "\n|";
                     for (i = 1; i <= NF; ++i) printf "---|"; printf "\n"; next }
           { printf "|"; for (i = 1; i <= NF; ++i) printf " %s |", $i; printf "\n" }' \
      "$runs/fedins/selection.csv"
fi
