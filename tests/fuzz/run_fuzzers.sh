#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for SECONDS each and prints the executions
# per target and in total. Exits 1 if any target crashed or a sanitizer reported.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [TARGET...]
#
# BUILD_DIR is configured with -DFL_BUILD_FUZZERS=ON (tests/fuzz/CMakeLists.txt). Each
# target grows its corpus in BUILD_DIR/tests/fuzz/corpus/<name> from the generated seeds;
# crashing inputs land in BUILD_DIR/tests/fuzz/artifacts/<name>-crash-*, logs in
# BUILD_DIR/tests/fuzz/logs/<name>.log. FUZZ_JOBS=N runs N targets at once (default 1).
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
dir="$build/tests/fuzz"
jobs=${FUZZ_JOBS:-1}

"$dir/fl_fuzz_make_seeds" "$dir/seeds"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in "$dir"/*_fuzzer; do
    [ -x "$f" ] && targets+=("$(basename "$f" _fuzzer)")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "no *_fuzzer executables in $dir (build the fl_fuzzers target)" >&2
  exit 2
fi
mkdir -p "$dir/logs" "$dir/artifacts"

run_one() {
  local name=$1
  mkdir -p "$dir/corpus/$name" "$dir/seeds/$name"
  # ASan/UBSan reports abort the run (libFuzzer records the input as a crash).
  "$dir/${name}_fuzzer" -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
      -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$dir/artifacts/$name-" \
      "$dir/corpus/$name" "$dir/seeds/$name" >"$dir/logs/$name.log" 2>&1
}

pids=()
names=()
status=0
for name in "${targets[@]}"; do
  run_one "$name" &
  pids+=($!)
  names+=("$name")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || { echo "FAILED: ${names[0]} (see $dir/logs/${names[0]}.log)"; status=1; }
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "FAILED: ${names[$i]} (see $dir/logs/${names[$i]}.log)"; status=1; }
done

total=0
printf '%-20s %14s %10s %8s\n' target executions exec/s corpus
for name in "${targets[@]}"; do
  log="$dir/logs/$name.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  execs=${execs:-0}
  total=$((total + execs))
  printf '%-20s %14d %10s %8s\n' "$name" "$execs" "${rate:-?}" \
      "$(find "$dir/corpus/$name" -type f | wc -l)"
  if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|invariant broken' "$log"; then
    echo "  report in $log" >&2
    status=1
  fi
done
printf '%-20s %14d\n' TOTAL "$total"
exit $status
