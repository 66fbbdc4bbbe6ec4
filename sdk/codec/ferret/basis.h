#ifndef FL_SDK_CODEC_FERRET_BASIS_H_
#define FL_SDK_CODEC_FERRET_BASIS_H_

// What client and server must agree on to generate the same Ferret bases: a pool of K
// seeds, the entry distribution and the per-block amplitude.
//
// Basis k of block l is v_{k,l} = a_l * u_{k,l}, where u_{k,l}[j] is the unit-scale
// entry BasisEntry(MakePhiloxStream(seeds[k], l, kPhiloxDomainBasis), distribution, j)
// of rng/philox.h, and a_l is 1 (kUnit) or 1/sqrt(d_l) (kInvSqrtDim, the reference's
// choice). The kernels always work with u; a_l is folded into the coefficient scale on
// projection and into the term multiplier on reconstruction, so it costs nothing.

#include <cstdint>
#include <vector>

#include "fl/status.h"
#include "rng/philox.h"

namespace fl::internal::ferret {

// Persisted in configs and folded into basis hashes: never change existing values.
enum class BasisAmplitude : uint32_t {
  kUnit = 1,        // a_l = 1
  kInvSqrtDim = 2,  // a_l = 1 / sqrt(d_l)
};

// Upper bound on K: keeps tables and selection small and parse-time allocations bounded.
inline constexpr uint32_t kMaxSeeds = 1u << 20;

struct BasisSpec {
  BasisDistribution distribution = BasisDistribution::kRademacher;
  BasisAmplitude amplitude = BasisAmplitude::kUnit;
  std::vector<uint64_t> seeds;  // the pool: seed index k in [0, K) names seeds[k]

  uint32_t num_seeds() const { return static_cast<uint32_t>(seeds.size()); }

  // FNV-1a over distribution, amplitude, K and the seeds. Coefficient tables carry it;
  // a table is only meaningful with the spec whose hash it names.
  uint64_t Hash() const;

  // InvalidArgument if K is 0 or above kMaxSeeds, a seed repeats (two identical bases
  // would make the estimator degenerate), or an enum is out of range.
  Status Validate() const;
};

// K seeds derived from a run seed with Philox (domain kPhiloxDomainSeedPool): `epoch`
// selects a pool, e.g. 0 for one pool per run (the reference) or the round number for
// fresh seeds every round. Deterministic; distinct with overwhelming probability, and
// deduplicated deterministically if two collide.
std::vector<uint64_t> MakeSeedPool(uint64_t run_seed, uint64_t epoch, uint32_t count);

// The n indices of the K pool that block `block` uses: 0..K-1 if n >= K, else n distinct
// indices drawn by a partial Fisher-Yates shuffle on the Philox stream
// (selection_seed, block, kPhiloxDomainSelection), returned in increasing order.
// O(n) time and memory whatever K is, so a parser may call it on untrusted (K, n).
std::vector<uint32_t> SelectBasisIndices(uint32_t num_seeds, uint32_t n, uint64_t selection_seed,
                                         uint32_t block);

// a_l for a block of `block_size` entries.
double EntryAmplitude(BasisAmplitude amplitude, size_t block_size);

// Per-entry variance of the unit-scale distribution u: rademacher 1, uniform
// (1 - 2^-48) / 3, gaussian 1 (the cut tail beyond 5.77 sigma changes it by < 1e-6).
double UnitEntryVariance(BasisDistribution distribution);

// rho_l = a_l^2 * UnitEntryVariance: the per-entry variance of v_{k,l}.
double EntryVariance(const BasisSpec& spec, size_t block_size);

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_BASIS_H_
