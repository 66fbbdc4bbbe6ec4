// CUDA kernels behind sdk/cuda/ferret_cuda.h. Each thread owns four consecutive entries
// of a block (one Philox call for uniform and gaussian; for rademacher, the 32 lanes of a
// warp share one call for their 128 entries, which SIMT executes once). A CTA of 256
// threads covers a 1024-entry tile.

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/ferret_cuda_raw.h"
#include "rng/philox.h"

namespace fl::internal::ferret::cuda_raw {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kTile = 4 * kThreads;
constexpr int kWarps = kThreads / 32;

// Frees its device allocation on every return path.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  cudaError_t Allocate(size_t count) {
    if (count == 0) count = 1;
    return cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T));
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

std::string ErrorText(cudaError_t e) {
  cudaGetLastError();  // clear a sticky launch error so later calls start clean
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

#define FL_CUDA_TRY(expr)                       \
  do {                                          \
    const cudaError_t fl_cuda_err_ = (expr);    \
    if (fl_cuda_err_ != cudaSuccess) return ErrorText(fl_cuda_err_); \
  } while (0)

uint64_t NumTiles(uint64_t size) { return (size + kTile - 1) / kTile; }

template <BasisDistribution D>
__global__ void ProjectKernel(const float* x, uint64_t size, uint32_t block_id,
                              const uint64_t* seeds, uint32_t n, float* partials) {
  __shared__ float warp_sums[kWarps];
  const uint64_t tile = blockIdx.x;
  const uint64_t q = tile * (kTile / 4) + threadIdx.x;
  const uint64_t j0 = 4 * q;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float xv[4];
  for (int i = 0; i < 4; ++i) xv[i] = j0 + i < size ? x[j0 + i] : 0.0f;
  for (uint32_t k = 0; k < n; ++k) {
    const PhiloxStream s = MakePhiloxStream(seeds[k], block_id, kPhiloxDomainBasis);
    float u[4];
    BasisQuad(s, D, q, u);
    float p = xv[0] * u[0] + xv[1] * u[1] + xv[2] * u[2] + xv[3] * u[3];
    for (int off = 16; off > 0; off >>= 1) p += __shfl_down_sync(0xffffffffu, p, off);
    if (lane == 0) warp_sums[warp] = p;
    __syncthreads();
    if (threadIdx.x == 0) {
      float t = 0.0f;
      for (int w = 0; w < kWarps; ++w) t += warp_sums[w];
      partials[tile * n + k] = t;
    }
    __syncthreads();
  }
}

// dots[k] = sum over tiles in tile order, in double.
__global__ void ReduceTilesKernel(const float* partials, uint64_t tiles, uint32_t n,
                                  double* dots) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n) return;
  double sum = 0.0;
  for (uint64_t t = 0; t < tiles; ++t) sum += static_cast<double>(partials[t * n + k]);
  dots[k] = sum;
}

// y[j] += sum_k coeffs[k] u_k[j], evaluated exactly as the CPU kernel does:
// acc = 0; acc = acc + c * u (two roundings, never fused); y = y + acc.
template <BasisDistribution D>
__global__ void AccumulateKernel(float* y, uint64_t size, uint32_t block_id,
                                 const uint64_t* seeds, const float* coeffs, uint32_t n) {
  const uint64_t q = static_cast<uint64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const uint64_t j0 = 4 * q;
  if (j0 >= size) return;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (uint32_t k = 0; k < n; ++k) {
    const PhiloxStream s = MakePhiloxStream(seeds[k], block_id, kPhiloxDomainBasis);
    float u[4];
    BasisQuad(s, D, q, u);
    const float c = coeffs[k];
    for (int i = 0; i < 4; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(c, u[i]));
  }
  for (int i = 0; i < 4; ++i) {
    if (j0 + i < size) y[j0 + i] = __fadd_rn(y[j0 + i], acc[i]);
  }
}

template <BasisDistribution D>
__global__ void SquareSumKernel(uint64_t size, uint32_t block_id, const uint64_t* seeds,
                                uint32_t n, unsigned long long* partials) {
  __shared__ unsigned long long warp_sums[kWarps];
  const uint64_t tile = blockIdx.x;
  const uint64_t q = tile * (kTile / 4) + threadIdx.x;
  const uint64_t j0 = 4 * q;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (uint32_t k = 0; k < n; ++k) {
    const PhiloxStream s = MakePhiloxStream(seeds[k], block_id, kPhiloxDomainBasis);
    unsigned long long p = 0;
    if (D == BasisDistribution::kUniform) {
      const Philox4x32Counter r = s.At(q);
      for (int i = 0; i < 4; ++i) {
        if (j0 + i < size) p += UniformSquareFixed(r.v[i]);
      }
    } else {
      float u[4];
      BasisQuad(s, D, q, u);
      for (int i = 0; i < 4; ++i) {
        if (j0 + i < size) p += GaussianSquareFixed(u[i]);
      }
    }
    for (int off = 16; off > 0; off >>= 1) p += __shfl_down_sync(0xffffffffu, p, off);
    if (lane == 0) warp_sums[warp] = p;
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long t = 0;
      for (int w = 0; w < kWarps; ++w) t += warp_sums[w];
      partials[tile * n + k] = t;
    }
    __syncthreads();
  }
}

template <BasisDistribution D>
__global__ void GenerateKernel(uint64_t seed, uint32_t block_id, uint64_t offset, uint64_t count,
                               float* out) {
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= count) return;
  const PhiloxStream s = MakePhiloxStream(seed, block_id, kPhiloxDomainBasis);
  out[i] = BasisEntry(s, D, offset + i);
}

// Launches Kernel<D> for the runtime distribution.
#define FL_DISPATCH(dist, KERNEL, GRID, ...)                                              \
  switch (static_cast<BasisDistribution>(dist)) {                                         \
    case BasisDistribution::kRademacher:                                                  \
      KERNEL<BasisDistribution::kRademacher><<<(GRID), kThreads>>>(__VA_ARGS__);          \
      break;                                                                              \
    case BasisDistribution::kUniform:                                                     \
      KERNEL<BasisDistribution::kUniform><<<(GRID), kThreads>>>(__VA_ARGS__);             \
      break;                                                                              \
    default:                                                                              \
      KERNEL<BasisDistribution::kGaussian><<<(GRID), kThreads>>>(__VA_ARGS__);            \
      break;                                                                              \
  }

}  // namespace

std::string DeviceCount(int* count) {
  *count = 0;
  const cudaError_t e = cudaGetDeviceCount(count);
  if (e != cudaSuccess) {
    *count = 0;
    return ErrorText(e);
  }
  return {};
}

std::string Project(uint32_t dist, const float* x, uint64_t n, const RawJob* jobs,
                    uint32_t num_jobs, const uint64_t* seeds, uint64_t total_seeds,
                    double* dots) {
  DeviceBuffer<float> d_x;
  DeviceBuffer<uint64_t> d_seeds;
  DeviceBuffer<double> d_dots;
  FL_CUDA_TRY(d_x.Allocate(n));
  FL_CUDA_TRY(d_seeds.Allocate(total_seeds));
  FL_CUDA_TRY(d_dots.Allocate(total_seeds));
  FL_CUDA_TRY(cudaMemcpy(d_x.get(), x, n * sizeof(float), cudaMemcpyHostToDevice));
  FL_CUDA_TRY(cudaMemcpy(d_seeds.get(), seeds, total_seeds * sizeof(uint64_t),
                         cudaMemcpyHostToDevice));
  uint64_t max_partials = 0;
  for (uint32_t j = 0; j < num_jobs; ++j) {
    max_partials = std::max<uint64_t>(max_partials, NumTiles(jobs[j].size) * jobs[j].num_seeds);
  }
  DeviceBuffer<float> d_partials;
  FL_CUDA_TRY(d_partials.Allocate(max_partials));
  for (uint32_t j = 0; j < num_jobs; ++j) {
    const RawJob& job = jobs[j];
    if (job.num_seeds == 0) continue;
    double* out = d_dots.get() + job.first_seed;
    if (job.size == 0) {
      FL_CUDA_TRY(cudaMemset(out, 0, job.num_seeds * sizeof(double)));
      continue;
    }
    const uint64_t tiles = NumTiles(job.size);
    FL_DISPATCH(dist, ProjectKernel, static_cast<unsigned>(tiles), d_x.get() + job.offset,
                job.size, job.block_id, d_seeds.get() + job.first_seed, job.num_seeds,
                d_partials.get());
    FL_CUDA_TRY(cudaGetLastError());
    ReduceTilesKernel<<<(job.num_seeds + kThreads - 1) / kThreads, kThreads>>>(
        d_partials.get(), tiles, job.num_seeds, out);
    FL_CUDA_TRY(cudaGetLastError());
  }
  FL_CUDA_TRY(cudaMemcpy(dots, d_dots.get(), total_seeds * sizeof(double),
                         cudaMemcpyDeviceToHost));
  return {};
}

std::string Accumulate(uint32_t dist, float* y, uint64_t n, const RawJob* jobs,
                       uint32_t num_jobs, const uint64_t* seeds, const float* coeffs,
                       uint64_t total_seeds) {
  DeviceBuffer<float> d_y;
  DeviceBuffer<uint64_t> d_seeds;
  DeviceBuffer<float> d_coeffs;
  FL_CUDA_TRY(d_y.Allocate(n));
  FL_CUDA_TRY(d_seeds.Allocate(total_seeds));
  FL_CUDA_TRY(d_coeffs.Allocate(total_seeds));
  FL_CUDA_TRY(cudaMemcpy(d_y.get(), y, n * sizeof(float), cudaMemcpyHostToDevice));
  FL_CUDA_TRY(cudaMemcpy(d_seeds.get(), seeds, total_seeds * sizeof(uint64_t),
                         cudaMemcpyHostToDevice));
  FL_CUDA_TRY(cudaMemcpy(d_coeffs.get(), coeffs, total_seeds * sizeof(float),
                         cudaMemcpyHostToDevice));
  for (uint32_t j = 0; j < num_jobs; ++j) {
    const RawJob& job = jobs[j];
    if (job.num_seeds == 0 || job.size == 0) continue;
    FL_DISPATCH(dist, AccumulateKernel, static_cast<unsigned>(NumTiles(job.size)),
                d_y.get() + job.offset, job.size, job.block_id, d_seeds.get() + job.first_seed,
                d_coeffs.get() + job.first_seed, job.num_seeds);
    FL_CUDA_TRY(cudaGetLastError());
  }
  FL_CUDA_TRY(cudaMemcpy(y, d_y.get(), n * sizeof(float), cudaMemcpyDeviceToHost));
  return {};
}

std::string SquareSums(uint32_t dist, const RawJob* jobs, uint32_t num_jobs,
                       const uint64_t* seeds, uint64_t total_seeds, uint64_t* sums) {
  DeviceBuffer<uint64_t> d_seeds;
  FL_CUDA_TRY(d_seeds.Allocate(total_seeds));
  FL_CUDA_TRY(cudaMemcpy(d_seeds.get(), seeds, total_seeds * sizeof(uint64_t),
                         cudaMemcpyHostToDevice));
  uint64_t max_partials = 0;
  for (uint32_t j = 0; j < num_jobs; ++j) {
    max_partials = std::max<uint64_t>(max_partials, NumTiles(jobs[j].size) * jobs[j].num_seeds);
  }
  DeviceBuffer<unsigned long long> d_partials;
  FL_CUDA_TRY(d_partials.Allocate(max_partials));
  std::vector<unsigned long long> partials;
  for (uint64_t s = 0; s < 2 * total_seeds; ++s) sums[s] = 0;
  for (uint32_t j = 0; j < num_jobs; ++j) {
    const RawJob& job = jobs[j];
    if (job.num_seeds == 0 || job.size == 0) continue;
    const uint64_t tiles = NumTiles(job.size);
    FL_DISPATCH(dist, SquareSumKernel, static_cast<unsigned>(tiles), job.size, job.block_id,
                d_seeds.get() + job.first_seed, job.num_seeds, d_partials.get());
    FL_CUDA_TRY(cudaGetLastError());
    partials.resize(tiles * job.num_seeds);
    FL_CUDA_TRY(cudaMemcpy(partials.data(), d_partials.get(),
                           partials.size() * sizeof(unsigned long long),
                           cudaMemcpyDeviceToHost));
    for (uint32_t k = 0; k < job.num_seeds; ++k) {
      unsigned __int128 total = 0;  // integer sums: exact in any order
      for (uint64_t t = 0; t < tiles; ++t) total += partials[t * job.num_seeds + k];
      sums[2 * (job.first_seed + k)] = static_cast<uint64_t>(total >> 64);
      sums[2 * (job.first_seed + k) + 1] = static_cast<uint64_t>(total);
    }
  }
  return {};
}

std::string Generate(uint32_t dist, uint64_t seed, uint32_t block_id, uint64_t offset,
                     uint64_t count, float* out) {
  if (count == 0) return {};
  DeviceBuffer<float> d_out;
  FL_CUDA_TRY(d_out.Allocate(count));
  const unsigned grid = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  FL_DISPATCH(dist, GenerateKernel, grid, seed, block_id, offset, count, d_out.get());
  FL_CUDA_TRY(cudaGetLastError());
  FL_CUDA_TRY(cudaMemcpy(out, d_out.get(), count * sizeof(float), cudaMemcpyDeviceToHost));
  return {};
}

}  // namespace fl::internal::ferret::cuda_raw
