#ifndef FL_SDK_CODEC_FERRET_KERNELS_H_
#define FL_SDK_CODEC_FERRET_KERNELS_H_

// The raw fused kernels of Ferret: projection (dot products of a vector with many
// Philox bases), reconstruction (a weighted sum of many bases added to a vector) and
// basis norms for clipping. They work on "jobs", one per block, and know nothing of
// plans, scales or tables (see projection.h for those). The CPU versions live here; the
// CUDA twins (sdk/cuda/ferret_cuda.h) take the very same job lists.
//
// Fusion. Neither a basis vector nor a d x K matrix is ever materialized. A block is cut
// into tiles of kTileSize entries; the CPU kernels keep one tile of the input (or of the
// accumulator) in L1 and run every basis of the block over it, generating each basis's
// values for that tile on the fly (8 or 16 Philox calls at a time in SIMD registers;
// rademacher signs are applied by XOR-ing sign masks into the floats).
//
// ISA. The hot loops are compiled for baseline x86-64, AVX2 and AVX-512 and the best
// copy the CPU supports runs (ActiveKernelIsa). The copies differ only in how they
// compute Philox's integer words; their float operations and summation order are the
// same, so every copy gives the same bits (tested).
//
// Determinism. Tiles and the chunks of kChunkTiles tiles that make one work item are
// fixed by the entry index alone. A tile's dot product is summed in float in a fixed
// lane pattern, tile results are added in double in tile order, chunk results in chunk
// order. Work items go to threads in any order, but every result lands in its own slot
// and is reduced in that fixed order: results are bitwise identical for every thread
// count. Reconstruction is elementwise: entry j of the block gets
//   acc = 0; for i in job order: acc = acc + coeffs[i] * u_i[j];  y[j] = y[j] + acc
// with each operation rounded once (no fused multiply-add). The CUDA twin evaluates the
// same expression in the same order, so CPU and CUDA reconstructions are bitwise equal
// (projections are not: the CUDA reduction tree differs; they agree to rounding).

#include <cstddef>
#include <cstdint>
#include <span>

#include "fl/status.h"
#include "rng/philox.h"

namespace fl::internal::ferret {

// Entries per tile. A multiple of 128 so a rademacher Philox call never straddles tiles.
inline constexpr size_t kTileSize = 4096;
// Tiles per work item: the unit of parallelism and of the first reduction level.
inline constexpr size_t kChunkTiles = 8;

// One block of a fused projection:
//   dots[i] = sum_{j < size} x[offset + j] * u(seeds[i], block_id, j)
// where u is the unit-scale basis entry of philox.h (BasisEntry with kPhiloxDomainBasis).
struct ProjectJob {
  uint32_t block_id = 0;
  size_t offset = 0;  // in the flat input
  size_t size = 0;
  std::span<const uint64_t> seeds;
  std::span<double> dots;  // seeds.size() results
};

// One block of a fused reconstruction:
//   y[offset + j] += sum_i coeffs[i] * u(seeds[i], block_id, j),  j < size,
// evaluated as documented above.
struct AccumulateJob {
  uint32_t block_id = 0;
  size_t offset = 0;
  size_t size = 0;
  std::span<const uint64_t> seeds;
  std::span<const float> coeffs;  // one per seed
};

// One block of basis norms: norms_sq[i] = sum_{j < size} u(seeds[i], block_id, j)^2.
// Rademacher norms are exactly `size`. Uniform and gaussian norms are computed from the
// exact fixed-point squares of philox.h (UniformSquareFixed, GaussianSquareFixed) summed
// as integers, so they are independent of summation order and equal on CPU and CUDA.
struct NormJob {
  uint32_t block_id = 0;
  size_t size = 0;
  std::span<const uint64_t> seeds;
  std::span<double> norms_sq;  // seeds.size() results
};

// Threads actually used for a request: `requested` if positive, else the hardware
// concurrency (at least 1).
int ResolveThreads(int requested);

// Runs fn(i) for i in [0, n) on up to `num_threads` threads (the caller's included).
// Returns after every call has finished. fn must not throw.
void ParallelFor(int num_threads, size_t n, void (*fn)(void* ctx, size_t i), void* ctx);

// Job checks shared by the CPU and CUDA kernels. InvalidArgument if the distribution
// is unknown, a job's range exceeds the vector of `size` entries, a job's spans
// disagree in length, or (accumulate only) two jobs overlap.
Status ValidateProjectJobs(BasisDistribution dist, size_t size,
                           std::span<const ProjectJob> jobs);
Status ValidateAccumulateJobs(BasisDistribution dist, size_t size,
                              std::span<const AccumulateJob> jobs);
Status ValidateNormJobs(BasisDistribution dist, std::span<const NormJob> jobs);

// ValidateProjectJobs, then the projection. Results are independent of num_threads.
Status CpuProject(BasisDistribution dist, std::span<const float> x,
                  std::span<const ProjectJob> jobs, int num_threads);

// ValidateAccumulateJobs (y is untouched if it fails), then the reconstruction.
Status CpuAccumulate(BasisDistribution dist, std::span<float> y,
                     std::span<const AccumulateJob> jobs, int num_threads);

// ValidateNormJobs, then the norms.
Status CpuBasisNormsSquared(BasisDistribution dist, std::span<const NormJob> jobs,
                            int num_threads);

// out[i] = u(seed, block_id, offset + i): a slice of one basis vector, for tests, the
// CUDA comparison and the exact least-squares oracle. Any offset is allowed.
void CpuGenerateBasis(BasisDistribution dist, uint64_t seed, uint32_t block_id,
                      uint64_t offset, std::span<float> out);

// The CPU kernels exist in three copies, picked at run time from what the CPU offers.
// All give the same bits.
enum class KernelIsa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The copy the CPU kernels run now: the best the CPU supports, within the test limit.
KernelIsa ActiveKernelIsa();
// Test hook: caps the copy used (default kAvx512, i.e. no cap), so tests can check that
// every copy the machine can run gives the same bits.
void SetKernelIsaLimitForTesting(KernelIsa limit);

// Converts an exact fixed-point sum of squares (units as in NormJob) to a double.
// Shared by the CPU and CUDA paths so that both round identically.
double FixedSquareSumToDouble(BasisDistribution dist, uint64_t hi, uint64_t lo);

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_KERNELS_H_
