#include "codec/ferret/basis.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/hash.h"

namespace fl::internal::ferret {

namespace {

// Whether some value occurs twice. Sorting a copy is several times faster than a hash
// set for pools of a million seeds.
bool HasRepeat(const std::vector<uint64_t>& values) {
  std::vector<uint64_t> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  return std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end();
}

}  // namespace

uint64_t BasisSpec::Hash() const {
  uint64_t h = kFnv1a64OffsetBasis;
  h = Fnv1a64U64(h, static_cast<uint64_t>(distribution));
  h = Fnv1a64U64(h, static_cast<uint64_t>(amplitude));
  h = Fnv1a64U64(h, seeds.size());
  for (uint64_t s : seeds) h = Fnv1a64U64(h, s);
  return h;
}

Status BasisSpec::Validate() const {
  switch (distribution) {
    case BasisDistribution::kRademacher:
    case BasisDistribution::kUniform:
    case BasisDistribution::kGaussian:
      break;
    default:
      return Status::InvalidArgument("unknown ferret basis distribution " +
                                     std::to_string(static_cast<uint32_t>(distribution)));
  }
  if (amplitude != BasisAmplitude::kUnit && amplitude != BasisAmplitude::kInvSqrtDim) {
    return Status::InvalidArgument("unknown ferret basis amplitude " +
                                   std::to_string(static_cast<uint32_t>(amplitude)));
  }
  if (seeds.empty() || seeds.size() > kMaxSeeds) {
    return Status::InvalidArgument("ferret seed pool size " + std::to_string(seeds.size()) +
                                   " outside [1, " + std::to_string(kMaxSeeds) + "]");
  }
  if (!HasRepeat(seeds)) return Status::Ok();
  // Rare: find the first repeat in pool order to name it.
  std::unordered_set<uint64_t> seen;
  seen.reserve(seeds.size());
  for (size_t k = 0; k < seeds.size(); ++k) {
    if (!seen.insert(seeds[k]).second) {
      return Status::InvalidArgument("ferret seed pool repeats seed " + std::to_string(seeds[k]) +
                                     " at index " + std::to_string(k));
    }
  }
  return Status::Ok();
}

std::vector<uint64_t> MakeSeedPool(uint64_t run_seed, uint64_t epoch, uint32_t count) {
  // Counter: {draw index, epoch low, epoch high, domain}; the draw index only
  // runs past `count` in the astronomically unlikely case of a collision.
  const Philox4x32Key key{
      {static_cast<uint32_t>(run_seed), static_cast<uint32_t>(run_seed >> 32)}};
  auto draw_seed = [&](uint32_t draw) {
    const Philox4x32Counter ctr{{draw, static_cast<uint32_t>(epoch),
                                 static_cast<uint32_t>(epoch >> 32), kPhiloxDomainSeedPool}};
    const Philox4x32Counter r = Philox4x32_10(ctr, key);
    return (static_cast<uint64_t>(r.v[1]) << 32) | r.v[0];
  };
  std::vector<uint64_t> seeds(count);
  for (uint32_t draw = 0; draw < count; ++draw) seeds[draw] = draw_seed(draw);
  if (!HasRepeat(seeds)) return seeds;
  // A collision: keep the first occurrence of each seed and draw on until `count`.
  seeds.clear();
  std::unordered_set<uint64_t> seen;
  for (uint32_t draw = 0; seeds.size() < count; ++draw) {
    const uint64_t seed = draw_seed(draw);
    if (seen.insert(seed).second) seeds.push_back(seed);
  }
  return seeds;
}

std::vector<uint32_t> SelectBasisIndices(uint32_t num_seeds, uint32_t n, uint64_t selection_seed,
                                         uint32_t block) {
  if (n >= num_seeds) {
    std::vector<uint32_t> all(num_seeds);
    std::iota(all.begin(), all.end(), 0u);
    return all;
  }
  // The shuffle of an identity array of K entries, storing only the positions
  // it moved.
  std::unordered_map<uint32_t, uint32_t> moved;
  moved.reserve(2 * static_cast<size_t>(n));
  auto at = [&](uint32_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<uint32_t> picked(n);
  const PhiloxStream s = MakePhiloxStream(selection_seed, block, kPhiloxDomainSelection);
  Philox4x32Counter r{};
  for (uint32_t i = 0; i < n; ++i) {
    if (i % 4 == 0) r = s.At(i / 4);
    // Multiply-shift maps a 32-bit word onto [0, remaining): bias below K /
    // 2^32.
    const uint32_t remaining = num_seeds - i;
    const uint32_t pick =
        i + static_cast<uint32_t>((static_cast<uint64_t>(r.v[i % 4]) * remaining) >> 32);
    const uint32_t value_i = at(i);
    picked[i] = at(pick);
    moved[pick] = value_i;
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

double EntryAmplitude(BasisAmplitude amplitude, size_t block_size) {
  if (amplitude == BasisAmplitude::kInvSqrtDim && block_size > 0) {
    return 1.0 / std::sqrt(static_cast<double>(block_size));
  }
  return 1.0;
}

double UnitEntryVariance(BasisDistribution distribution) {
  switch (distribution) {
    case BasisDistribution::kUniform:
      return (1.0 - 0x1p-48) / 3.0;
    case BasisDistribution::kRademacher:
    case BasisDistribution::kGaussian:
    default:
      return 1.0;
  }
}

double EntryVariance(const BasisSpec& spec, size_t block_size) {
  const double a = EntryAmplitude(spec.amplitude, block_size);
  return a * a * UnitEntryVariance(spec.distribution);
}

}  // namespace fl::internal::ferret
