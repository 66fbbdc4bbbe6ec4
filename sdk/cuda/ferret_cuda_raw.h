#ifndef FL_SDK_CUDA_FERRET_CUDA_RAW_H_
#define FL_SDK_CUDA_FERRET_CUDA_RAW_H_

// The boundary between ferret_cuda.cc (host C++, validates and flattens jobs) and
// ferret_cuda_kernels.cu (nvcc). Plain types only, so nvcc compiles as little of the
// project's C++ as possible. Every function returns an empty string on success and the
// CUDA error text otherwise. Pointers are host memory. Callers have validated ranges.

#include <cstdint>
#include <string>

namespace fl::internal::ferret::cuda_raw {

struct RawJob {
  uint32_t block_id;
  uint64_t offset;      // into the vector (unused for norms)
  uint64_t size;
  uint64_t first_seed;  // index into the flattened seeds / coefficients / results
  uint32_t num_seeds;
};

std::string DeviceCount(int* count);

// dots[first_seed + i] for each job, in double.
std::string Project(uint32_t dist, const float* x, uint64_t n, const RawJob* jobs,
                    uint32_t num_jobs, const uint64_t* seeds, uint64_t total_seeds,
                    double* dots);

// y (n entries) updated in place; jobs do not overlap.
std::string Accumulate(uint32_t dist, float* y, uint64_t n, const RawJob* jobs,
                       uint32_t num_jobs, const uint64_t* seeds, const float* coeffs,
                       uint64_t total_seeds);

// Exact fixed-point sums of squares as 128-bit integers: sums[2 * s] = high word,
// sums[2 * s + 1] = low word, for s in [0, total_seeds).
std::string SquareSums(uint32_t dist, const RawJob* jobs, uint32_t num_jobs,
                       const uint64_t* seeds, uint64_t total_seeds, uint64_t* sums);

std::string Generate(uint32_t dist, uint64_t seed, uint32_t block_id, uint64_t offset,
                     uint64_t count, float* out);

}  // namespace fl::internal::ferret::cuda_raw

#endif  // FL_SDK_CUDA_FERRET_CUDA_RAW_H_
