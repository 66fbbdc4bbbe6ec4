// CUDA twins of the Ferret kernels against the CPU ones. Without nvcc the build holds
// stubs, and the test checks they say so; with nvcc but no GPU the comparisons skip.

#include "cuda/ferret_cuda.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "codec/ferret/basis.h"
#include "codec/ferret/kernels.h"

namespace fl::internal::ferret {
namespace {

constexpr BasisDistribution kAllDistributions[] = {
    BasisDistribution::kRademacher, BasisDistribution::kUniform, BasisDistribution::kGaussian};

#define SKIP_WITHOUT_DEVICE()                                                       \
  do {                                                                              \
    if (!CudaCompiled()) GTEST_SKIP() << "built without CUDA (nvcc not found)";     \
    if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device on this machine";         \
  } while (0)

TEST(FerretCudaTest, StubsReportNotBuilt) {
  if (CudaCompiled()) GTEST_SKIP() << "built with CUDA: the stubs are not in this binary";
  EXPECT_FALSE(CudaAvailable());
  std::vector<float> out(8);
  EXPECT_EQ(CudaGenerateBasis(BasisDistribution::kRademacher, 1, 0, 0, out).code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(CudaProject(BasisDistribution::kRademacher, out, {}).code(),
            StatusCode::kUnimplemented);
}

TEST(FerretCudaTest, GeneratedBasesAreBitwiseEqualToTheCpu) {
  SKIP_WITHOUT_DEVICE();
  for (BasisDistribution d : kAllDistributions) {
    for (uint64_t offset : {0ull, 5ull, 1ull << 33}) {
      std::vector<float> cpu(100003), gpu(100003);
      CpuGenerateBasis(d, 0xfeedbeefull, 17, offset, cpu);
      ASSERT_TRUE(CudaGenerateBasis(d, 0xfeedbeefull, 17, offset, gpu).ok());
      size_t mismatches = 0;
      for (size_t i = 0; i < cpu.size(); ++i) {
        mismatches += std::bit_cast<uint32_t>(cpu[i]) != std::bit_cast<uint32_t>(gpu[i]);
      }
      EXPECT_EQ(mismatches, 0u) << "distribution " << static_cast<int>(d) << " offset " << offset;
    }
  }
}

struct Problem {
  std::vector<float> x;
  std::vector<std::vector<uint64_t>> seeds;
  std::vector<std::vector<float>> coeffs;
  std::vector<std::pair<size_t, size_t>> ranges;  // (offset, size) per block
};

Problem MakeProblem() {
  Problem p;
  p.ranges = {{0, 70001}, {70001, 129}, {70130, 5}, {70135, 300000}};
  p.x.resize(370135);
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  for (float& v : p.x) v = n(rng);
  const std::vector<uint64_t> pool = MakeSeedPool(9, 0, 24);
  for (size_t l = 0; l < p.ranges.size(); ++l) {
    p.seeds.emplace_back(pool.begin() + l, pool.begin() + l + 5 + 4 * l);
    std::vector<float> c;
    for (size_t i = 0; i < p.seeds.back().size(); ++i) c.push_back(n(rng));
    p.coeffs.push_back(c);
  }
  return p;
}

TEST(FerretCudaTest, ReconstructionAndNormsAreBitwiseEqualToTheCpu) {
  SKIP_WITHOUT_DEVICE();
  const Problem p = MakeProblem();
  for (BasisDistribution d : kAllDistributions) {
    std::vector<AccumulateJob> jobs;
    std::vector<NormJob> norm_jobs;
    std::vector<std::vector<double>> cpu_norms(p.ranges.size()), gpu_norms(p.ranges.size());
    for (size_t l = 0; l < p.ranges.size(); ++l) {
      jobs.push_back({static_cast<uint32_t>(l), p.ranges[l].first, p.ranges[l].second,
                      p.seeds[l], p.coeffs[l]});
      cpu_norms[l].resize(p.seeds[l].size());
      gpu_norms[l].resize(p.seeds[l].size());
    }
    std::vector<float> cpu = p.x, gpu = p.x;
    ASSERT_TRUE(CpuAccumulate(d, cpu, jobs, 2).ok());
    ASSERT_TRUE(CudaAccumulate(d, gpu, jobs).ok());
    size_t mismatches = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      mismatches += std::bit_cast<uint32_t>(cpu[i]) != std::bit_cast<uint32_t>(gpu[i]);
    }
    EXPECT_EQ(mismatches, 0u) << "distribution " << static_cast<int>(d);

    for (size_t l = 0; l < p.ranges.size(); ++l) {
      norm_jobs.push_back({static_cast<uint32_t>(l), p.ranges[l].second, p.seeds[l], cpu_norms[l]});
    }
    ASSERT_TRUE(CpuBasisNormsSquared(d, norm_jobs, 2).ok());
    for (size_t l = 0; l < p.ranges.size(); ++l) norm_jobs[l].norms_sq = gpu_norms[l];
    ASSERT_TRUE(CudaBasisNormsSquared(d, norm_jobs).ok());
    EXPECT_EQ(cpu_norms, gpu_norms);
  }
}

TEST(FerretCudaTest, ProjectionAgreesWithTheCpuToRounding) {
  SKIP_WITHOUT_DEVICE();
  const Problem p = MakeProblem();
  for (BasisDistribution d : kAllDistributions) {
    std::vector<std::vector<double>> cpu(p.ranges.size()), gpu(p.ranges.size());
    std::vector<ProjectJob> jobs;
    for (size_t l = 0; l < p.ranges.size(); ++l) {
      cpu[l].resize(p.seeds[l].size());
      gpu[l].resize(p.seeds[l].size());
      jobs.push_back({static_cast<uint32_t>(l), p.ranges[l].first, p.ranges[l].second,
                      p.seeds[l], cpu[l]});
    }
    ASSERT_TRUE(CpuProject(d, p.x, jobs, 2).ok());
    for (size_t l = 0; l < p.ranges.size(); ++l) jobs[l].dots = gpu[l];
    ASSERT_TRUE(CudaProject(d, p.x, jobs).ok());
    for (size_t l = 0; l < p.ranges.size(); ++l) {
      // Sums of n products of unit-variance terms: rounding grows like sqrt(n) * 2^-24.
      const double tol = 1e-4 * std::sqrt(static_cast<double>(p.ranges[l].second));
      for (size_t i = 0; i < cpu[l].size(); ++i) EXPECT_NEAR(cpu[l][i], gpu[l][i], tol);
    }
  }
}

}  // namespace
}  // namespace fl::internal::ferret
