#ifndef FL_ALGORITHMS_FERRET_FERRET_SPEC_H_
#define FL_ALGORITHMS_FERRET_FERRET_SPEC_H_

// What the two halves of Ferret must agree on in a round, and how it travels to
// clients in TrainConfig::extra.
//
// A round's bases and blocks are fixed by a FerretRoundSpec: the block plan rule, the
// entry distribution and amplitude, and the seed pool (K seeds drawn from pool_seed for
// `epoch`: 0 for one pool per run, the round number for fresh seeds every round). The
// client additionally needs its projection choices (FerretProjection). The server writes
// both into TrainConfig::extra as exact small numbers (a 64-bit seed travels as two
// 32-bit halves, since extra holds doubles), and the learner reads them back, so a
// client needs no Ferret configuration of its own.

#include <cstdint>
#include <map>
#include <string>

#include "codec/ferret/basis.h"
#include "codec/ferret/block_plan.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/task.h"
#include "rng/philox.h"

namespace fl::internal {

struct FerretRoundSpec {
  ferret::BlockPlanKind plan_kind = ferret::BlockPlanKind::kReference;
  uint64_t block_size = 0;  // entries per block; kFixedSize only (> 0 there)
  BasisDistribution distribution = BasisDistribution::kRademacher;
  ferret::BasisAmplitude amplitude = ferret::BasisAmplitude::kUnit;
  uint64_t pool_seed = 0;
  uint64_t epoch = 0;
  uint32_t num_bases = 200;  // K, in [1, ferret::kMaxSeeds]

  bool operator==(const FerretRoundSpec&) const = default;
};

// The client's projection choices (see ferret::ProjectOptions).
struct FerretProjection {
  ferret::CoefficientScale scale = ferret::CoefficientScale::kUnbiased;
  ferret::SelectionPolicy selection = ferret::SelectionPolicy::kFixed;
  uint32_t budget = 0;  // n_l (fixed) or the proportional budget; 0 means K
  uint32_t min_per_block = 2;
  // Width of the uploaded coefficients (aggregates and replay records are float32).
  ferret::CoefficientTableFormat upload_format = ferret::CoefficientTableFormat::kFloat32;
};

// InvalidArgument naming the field if an enum is unknown, K is out of range, or a
// fixed-size plan has block_size 0.
Status ValidateFerretRoundSpec(const FerretRoundSpec& spec);

// The block plan of `spec` for a model of `layout`. InvalidArgument as
// ValidateFerretRoundSpec.
Result<ferret::BlockPlan> MakeFerretPlan(const FerretRoundSpec& spec, const Layout& layout);
// The basis (seed pool included) of `spec`. REQUIRES: ValidateFerretRoundSpec(spec).ok().
ferret::BasisSpec MakeFerretBasis(const FerretRoundSpec& spec);

// Writes spec and projection into `extra` under "ferret.*" keys.
void WriteFerretExtra(const FerretRoundSpec& spec, const FerretProjection& projection,
                      std::map<std::string, TrainValue>* extra);
// Reads what WriteFerretExtra wrote. InvalidArgument naming the key if one is missing,
// not an integer in range, or names an unknown enum value.
Status ReadFerretExtra(const std::map<std::string, TrainValue>& extra, FerretRoundSpec* spec,
                       FerretProjection* projection);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_FERRET_SPEC_H_
