#!/usr/bin/env bash
# Ferret projection/reconstruction: this SDK's fused Philox kernels against the
# reference's PyTorch generate-then-dot, on the same ~10M-parameter layout, reference
# block plan and K = 200, in one run on one machine. Prints both figures and the ratio.
#
#   tests/bench/compare_ferret.sh [build-dir]
#
# Environment: REF_SEEDS (default 8) seeds the PyTorch side actually times before
# scaling to K (each (seed, block) costs the same; REF_SEEDS=200 runs it all, ~5 min);
# MIN_TIME (default 1) seconds per C++ benchmark.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-$root/build}"
bench="$build/tests/bench/ferret_bench"
python=/usr/bin/python3  # Debian's Python: the one with python3-torch
if [[ ! -x "$bench" ]]; then
  cmake --build "$build" --target ferret_bench
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== C++ fused kernels ($bench)" >&2
"$bench" --benchmark_filter='BM_Copy|BM_Ferret(Project|Reconstruct|ReconstructClip|ReconstructClipCached)/dist:[12]/' \
  --benchmark_min_time="${MIN_TIME:-1}" --benchmark_out="$out/cpp.json" \
  --benchmark_out_format=json >&2
echo "== PyTorch reference ($("$python" -c 'import torch; print("torch", torch.__version__)'))" >&2
"$python" "$here/ferret_reference.py" --seeds "${REF_SEEDS:-8}" --threads 1 > "$out/ref.json"

"$python" - "$out/cpp.json" "$out/ref.json" <<'PY'
import json, sys
cpp = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))
runs = {b["name"]: b for b in cpp["benchmarks"]}
scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}

def seconds(name):
    b = runs[name]
    return b["real_time"] * scale[b["time_unit"]]

d, k = ref["d"], ref["k"]
print(f"d = {d}, blocks = {ref['blocks']}, K = {k}: {d * k / 1e9:.2f}e9 basis entries per pass")
print(f"reference: torch {ref['torch']}, {ref['threads']} thread, {ref['seeds_timed']} of {k} "
      f"seeds timed and scaled to {k}")
ctx = cpp.get("context", {})
print(f"C++: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
      f"kernel copy {ctx.get('ferret_kernels', '?')} (FERRET_BENCH_ISA=baseline|avx2 caps it)")
copy = runs.get("BM_Copy/real_time")
if copy:
    print(f"memcpy bandwidth in the same run: {copy['bytes_per_second'] / 1e9:.1f} GB/s")
print()
print(f"{'operation':<52}{'seconds':>10}{'entries/s':>12}{'vs ref':>9}")

def row(label, t, ref_t):
    print(f"{label:<52}{t:>10.3f}{d * k / t / 1e9:>11.2f}G{ref_t / t:>8.0f}x")

rp, rr = ref["project_s"], ref["reconstruct_s"]
print(f"{'reference project (trunc_normal, dot)':<52}{rp:>10.1f}{d * k / rp / 1e9:>11.3f}G{'1':>8}x")
for dist, label in ((1, "rademacher"), (2, "uniform")):
    for threads in (1, 2):
        name = f"BM_FerretProject/dist:{dist}/threads:{threads}/real_time"
        if name in runs:
            row(f"project {label}, {threads} thread(s)", seconds(name), rp)
print(f"{'reference reconstruct (generate, clip, sub)':<52}{rr:>10.1f}{d * k / rr / 1e9:>11.3f}G{'1':>8}x")
for dist, label in ((1, "rademacher"), (2, "uniform")):
    for threads in (1, 2):
        name = f"BM_FerretReconstruct/dist:{dist}/threads:{threads}/real_time"
        if name in runs:
            row(f"reconstruct {label}, no clip, {threads} thread(s)", seconds(name), rr)
    for kind, text in (("ReconstructClip", "clip 10"), ("ReconstructClipCached", "clip 10, cached norms")):
        name = f"BM_Ferret{kind}/dist:{dist}/threads:1/real_time"
        if name in runs:
            row(f"reconstruct {label}, {text}, 1 thread", seconds(name), rr)
PY
