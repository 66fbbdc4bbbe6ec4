#include "codec/ferret/projection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "codec/ferret/kernels.h"
#include "core/logging.h"
#include "cuda/ferret_cuda.h"
#include "rng/splitmix64.h"

namespace fl::internal::ferret {
namespace {

Status CheckDevice(ComputeDevice device) {
  if (device == ComputeDevice::kCpu) return Status::Ok();
  if (device != ComputeDevice::kCuda) return Status::InvalidArgument("unknown compute device");
  if (!CudaCompiled()) {
    return Status::Unimplemented("ferret CUDA kernels requested, but this build has no CUDA");
  }
  if (!CudaAvailable()) return Status::Unavailable("ferret CUDA kernels requested, no CUDA device");
  return Status::Ok();
}

}  // namespace

const double* BasisNormCache::Find(BasisDistribution dist, uint64_t seed, uint32_t block,
                                   size_t size) const {
  auto it = map_.find({seed, size, block, static_cast<uint32_t>(dist)});
  return it == map_.end() ? nullptr : &it->second;
}

void BasisNormCache::Insert(BasisDistribution dist, uint64_t seed, uint32_t block, size_t size,
                            double norm_sq) {
  map_[{seed, size, block, static_cast<uint32_t>(dist)}] = norm_sq;
}

size_t BasisNormCache::KeyHash::operator()(const Key& k) const {
  uint64_t h = k.seed * kGoldenGamma64;
  h ^= (k.size + (static_cast<uint64_t>(k.block) << 32) + k.dist) * 0xC2B2AE3D27D4EB4Full;
  return static_cast<size_t>(h ^ (h >> 29));
}

Result<std::vector<double>> BlockNorms(const BlockPlan& plan, std::span<const float> delta) {
  if (delta.size() != plan.total_size()) {
    return Status::InvalidArgument("ferret update has " + std::to_string(delta.size()) +
                                   " entries, block plan covers " +
                                   std::to_string(plan.total_size()));
  }
  std::vector<double> norms;
  norms.reserve(plan.num_blocks());
  for (const Block& b : plan.blocks()) {
    double sum = 0.0;
    for (size_t j = b.offset; j < b.offset + b.size; ++j) {
      const double v = delta[j];
      sum += v * v;
    }
    if (!std::isfinite(sum)) {
      for (size_t j = b.offset; j < b.offset + b.size; ++j) {
        if (!std::isfinite(delta[j])) {
          return Status::InvalidArgument("non-finite ferret update value at index " +
                                         std::to_string(j));
        }
      }
      return Status::InvalidArgument("ferret update norm overflows in block at " +
                                     std::to_string(b.offset));
    }
    norms.push_back(std::sqrt(sum));
  }
  return norms;
}

std::vector<uint32_t> BasesPerBlock(std::span<const double> norms, uint32_t num_seeds,
                                    const ProjectOptions& options) {
  const uint32_t budget = options.budget == 0 ? num_seeds : options.budget;
  std::vector<uint32_t> n(norms.size());
  if (options.selection == SelectionPolicy::kFixed) {
    std::fill(n.begin(), n.end(), std::min(budget, num_seeds));
    return n;
  }
  const uint32_t floor_n = std::min(options.min_per_block, num_seeds);
  double max_norm = 0.0;
  for (double v : norms) max_norm = std::max(max_norm, v);
  for (size_t l = 0; l < norms.size(); ++l) {
    uint64_t share = 0;
    if (max_norm > 0.0) {
      share = static_cast<uint64_t>(std::floor(budget * (norms[l] / max_norm)));
    }
    n[l] = static_cast<uint32_t>(
        std::min<uint64_t>(num_seeds, std::max<uint64_t>(floor_n, share)));
  }
  return n;
}

double CoefficientFactor(const BasisSpec& basis, CoefficientScale scale, size_t block_size,
                         uint32_t n) {
  if (n == 0) return 0.0;
  const double a = EntryAmplitude(basis.amplitude, block_size);
  if (scale == CoefficientScale::kReference) {
    return static_cast<double>(block_size) / n * a;
  }
  return a / (EntryVariance(basis, block_size) * n);
}

Result<CoefficientTable> Project(const BlockPlan& plan, const BasisSpec& basis,
                                 std::span<const float> delta, const ProjectOptions& options) {
  FL_RETURN_IF_ERROR(basis.Validate());
  FL_RETURN_IF_ERROR(CheckDevice(options.device));
  if (options.scale != CoefficientScale::kUnbiased &&
      options.scale != CoefficientScale::kReference) {
    return Status::InvalidArgument("unknown ferret coefficient scale");
  }
  if (options.selection != SelectionPolicy::kFixed &&
      options.selection != SelectionPolicy::kProportional) {
    return Status::InvalidArgument("unknown ferret selection policy");
  }
  // Norms double as the finiteness check, so kFixed pays for them too: one cheap pass.
  FL_ASSIGN_OR_RETURN(std::vector<double> norms, BlockNorms(plan, delta));
  const uint32_t K = basis.num_seeds();
  const std::vector<uint32_t> counts = BasesPerBlock(norms, K, options);

  const size_t L = plan.num_blocks();
  std::vector<std::vector<uint32_t>> indices(L);
  std::vector<std::vector<uint64_t>> seeds(L);
  std::vector<std::vector<double>> dots(L);
  std::vector<ProjectJob> jobs(L);
  for (size_t l = 0; l < L; ++l) {
    indices[l] = SelectBasisIndices(K, counts[l], options.selection_seed, static_cast<uint32_t>(l));
    for (uint32_t k : indices[l]) seeds[l].push_back(basis.seeds[k]);
    dots[l].assign(seeds[l].size(), 0.0);
    const Block& b = plan.blocks()[l];
    jobs[l] = {static_cast<uint32_t>(l), b.offset, b.size, seeds[l], dots[l]};
  }
  if (options.device == ComputeDevice::kCuda) {
    FL_RETURN_IF_ERROR(CudaProject(basis.distribution, delta, jobs));
  } else {
    FL_RETURN_IF_ERROR(CpuProject(basis.distribution, delta, jobs, options.num_threads));
  }

  CoefficientTable table(plan.hash(), basis.Hash(), K, static_cast<uint32_t>(L));
  for (size_t l = 0; l < L; ++l) {
    const double factor =
        CoefficientFactor(basis, options.scale, plan.blocks()[l].size, counts[l]);
    for (size_t i = 0; i < indices[l].size(); ++i) {
      const double c = factor * dots[l][i];
      if (!(std::fabs(c) <= static_cast<double>(std::numeric_limits<float>::max()))) {
        return Status::InvalidArgument("ferret coefficient of block " + std::to_string(l) +
                                       " seed " + std::to_string(indices[l][i]) +
                                       " overflows float");
      }
      FL_RETURN_IF_ERROR(
          table.Append(static_cast<uint32_t>(l), indices[l][i], static_cast<float>(c)));
    }
  }
  return table;
}

Result<ReconstructStats> Reconstruct(const BlockPlan& plan, const BasisSpec& basis,
                                     const CoefficientTable& table,
                                     const ReconstructOptions& options,
                                     std::span<float> params) {
  FL_RETURN_IF_ERROR(basis.Validate());
  FL_RETURN_IF_ERROR(CheckDevice(options.device));
  if (table.plan_hash() != plan.hash() || table.basis_hash() != basis.Hash()) {
    return Status::FailedPrecondition(
        "ferret table belongs to another block plan or basis (plan " +
        std::to_string(table.plan_hash()) + " vs " + std::to_string(plan.hash()) + ", basis " +
        std::to_string(table.basis_hash()) + " vs " + std::to_string(basis.Hash()) + ")");
  }
  if (table.num_seeds() != basis.num_seeds() || table.num_blocks() != plan.num_blocks()) {
    return Status::InvalidArgument("ferret table header disagrees with its plan and basis");
  }
  if (params.size() != plan.total_size()) {
    return Status::InvalidArgument("ferret reconstruction target has " +
                                   std::to_string(params.size()) + " entries, plan covers " +
                                   std::to_string(plan.total_size()));
  }
  if (!std::isfinite(options.multiplier) || !(options.clip_norm >= 0.0) ||
      std::isinf(options.clip_norm)) {
    return Status::InvalidArgument("ferret reconstruction multiplier and clip must be finite, "
                                   "clip >= 0");
  }

  const size_t L = plan.num_blocks();
  std::vector<std::vector<uint32_t>> indices(L);
  std::vector<std::vector<uint64_t>> seeds(L);
  std::vector<std::vector<double>> raw(L);
  for (const Coefficient& c : table.entries()) {
    // The table's Append already bounded these; keep the check for tables built by hand.
    if (c.block >= L || c.seed >= basis.num_seeds()) {
      return Status::InvalidArgument("ferret table names unknown block " +
                                     std::to_string(c.block) + " / seed " +
                                     std::to_string(c.seed));
    }
    indices[c.block].push_back(c.seed);
    seeds[c.block].push_back(basis.seeds[c.seed]);
    raw[c.block].push_back(static_cast<double>(c.value));
  }

  // Basis norms, only where clipping needs them and they are not known in closed form.
  std::vector<std::vector<double>> norms_sq(L);
  if (options.clip_norm > 0.0) {
    // Only the norms the cache lacks are computed (all of them without a cache).
    BasisNormCache* cache = basis.distribution == BasisDistribution::kRademacher
                                ? nullptr
                                : options.norm_cache;
    std::vector<std::vector<uint64_t>> missing_seeds(L);
    std::vector<std::vector<double>> missing_norms(L);
    std::vector<NormJob> norm_jobs;
    for (size_t l = 0; l < L; ++l) {
      const size_t size = plan.blocks()[l].size;
      norms_sq[l].assign(seeds[l].size(), 0.0);
      for (size_t i = 0; i < seeds[l].size(); ++i) {
        const double* hit = cache == nullptr ? nullptr
                                             : cache->Find(basis.distribution, seeds[l][i],
                                                           static_cast<uint32_t>(l), size);
        if (hit != nullptr) {
          norms_sq[l][i] = *hit;
        } else {
          missing_seeds[l].push_back(seeds[l][i]);
        }
      }
      missing_norms[l].assign(missing_seeds[l].size(), 0.0);
      if (!missing_seeds[l].empty()) {
        norm_jobs.push_back({static_cast<uint32_t>(l), size, missing_seeds[l], missing_norms[l]});
      }
    }
    if (options.device == ComputeDevice::kCuda) {
      FL_RETURN_IF_ERROR(CudaBasisNormsSquared(basis.distribution, norm_jobs));
    } else {
      FL_RETURN_IF_ERROR(CpuBasisNormsSquared(basis.distribution, norm_jobs, options.num_threads));
    }
    for (size_t l = 0; l < L; ++l) {
      size_t next = 0;
      for (size_t i = 0; i < seeds[l].size() && next < missing_seeds[l].size(); ++i) {
        if (seeds[l][i] != missing_seeds[l][next]) continue;
        norms_sq[l][i] = missing_norms[l][next];
        if (cache != nullptr) {
          cache->Insert(basis.distribution, seeds[l][i], static_cast<uint32_t>(l),
                        plan.blocks()[l].size, missing_norms[l][next]);
        }
        ++next;
      }
    }
  }

  // Term multipliers, computed in double once on the host for every device, then
  // rounded to float: the kernels see the same floats everywhere.
  ReconstructStats stats;
  std::vector<std::vector<uint64_t>> job_seeds(L);
  std::vector<std::vector<float>> job_coeffs(L);
  std::vector<AccumulateJob> jobs;
  for (size_t l = 0; l < L; ++l) {
    const Block& b = plan.blocks()[l];
    const double a = EntryAmplitude(basis.amplitude, b.size);
    for (size_t i = 0; i < seeds[l].size(); ++i) {
      double scale = raw[l][i] * a;
      if (!std::isfinite(raw[l][i])) {
        ++stats.terms_skipped_nonfinite;
        continue;
      }
      if (options.clip_norm > 0.0) {
        const double norm = std::fabs(scale) * std::sqrt(norms_sq[l][i]);
        if (norm > options.clip_norm) {
          scale *= options.clip_norm / norm;
          ++stats.terms_clipped;
        }
      }
      const double term = options.multiplier * scale;
      if (!(std::fabs(term) <= static_cast<double>(std::numeric_limits<float>::max()))) {
        ++stats.terms_skipped_nonfinite;
        continue;
      }
      job_seeds[l].push_back(seeds[l][i]);
      job_coeffs[l].push_back(static_cast<float>(term));
      ++stats.terms_applied;
    }
    if (!job_seeds[l].empty()) {
      jobs.push_back({static_cast<uint32_t>(l), b.offset, b.size, job_seeds[l], job_coeffs[l]});
    }
  }
  if (options.device == ComputeDevice::kCuda) {
    FL_RETURN_IF_ERROR(CudaAccumulate(basis.distribution, params, jobs));
  } else {
    FL_RETURN_IF_ERROR(CpuAccumulate(basis.distribution, params, jobs, options.num_threads));
  }
  if (stats.terms_skipped_nonfinite > 0) {
    FL_LOG(WARNING) << "ferret reconstruction skipped " << stats.terms_skipped_nonfinite
                    << " non-finite term(s); applied " << stats.terms_applied << ", clipped "
                    << stats.terms_clipped;
  }
  return stats;
}

}  // namespace fl::internal::ferret
