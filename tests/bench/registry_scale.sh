#!/usr/bin/env bash
# Virtual clients at scale: fl-sim's start-up time, client tasks per second and peak
# resident memory for N registered clients, with the same 1000 clients per round.
#
#   [ROUNDS=3] tests/bench/registry_scale.sh [BUILD_DIR] [N ...] [-- fl-sim flags...]
#
# Default N: 1000 100000 1000000. Each run is
#   fl-sim run --preset fmnist-cnn --clients N --clients-per-round 1000 --partition sample:32
#              --rounds ROUNDS --progress plain [fl-sim flags...]
# (sample:32: every client holds 32 images drawn from the 60,000, so any N fits).
#   start-up:  process start to the coordinator's "round 1 opened" log line (INFO);
#   tasks/s:   updates of all rounds / (round 1 opened -> last round closed), evaluation
#              of each round's model included;
#   peak RSS:  /usr/bin/time -v "Maximum resident set size";
#   registered RSS: peak resident memory once every client is registered, before any
#              training (fl-sim's INFO line "registered N virtual clients"): what the
#              registry adds, without the allocator's noise of the training rounds.
# The first N is the baseline of the ratios: memory beyond it is what the extra clients
# cost (the registry), since every run trains the same number of clients per round.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
[ $# -gt 0 ] && shift
sizes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sizes+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 100000 1000000)
fl_sim="$build/simulations/fl-sim"
[ -x "$fl_sim" ] || { echo "no fl-sim at $fl_sim (build it first)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (scripts/install-deps.sh installs it)" >&2; exit 1; }
rounds="${ROUNDS:-3}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Seconds since midnight (UTC) of an HH:MM:SS.mmm log stamp or a `date +%s.%N` value.
day_seconds() { awk -v t="$1" 'BEGIN { n = split(t, a, ":"); print a[1] * 3600 + a[2] * 60 + a[3] }'; }

echo "fl-sim fmnist-cnn, sample:32, 1000 clients per round, $rounds rounds, $(nproc) cores," \
     "load $(cut -d' ' -f1 /proc/loadavg)"
printf '| %s | %s | %s | %s | %s | %s |\n' "N" "start-up (s)" "client tasks/s" "peak RSS (MB)" \
       "registered RSS (MB)" "registered RSS - first N's, per extra client (bytes)"
printf '|---|---|---|---|---|---|\n'
base_reg="" base_n=""
for n in "${sizes[@]}"; do
  log="$work/run-$n.log"
  start="$(date -u +%H:%M:%S.%N)"
  FL_LOG_LEVEL=info /usr/bin/time -v "$fl_sim" run --preset fmnist-cnn --clients "$n" \
    --clients-per-round 1000 --partition sample:32 --rounds "$rounds" --progress plain \
    --out "$work/out-$n" "$@" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  opened="$(grep -m1 'round 1 opened' "$log" | awk '{print $2}')"
  closed="$(grep 'closed:' "$log" | tail -1 | awk '{print $2}')"
  updates="$(grep 'closed:' "$log" | awk '{ s += $7 } END { print s }')"
  rss_kb="$(grep 'Maximum resident' "$log" | awk '{print $NF}')"
  reg_kb="$(grep -m1 'virtual clients in' "$log" | sed 's/.*peak resident \([0-9]*\) kB.*/\1/')"
  s0="$(day_seconds "$start")" s1="$(day_seconds "$opened")" s2="$(day_seconds "$closed")"
  if [ -z "$base_reg" ]; then base_reg="$reg_kb" base_n="$n"; fi
  awk -v n="$n" -v s0="$s0" -v s1="$s1" -v s2="$s2" -v u="$updates" -v r="$rss_kb" \
      -v g="$reg_kb" -v bg="$base_reg" -v bn="$base_n" 'BEGIN {
    extra = n > bn ? sprintf("%.0f", (g - bg) * 1024 / (n - bn)) : "-";
    printf "| %d | %.1f | %.0f | %.0f | %.0f | %s |\n", n, s1 - s0, u / (s2 - s1), r / 1024, g / 1024, extra }'
done
