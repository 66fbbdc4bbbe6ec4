#!/usr/bin/env bash
# SFPrompt against its baselines on W3 `fmnist-vit-shift` (issue: SFPrompt): the FedIns
# table's backbone, clients and rounds (tests/bench/fedins_table.sh), with the per-round
# client figures fl-sim writes as metrics.csv columns client.* (TrainStats::metrics).
#
#   tests/bench/sfprompt_table.sh BUILD_DIR [RUNS_DIR] [extra fl-sim flags...]
#
#   1. `fl-sim pretrain` writes RUNS_DIR/backbone.flps (skipped when it exists);
#   2. the runs of $METHODS (default "head full sfprompt"), each a directory of RUNS_DIR:
#        head      the head alone on the frozen backbone (FedAvg)
#        full      full fine-tuning (FedAvg of the whole ViT)
#        sfprompt  SFPrompt, $SFP_MODEL (vit:prompts=8) cut as $SFP_FLAGS
#      any other name NAME runs SFPrompt with the flags in $SFP_FLAGS_NAME;
#   3. one markdown table: final and best test accuracy; per client and round the model
#      bytes up and down, the split bytes up and down, the total against full
#      fine-tuning's, and the client compute (FLOPs and seconds, from client.compute.*)
#      against full fine-tuning's.
# LR_<method> overrides train.lr (defaults: head 0.2, full 0.05 as in the FedIns table;
# SFPrompt 0.1).
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
runs="${2:-$root/runs/sfprompt-table}"
shift $(( $# > 2 ? 2 : $# ))
# shellcheck source=w3_backbone.sh
source "$root/tests/bench/w3_backbone.sh"

methods="${METHODS:-head full sfprompt}"
declare -A tuned_lr=([head]=0.2 [full]=0.05)
for m in $methods; do
  flags=(--set "model.backbone=$backbone")
  case "$m" in
    head|full) flags+=(--set "model.tuning=$m" --set algorithm.name=fedavg) ;;
    *)
      extra_var="SFP_FLAGS_$m"; [ "$m" = sfprompt ] && extra_var=SFP_FLAGS
      read -r -a extra <<< "${!extra_var:-}"
      flags+=(--set model.tuning=sfprompt --set algorithm.name=sfprompt
              --model "${SFP_MODEL:-vit:prompts=8}" "${extra[@]}") ;;
  esac
  lr_var="LR_$m"
  flags+=(--set "train.lr=${!lr_var:-${tuned_lr[$m]:-0.1}}")
  [ -f "$runs/$m/metrics.csv" ] && [ -n "${KEEP:-}" ] && continue
  "$fl_sim" run --preset fmnist-vit-shift --progress none --out "$runs/$m" "${flags[@]}" "$@" \
      > "$runs/$m.log" 2>&1 || echo "  ($m stopped: $(tail -1 "$runs/$m.log"))" >&2
done

# Per client and round from metrics.csv (columns by name; a missing one reads 0): final
# and best accuracy, model bytes up/down, split bytes up/down, client FLOPs and seconds.
summary() {
  awk -F, '
    NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
    function v(name) { return (name in col) ? $col[name] + 0 : 0 }
    { acc = $col["accuracy"]; if (acc != "" && acc + 0 > best) best = acc + 0
      if (acc != "") last = acc + 0
      up += v("bytes_up"); down += v("bytes_down"); clients += v("clients")
      sup += v("client.sfprompt.split.bytes_up"); sdown += v("client.sfprompt.split.bytes_down")
      flops += v("client.compute.flops"); secs += v("client.compute.seconds") }
    END { printf "%.2f|%.2f|%.0f|%.0f|%.0f|%.0f|%.4g|%.4g\n", 100 * last, 100 * best,
                 up / clients, down / clients, sup / clients, sdown / clients,
                 flops / clients, secs / clients }' "$1"
}

full=""
[ -f "$runs/full/metrics.csv" ] && full=$(summary "$runs/full/metrics.csv")
IFS='|' read -r _ _ full_up full_down _ _ full_flops full_secs <<< "${full:-|||||||}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }'; }
echo "| method | final % | best % | model up B | model down B | split up B | split down B | total vs full | client GFLOP | vs full | client s | vs full |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for m in $methods; do
  [ -f "$runs/$m/metrics.csv" ] || continue
  IFS='|' read -r last best up down sup sdown flops secs <<< "$(summary "$runs/$m/metrics.csv")"
  total=$((up + down + sup + sdown))
  gflop=$(awk -v f="$flops" 'BEGIN { printf "%.3g", f / 1e9 }')
  echo "| $m | $last | $best | $up | $down | $sup | $sdown |" \
       "$(ratio "$total" "$(( ${full_up:-0} + ${full_down:-0} ))") | $gflop |" \
       "$(ratio "$flops" "${full_flops:-0}") | $secs | $(ratio "$secs" "${full_secs:-0}") |"
done
