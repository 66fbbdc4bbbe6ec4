// Throughput of Ferret's fused projection and reconstruction on a ~10M-parameter
// transformer-like layout with the reference block plan and K = 200 bases per block.
//
//   ferret_bench --benchmark_filter='Ferret(Project|Reconstruct)/'
//
// Counters: basis_elems/s is sum_l n_l d_l per second (one basis entry generated and
// used once), per_core divides it by the thread count. BM_Copy is a STREAM-style copy
// of the same 10M floats: the machine's memory-bound reference point in the same run.
// tests/bench/compare_ferret.sh puts these next to the PyTorch reference's
// generate-then-dot figures.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/ferret/kernels.h"
#include "codec/ferret/projection.h"

namespace fl::internal::ferret {
namespace {

constexpr uint32_t kPoolSize = 200;

// Embedding and head 8192 x 256, positions 1024 x 256, 7 pre-norm blocks of width 256
// (qkv, proj, fc1 256 -> 1024, fc2, with biases and layer norms), final layer norm:
// 9,985,280 parameters in 89 tensors, a few large matrices plus many small vectors.
Layout TransformerLayout(int64_t width = 256, int64_t vocab = 8192, int layers = 7) {
  Layout l;
  l.Add("tok_emb", {vocab, width});
  l.Add("pos_emb", {1024, width});
  for (int i = 0; i < layers; ++i) {
    // Names built by append: GCC 12 warns falsely (-Wrestrict) on "literal" + string.
    auto name = [i](const char* leaf) {
      std::string n("h");
      n.append(std::to_string(i)).append(".").append(leaf);
      return n;
    };
    l.Add(name("ln1.w"), {width});
    l.Add(name("ln1.b"), {width});
    l.Add(name("qkv.w"), {3 * width, width});
    l.Add(name("qkv.b"), {3 * width});
    l.Add(name("proj.w"), {width, width});
    l.Add(name("proj.b"), {width});
    l.Add(name("ln2.w"), {width});
    l.Add(name("ln2.b"), {width});
    l.Add(name("fc1.w"), {4 * width, width});
    l.Add(name("fc1.b"), {4 * width});
    l.Add(name("fc2.w"), {width, 4 * width});
    l.Add(name("fc2.b"), {width});
  }
  l.Add("ln_f.w", {width});
  l.Add("ln_f.b", {width});
  l.Add("head.w", {vocab, width});
  return l;
}

struct Fixture {
  Layout layout;
  BlockPlan plan;
  std::vector<float> delta;
  std::vector<float> params;
};

const Fixture& BigFixture() {
  static const Fixture* f = [] {
    auto* x = new Fixture;
    x->layout = TransformerLayout();
    x->plan = BlockPlan::Reference(x->layout);
    std::mt19937 rng(1);
    std::normal_distribution<float> n(0.0f, 1e-3f);
    x->delta.resize(x->layout.total_numel());
    for (float& v : x->delta) v = n(rng);
    x->params.assign(x->delta.size(), 0.01f);
    return x;
  }();
  return *f;
}

const Fixture& SmokeFixture() {
  static const Fixture* f = [] {
    auto* x = new Fixture;
    x->layout = TransformerLayout(32, 512, 2);
    x->plan = BlockPlan::Reference(x->layout);
    x->delta.assign(x->layout.total_numel(), 1e-3f);
    x->params.assign(x->delta.size(), 0.01f);
    return x;
  }();
  return *f;
}

BasisSpec Basis(int64_t dist, uint32_t k) {
  BasisSpec b;
  b.distribution = static_cast<BasisDistribution>(dist);
  b.amplitude = b.distribution == BasisDistribution::kUniform ? BasisAmplitude::kInvSqrtDim
                                                              : BasisAmplitude::kUnit;
  b.seeds = MakeSeedPool(42, 0, k);
  return b;
}

const char* DistName(int64_t d) {
  switch (static_cast<BasisDistribution>(d)) {
    case BasisDistribution::kRademacher: return "rademacher";
    case BasisDistribution::kUniform: return "uniform";
    default: return "gaussian";
  }
}

void SetCounters(benchmark::State& state, const Fixture& f, uint64_t basis_elems, int threads) {
  const double per_iter = static_cast<double>(basis_elems);
  state.counters["basis_elems/s"] =
      benchmark::Counter(per_iter, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["per_core"] =
      benchmark::Counter(per_iter / threads, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["d"] = static_cast<double>(f.delta.size());
  state.counters["blocks"] = f.plan.num_blocks();
  state.SetLabel(DistName(state.range(0)));
}

uint64_t BasisElements(const Fixture& f, const CoefficientTable& t) {
  uint64_t n = 0;
  for (const Coefficient& c : t.entries()) n += f.plan.blocks()[c.block].size;
  return n;
}

void RunProject(benchmark::State& state, const Fixture& f, uint32_t k) {
  const BasisSpec basis = Basis(state.range(0), k);
  ProjectOptions opts;  // kFixed, n_l = K for every block
  opts.num_threads = static_cast<int>(state.range(1));
  uint64_t elems = 0;
  for (auto _ : state) {
    Result<CoefficientTable> t = Project(f.plan, basis, f.delta, opts);
    if (!t.ok()) {
      state.SkipWithError(t.status().ToString().c_str());
      return;
    }
    elems = BasisElements(f, *t);
    benchmark::DoNotOptimize(t->entries().data());
  }
  SetCounters(state, f, elems, opts.num_threads);
}

void RunReconstruct(benchmark::State& state, const Fixture& f, uint32_t k, double clip,
                    bool cache_norms = false) {
  const BasisSpec basis = Basis(state.range(0), k);
  ProjectOptions popts;
  popts.num_threads = 2;
  Result<CoefficientTable> table = Project(f.plan, basis, f.delta, popts);
  if (!table.ok()) {
    state.SkipWithError(table.status().ToString().c_str());
    return;
  }
  ReconstructOptions opts;
  opts.multiplier = -1.0;
  opts.clip_norm = clip;
  opts.num_threads = static_cast<int>(state.range(1));
  BasisNormCache cache;
  if (cache_norms) {
    opts.norm_cache = &cache;
    std::vector<float> warm = f.params;  // round 1 fills the cache
    if (!Reconstruct(f.plan, basis, *table, opts, warm).ok()) return;
  }
  std::vector<float> w = f.params;
  for (auto _ : state) {
    Result<ReconstructStats> s = Reconstruct(f.plan, basis, *table, opts, w);
    if (!s.ok()) {
      state.SkipWithError(s.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(w.data());
  }
  SetCounters(state, f, BasisElements(f, *table), opts.num_threads);
}

void BM_FerretProject(benchmark::State& state) { RunProject(state, BigFixture(), kPoolSize); }
void BM_FerretReconstruct(benchmark::State& state) {
  RunReconstruct(state, BigFixture(), kPoolSize, 0.0);
}
// With the reference's per-term clip to norm 10 (free for rademacher, one extra
// generating pass per term for the other distributions).
void BM_FerretReconstructClip(benchmark::State& state) {
  RunReconstruct(state, BigFixture(), kPoolSize, 10.0);
}
// Later rounds with a fixed seed pool: norms come from a BasisNormCache.
void BM_FerretReconstructClipCached(benchmark::State& state) {
  RunReconstruct(state, BigFixture(), kPoolSize, 10.0, /*cache_norms=*/true);
}
void BM_FerretSmoke(benchmark::State& state) {
  RunProject(state, SmokeFixture(), 8);
}

// STREAM-style copy of the same number of floats.
void BM_Copy(benchmark::State& state) {
  const Fixture& f = BigFixture();
  std::vector<float> dst(f.delta.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), f.delta.data(), f.delta.size() * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 *
                          static_cast<int64_t>(f.delta.size() * sizeof(float)));
}

// Args: {distribution (1 rademacher, 2 uniform, 3 gaussian), threads}.
void DistThreadArgs(benchmark::internal::Benchmark* b) {
  for (int dist : {1, 2, 3}) {
    for (int threads : {1, 2}) b->Args({dist, threads});
  }
  b->ArgNames({"dist", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_Copy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_FerretProject)->Apply(DistThreadArgs);
BENCHMARK(BM_FerretReconstruct)->Apply(DistThreadArgs);
BENCHMARK(BM_FerretReconstructClip)
    ->Args({1, 1})
    ->Args({2, 1})
    ->ArgNames({"dist", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_FerretReconstructClipCached)
    ->Args({2, 1})
    ->ArgNames({"dist", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_FerretSmoke)->Args({1, 1})->Args({2, 2})->Args({3, 1})->ArgNames({"dist", "threads"});

}  // namespace
}  // namespace fl::internal::ferret

// FERRET_BENCH_ISA=baseline|avx2 caps the CPU kernel copy (default: the best the CPU has).
int main(int argc, char** argv) {
  using fl::internal::ferret::KernelIsa;
  if (const char* isa = std::getenv("FERRET_BENCH_ISA")) {
    const std::string v(isa);
    fl::internal::ferret::SetKernelIsaLimitForTesting(
        v == "baseline" ? KernelIsa::kBaseline : v == "avx2" ? KernelIsa::kAvx2 : KernelIsa::kAvx512);
  }
  const KernelIsa active = fl::internal::ferret::ActiveKernelIsa();
  benchmark::AddCustomContext("ferret_kernels", active == KernelIsa::kAvx512 ? "avx512"
                                                : active == KernelIsa::kAvx2   ? "avx2"
                                                                               : "baseline");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
