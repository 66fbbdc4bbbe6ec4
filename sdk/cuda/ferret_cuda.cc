#include "cuda/ferret_cuda.h"

#include <string>
#include <vector>

#if defined(FL_HAVE_CUDA)
#include "cuda/ferret_cuda_raw.h"
#endif

namespace fl::internal::ferret {

#if defined(FL_HAVE_CUDA)

namespace {

Status FromRaw(const std::string& error, const char* what) {
  if (error.empty()) return Status::Ok();
  return Status::Internal(std::string("CUDA ") + what + ": " + error);
}

Status RequireDevice() {
  if (!CudaAvailable()) return Status::Unavailable("no usable CUDA device");
  return Status::Ok();
}

}  // namespace

bool CudaCompiled() { return true; }

bool CudaAvailable() {
  int count = 0;
  return cuda_raw::DeviceCount(&count).empty() && count > 0;
}

Status CudaProject(BasisDistribution dist, std::span<const float> x,
                   std::span<const ProjectJob> jobs) {
  FL_RETURN_IF_ERROR(ValidateProjectJobs(dist, x.size(), jobs));
  FL_RETURN_IF_ERROR(RequireDevice());
  std::vector<cuda_raw::RawJob> raw;
  std::vector<uint64_t> seeds;
  for (const ProjectJob& job : jobs) {
    raw.push_back({job.block_id, job.offset, job.size, seeds.size(),
                   static_cast<uint32_t>(job.seeds.size())});
    seeds.insert(seeds.end(), job.seeds.begin(), job.seeds.end());
  }
  std::vector<double> dots(seeds.size());
  FL_RETURN_IF_ERROR(FromRaw(
      cuda_raw::Project(static_cast<uint32_t>(dist), x.data(), x.size(), raw.data(),
                        static_cast<uint32_t>(raw.size()), seeds.data(), seeds.size(),
                        dots.data()),
      "project"));
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (size_t i = 0; i < jobs[j].seeds.size(); ++i) {
      jobs[j].dots[i] = dots[raw[j].first_seed + i];
    }
  }
  return Status::Ok();
}

Status CudaAccumulate(BasisDistribution dist, std::span<float> y,
                      std::span<const AccumulateJob> jobs) {
  FL_RETURN_IF_ERROR(ValidateAccumulateJobs(dist, y.size(), jobs));
  FL_RETURN_IF_ERROR(RequireDevice());
  std::vector<cuda_raw::RawJob> raw;
  std::vector<uint64_t> seeds;
  std::vector<float> coeffs;
  for (const AccumulateJob& job : jobs) {
    raw.push_back({job.block_id, job.offset, job.size, seeds.size(),
                   static_cast<uint32_t>(job.seeds.size())});
    seeds.insert(seeds.end(), job.seeds.begin(), job.seeds.end());
    coeffs.insert(coeffs.end(), job.coeffs.begin(), job.coeffs.end());
  }
  return FromRaw(cuda_raw::Accumulate(static_cast<uint32_t>(dist), y.data(), y.size(),
                                      raw.data(), static_cast<uint32_t>(raw.size()),
                                      seeds.data(), coeffs.data(), seeds.size()),
                 "accumulate");
}

Status CudaBasisNormsSquared(BasisDistribution dist, std::span<const NormJob> jobs) {
  FL_RETURN_IF_ERROR(ValidateNormJobs(dist, jobs));
  if (dist == BasisDistribution::kRademacher) {
    for (const NormJob& job : jobs) {
      for (double& v : job.norms_sq) v = static_cast<double>(job.size);
    }
    return Status::Ok();
  }
  FL_RETURN_IF_ERROR(RequireDevice());
  std::vector<cuda_raw::RawJob> raw;
  std::vector<uint64_t> seeds;
  for (const NormJob& job : jobs) {
    raw.push_back({job.block_id, 0, job.size, seeds.size(),
                   static_cast<uint32_t>(job.seeds.size())});
    seeds.insert(seeds.end(), job.seeds.begin(), job.seeds.end());
  }
  std::vector<uint64_t> sums(2 * seeds.size());
  FL_RETURN_IF_ERROR(FromRaw(
      cuda_raw::SquareSums(static_cast<uint32_t>(dist), raw.data(),
                           static_cast<uint32_t>(raw.size()), seeds.data(), seeds.size(),
                           sums.data()),
      "basis norms"));
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (size_t i = 0; i < jobs[j].seeds.size(); ++i) {
      const size_t s = raw[j].first_seed + i;
      jobs[j].norms_sq[i] = FixedSquareSumToDouble(dist, sums[2 * s], sums[2 * s + 1]);
    }
  }
  return Status::Ok();
}

Status CudaGenerateBasis(BasisDistribution dist, uint64_t seed, uint32_t block_id,
                         uint64_t offset, std::span<float> out) {
  FL_RETURN_IF_ERROR(ValidateNormJobs(dist, {}));  // checks the distribution
  FL_RETURN_IF_ERROR(RequireDevice());
  return FromRaw(cuda_raw::Generate(static_cast<uint32_t>(dist), seed, block_id, offset,
                                    out.size(), out.data()),
                 "generate basis");
}

#else  // !FL_HAVE_CUDA: the "not built with CUDA" path, nothing else.

namespace {
Status NotBuilt() {
  return Status::Unimplemented("this build of the SDK has no CUDA kernels (nvcc not found)");
}
}  // namespace

bool CudaCompiled() { return false; }
bool CudaAvailable() { return false; }

Status CudaProject(BasisDistribution, std::span<const float>, std::span<const ProjectJob>) {
  return NotBuilt();
}
Status CudaAccumulate(BasisDistribution, std::span<float>, std::span<const AccumulateJob>) {
  return NotBuilt();
}
Status CudaBasisNormsSquared(BasisDistribution, std::span<const NormJob>) { return NotBuilt(); }
Status CudaGenerateBasis(BasisDistribution, uint64_t, uint32_t, uint64_t, std::span<float>) {
  return NotBuilt();
}

#endif  // FL_HAVE_CUDA

}  // namespace fl::internal::ferret
