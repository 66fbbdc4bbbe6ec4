#ifndef FL_SERVER_UPDATE_POLICY_H_
#define FL_SERVER_UPDATE_POLICY_H_

// The server's policy on what a client claims about its own update (DESIGN.md, "Trust
// boundary"): the weight it is folded with and, for dense updates, the L2 norm of its
// delta. The Coordinator applies it to every update before the round's aggregator sees
// it, whatever the algorithm, so a single client can at most spend its capped share.
//
// Why a capped weight and finite float32 values cannot overflow the fp64 fold: every
// folded term is |w x| <= kMaxWeightLimit * FLT_MAX < 1e15 * 3.5e38 = 3.5e53, and a sum
// of at most 2^64 such terms stays below 6.5e72, far from DBL_MAX (1.8e308). The mean
// sum_i w_i x_i / sum_i w_i is a convex combination of finite float32 values, so
// |mean| <= FLT_MAX up to fp64 rounding; WeightedAccumulator::Mean saturates the cast,
// so it is finite too. Only the server step (w + lr * f(mean), with moments for
// Adam/Yogi) can still leave float32 range; the Coordinator then re-folds the round
// without the offending contributions (coordinator.h).

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// Upper limit for max_weight (see the overflow argument above).
inline constexpr double kMaxWeightLimit = 1e15;

enum class WeightPolicy : int {
  kExamples = 1,  // the client's weight (normally its example count), capped at max_weight
  kUniform = 2,   // every update weight 1
};
enum class WeightOverCap : int {
  kClip = 1,    // fold with max_weight
  kRefuse = 2,  // INVALID_ARGUMENT naming the cap
};

// "examples" | "uniform"; InvalidArgument otherwise.
Result<WeightPolicy> ParseWeightPolicy(std::string_view name);
std::string_view WeightPolicyName(WeightPolicy policy);
// "clip" | "refuse"; InvalidArgument otherwise.
Result<WeightOverCap> ParseWeightOverCap(std::string_view name);
std::string_view WeightOverCapName(WeightOverCap action);

struct UpdatePolicy {
  WeightPolicy weight_policy = WeightPolicy::kExamples;
  double max_weight = 1e6;  // (0, kMaxWeightLimit]
  WeightOverCap over_cap = WeightOverCap::kClip;
};

// InvalidArgument naming the field if max_weight is not in (0, kMaxWeightLimit].
Status ValidateUpdatePolicy(const UpdatePolicy& policy);

// The weight an update is folded with. A claim that is not finite and > 0 is returned
// unchanged under kExamples (the aggregator refuses it with its usual message).
// InvalidArgument naming the cap if the claim exceeds max_weight under kRefuse;
// *clipped is set when the cap was applied.
Result<double> PolicyWeight(const UpdatePolicy& policy, double claimed, bool* clipped);

// The L2 norm (fp64) of the values of a dense or keyed (named-subset) update; nullopt
// for other encodings (e.g. Ferret's coefficients). InvalidArgument if the bytes do not
// fit the encoding. Not finite if a value is not. Decodes in blocks: no model-sized
// temporary.
Result<std::optional<double>> UpdateNorm(const Payload& payload);

// Scales a dense or keyed update's values by `factor` (the norm bound: bound / norm) and
// re-encodes them in the same encoding. InvalidArgument for another encoding.
Status ScaleUpdate(double factor, Payload* payload);

// Scales tensor l of a dense update of `layout` by factors[l] (a factor of 1 leaves it
// untouched), in the same encoding. InvalidArgument if the encoding is not dense or the
// update or factors do not fit the layout.
Status ScaleDenseUpdateTensors(const Layout& layout, const std::vector<double>& factors,
                               Payload* payload);

}  // namespace fl::internal

#endif  // FL_SERVER_UPDATE_POLICY_H_
