#include "codec/ferret/kernels.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fl::internal::ferret {
namespace {

constexpr size_t kChunkSize = kTileSize * kChunkTiles;
// Uniform and gaussian entries come in groups of 32: 8 Philox calls of 4 words.
constexpr size_t kGroup = 32;
// Rademacher entries come in spans of 1024: 8 Philox calls of 128 bits.
constexpr size_t kSpan = 1024;

static_assert(kTileSize % kSpan == 0, "rademacher spans must not straddle tiles");

// Eight-lane vectors (GCC/Clang vector extensions): one AVX register in the AVX2 and
// AVX-512 copies of the hot loops, two SSE registers in the baseline one. Lanewise IEEE operations, so
// both copies compute the same bits. Every function taking or returning them is inlined, so GCC's note that their calling
// convention differs with and without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float V8f __attribute__((vector_size(32)));
typedef uint32_t V8u __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
typedef uint64_t V8u64 __attribute__((vector_size(64)));
typedef double V8d __attribute__((vector_size(64)));

#define FL_INLINE inline __attribute__((always_inline))
#define FL_INLINE_LAMBDA __attribute__((always_inline))

FL_INLINE V8f LoadF(const float* p) {
  V8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
FL_INLINE void StoreF(float* p, V8f v) { std::memcpy(p, &v, sizeof(v)); }

// kSignMasks[b][i] is the IEEE sign bit if bit i of byte b is set: XOR-ing it into a
// float multiplies the float by the rademacher entry exactly.
constexpr std::array<std::array<uint32_t, 8>, 256> MakeSignMasks() {
  std::array<std::array<uint32_t, 8>, 256> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    for (uint32_t i = 0; i < 8; ++i) t[b][i] = ((b >> i) & 1u) ? 0x80000000u : 0u;
  }
  return t;
}
alignas(64) constexpr std::array<std::array<uint32_t, 8>, 256> kSignMasks = MakeSignMasks();

FL_INLINE V8u SignMask(uint32_t byte) {
  V8u v;
  std::memcpy(&v, kSignMasks[byte & 255u].data(), sizeof(v));
  return v;
}

FL_INLINE V8f XorSign(V8f x, V8u mask) {
  return reinterpret_cast<V8f>(reinterpret_cast<V8u>(x) ^ mask);
}

// Reduces 32 float lanes (acc[b] lane i is lane 8b + i) in a fixed tree.
FL_INLINE float ReduceLanes(const V8f acc[4]) {
  const V8f t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

// --- Work items: one chunk of one job.

struct Item {
  uint32_t job;
  uint32_t chunk;
  size_t slot;  // first result slot of this item
};

// The hot loops, compiled three times. The build targets baseline x86-64, but the
// sign-mask and Philox loops run two to three times as fast with AVX2 or AVX-512 where
// the CPU has them (chosen at run time by ActiveKernelIsa()).
namespace base {
#define FL_FERRET_IMPL_AVX2 0
#define FL_FERRET_IMPL_AVX512 0
#include "codec/ferret/kernels_impl.inc"
#undef FL_FERRET_IMPL_AVX512
#undef FL_FERRET_IMPL_AVX2
}  // namespace base

// GCC only: clang ignores "#pragma GCC target", so clang builds (fuzzers) use the base copy.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FL_FERRET_HAVE_SIMD_COPIES 1
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#define FL_FERRET_IMPL_AVX2 1
#define FL_FERRET_IMPL_AVX512 0
#include "codec/ferret/kernels_impl.inc"
#undef FL_FERRET_IMPL_AVX512
#undef FL_FERRET_IMPL_AVX2
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl")
// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized on their own
// _mm512_undefined_epi32() pass-through operand (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace avx512 {
#define FL_FERRET_IMPL_AVX2 0
#define FL_FERRET_IMPL_AVX512 1
#include "codec/ferret/kernels_impl.inc"
#undef FL_FERRET_IMPL_AVX512
#undef FL_FERRET_IMPL_AVX2
}  // namespace avx512
#pragma GCC diagnostic pop
#pragma GCC pop_options
#else
#define FL_FERRET_HAVE_SIMD_COPIES 0
#endif

std::atomic<int> isa_limit{static_cast<int>(KernelIsa::kAvx512)};

KernelIsa CpuIsa() {
#if FL_FERRET_HAVE_SIMD_COPIES
  static const KernelIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2")) {
      return KernelIsa::kAvx512;
    }
    return __builtin_cpu_supports("avx2") ? KernelIsa::kAvx2 : KernelIsa::kBaseline;
  }();
  return isa;
#else
  return KernelIsa::kBaseline;
#endif
}

KernelIsa Isa() {
  return static_cast<KernelIsa>(
      std::min(static_cast<int>(CpuIsa()), isa_limit.load(std::memory_order_relaxed)));
}

void ProjectChunk(BasisDistribution dist, const float* x, const ProjectJob& job, size_t chunk,
                  double* partial) {
  switch (Isa()) {
#if FL_FERRET_HAVE_SIMD_COPIES
    case KernelIsa::kAvx512: return avx512::ProjectChunk(dist, x, job, chunk, partial);
    case KernelIsa::kAvx2: return avx2::ProjectChunk(dist, x, job, chunk, partial);
#endif
    default: return base::ProjectChunk(dist, x, job, chunk, partial);
  }
}

void AccumulateChunk(BasisDistribution dist, float* y, const AccumulateJob& job, size_t chunk) {
  switch (Isa()) {
#if FL_FERRET_HAVE_SIMD_COPIES
    case KernelIsa::kAvx512: return avx512::AccumulateChunk(dist, y, job, chunk);
    case KernelIsa::kAvx2: return avx2::AccumulateChunk(dist, y, job, chunk);
#endif
    default: return base::AccumulateChunk(dist, y, job, chunk);
  }
}

void NormChunk(BasisDistribution dist, const NormJob& job, size_t chunk, uint64_t* partial) {
  switch (Isa()) {
#if FL_FERRET_HAVE_SIMD_COPIES
    case KernelIsa::kAvx512: return avx512::NormChunk(dist, job, chunk, partial);
    case KernelIsa::kAvx2: return avx2::NormChunk(dist, job, chunk, partial);
#endif
    default: return base::NormChunk(dist, job, chunk, partial);
  }
}

static_assert(kChunkSize <= (size_t{1} << 15), "uniform square sums of a chunk overflow 64 bits");

size_t NumChunks(size_t size) { return (size + kChunkSize - 1) / kChunkSize; }

template <typename Job>
std::vector<Item> MakeItems(std::span<const Job> jobs, size_t* total_slots) {
  std::vector<Item> items;
  size_t slot = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const size_t chunks = NumChunks(jobs[j].size);
    for (size_t c = 0; c < chunks; ++c) {
      items.push_back({static_cast<uint32_t>(j), static_cast<uint32_t>(c), slot});
      slot += jobs[j].seeds.size();
    }
  }
  *total_slots = slot;
  return items;
}

Status CheckRange(size_t offset, size_t size, size_t limit, size_t job) {
  if (offset > limit || size > limit - offset) {
    return Status::InvalidArgument("ferret kernel job " + std::to_string(job) + " range [" +
                                   std::to_string(offset) + ", +" + std::to_string(size) +
                                   ") exceeds the vector of " + std::to_string(limit));
  }
  return Status::Ok();
}

Status CheckDistribution(BasisDistribution dist) {
  switch (dist) {
    case BasisDistribution::kRademacher:
    case BasisDistribution::kUniform:
    case BasisDistribution::kGaussian:
      return Status::Ok();
  }
  return Status::InvalidArgument("unknown basis distribution " +
                                 std::to_string(static_cast<uint32_t>(dist)));
}

struct ProjectContext {
  BasisDistribution dist;
  const float* x;
  std::span<const ProjectJob> jobs;
  const std::vector<Item>* items;
  double* partials;
};

struct AccumulateContext {
  BasisDistribution dist;
  float* y;
  std::span<const AccumulateJob> jobs;
  const std::vector<Item>* items;
};

struct NormContext {
  BasisDistribution dist;
  std::span<const NormJob> jobs;
  const std::vector<Item>* items;
  uint64_t* partials;
};

}  // namespace

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void ParallelFor(int num_threads, size_t n, void (*fn)(void* ctx, size_t i), void* ctx) {
  const size_t threads = std::min<size_t>(static_cast<size_t>(std::max(num_threads, 1)), n);
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(ctx, i);
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(worker);
  worker();
  for (std::thread& t : helpers) t.join();
}

Status ValidateProjectJobs(BasisDistribution dist, size_t size,
                           std::span<const ProjectJob> jobs) {
  FL_RETURN_IF_ERROR(CheckDistribution(dist));
  for (size_t j = 0; j < jobs.size(); ++j) {
    FL_RETURN_IF_ERROR(CheckRange(jobs[j].offset, jobs[j].size, size, j));
    if (jobs[j].dots.size() != jobs[j].seeds.size()) {
      return Status::InvalidArgument("ferret project job " + std::to_string(j) +
                                     ": dots and seeds differ in length");
    }
  }
  return Status::Ok();
}

Status ValidateAccumulateJobs(BasisDistribution dist, size_t size,
                              std::span<const AccumulateJob> jobs) {
  FL_RETURN_IF_ERROR(CheckDistribution(dist));
  std::vector<std::pair<size_t, size_t>> ranges;
  for (size_t j = 0; j < jobs.size(); ++j) {
    FL_RETURN_IF_ERROR(CheckRange(jobs[j].offset, jobs[j].size, size, j));
    if (jobs[j].coeffs.size() != jobs[j].seeds.size()) {
      return Status::InvalidArgument("ferret accumulate job " + std::to_string(j) +
                                     ": coeffs and seeds differ in length");
    }
    if (jobs[j].size > 0) ranges.emplace_back(jobs[j].offset, jobs[j].size);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first) {
      return Status::InvalidArgument("ferret accumulate jobs overlap at offset " +
                                     std::to_string(ranges[i].first));
    }
  }
  return Status::Ok();
}

Status ValidateNormJobs(BasisDistribution dist, std::span<const NormJob> jobs) {
  FL_RETURN_IF_ERROR(CheckDistribution(dist));
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (jobs[j].norms_sq.size() != jobs[j].seeds.size()) {
      return Status::InvalidArgument("ferret norm job " + std::to_string(j) +
                                     ": norms and seeds differ in length");
    }
  }
  return Status::Ok();
}

Status CpuProject(BasisDistribution dist, std::span<const float> x,
                  std::span<const ProjectJob> jobs, int num_threads) {
  FL_RETURN_IF_ERROR(ValidateProjectJobs(dist, x.size(), jobs));
  size_t slots = 0;
  const std::vector<Item> items = MakeItems(jobs, &slots);
  std::vector<double> partials(slots);
  ProjectContext ctx{dist, x.data(), jobs, &items, partials.data()};
  ParallelFor(ResolveThreads(num_threads), items.size(), [](void* p, size_t i) {
    auto* c = static_cast<ProjectContext*>(p);
    const Item& item = (*c->items)[i];
    const ProjectJob& job = c->jobs[item.job];
    double* out = c->partials + item.slot;
    ProjectChunk(c->dist, c->x, job, item.chunk, out);
  }, &ctx);
  // Fixed-order reduction: chunks of a job in index order.
  for (const ProjectJob& job : jobs) {
    for (double& d : job.dots) d = 0.0;
  }
  for (const Item& item : items) {
    const ProjectJob& job = jobs[item.job];
    for (size_t i = 0; i < job.seeds.size(); ++i) job.dots[i] += partials[item.slot + i];
  }
  return Status::Ok();
}

Status CpuAccumulate(BasisDistribution dist, std::span<float> y,
                     std::span<const AccumulateJob> jobs, int num_threads) {
  FL_RETURN_IF_ERROR(ValidateAccumulateJobs(dist, y.size(), jobs));
  size_t slots = 0;
  const std::vector<Item> items = MakeItems(jobs, &slots);
  AccumulateContext ctx{dist, y.data(), jobs, &items};
  ParallelFor(ResolveThreads(num_threads), items.size(), [](void* p, size_t i) {
    auto* c = static_cast<AccumulateContext*>(p);
    const Item& item = (*c->items)[i];
    const AccumulateJob& job = c->jobs[item.job];
    AccumulateChunk(c->dist, c->y, job, item.chunk);
  }, &ctx);
  return Status::Ok();
}

Status CpuBasisNormsSquared(BasisDistribution dist, std::span<const NormJob> jobs,
                            int num_threads) {
  FL_RETURN_IF_ERROR(ValidateNormJobs(dist, jobs));
  if (dist == BasisDistribution::kRademacher) {
    for (const NormJob& job : jobs) {
      for (double& v : job.norms_sq) v = static_cast<double>(job.size);
    }
    return Status::Ok();
  }
  size_t slots = 0;
  const std::vector<Item> items = MakeItems(jobs, &slots);
  std::vector<uint64_t> partials(slots);
  NormContext ctx{dist, jobs, &items, partials.data()};
  ParallelFor(ResolveThreads(num_threads), items.size(), [](void* p, size_t i) {
    auto* c = static_cast<NormContext*>(p);
    const Item& item = (*c->items)[i];
    NormChunk(c->dist, c->jobs[item.job], item.chunk, c->partials + item.slot);
  }, &ctx);
  // Integer sums: exact, so the order does not matter.
  std::vector<std::vector<unsigned __int128>> sums(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) sums[j].assign(jobs[j].seeds.size(), 0);
  for (const Item& item : items) {
    std::vector<unsigned __int128>& s = sums[item.job];
    for (size_t i = 0; i < s.size(); ++i) s[i] += partials[item.slot + i];
  }
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (size_t i = 0; i < sums[j].size(); ++i) {
      jobs[j].norms_sq[i] = FixedSquareSumToDouble(
          dist, static_cast<uint64_t>(sums[j][i] >> 64), static_cast<uint64_t>(sums[j][i]));
    }
  }
  return Status::Ok();
}

void CpuGenerateBasis(BasisDistribution dist, uint64_t seed, uint32_t block_id,
                      uint64_t offset, std::span<float> out) {
  const PhiloxStream s = MakePhiloxStream(seed, block_id, kPhiloxDomainBasis);
  for (size_t i = 0; i < out.size(); ++i) out[i] = BasisEntry(s, dist, offset + i);
}

void SetKernelIsaLimitForTesting(KernelIsa limit) {
  isa_limit.store(static_cast<int>(limit), std::memory_order_relaxed);
}

KernelIsa ActiveKernelIsa() { return Isa(); }

double FixedSquareSumToDouble(BasisDistribution dist, uint64_t hi, uint64_t lo) {
  const unsigned __int128 v = (static_cast<unsigned __int128>(hi) << 64) | lo;
  const double d = static_cast<double>(v);
  if (dist == BasisDistribution::kUniform) return d * 0x1p-48;
  if (dist == BasisDistribution::kGaussian) return d * 0x1p-32;
  return d;
}

}  // namespace fl::internal::ferret
