#ifndef FL_SDK_AGG_KEYED_ACCUMULATOR_H_
#define FL_SDK_AGG_KEYED_ACCUMULATOR_H_

// Streaming per-tensor mean of keyed (partial) updates: each client sends some tensors
// of the model, each with a weight fraction f_t (codec/named_subset_codec.h). Memory is
// O(model): one double sum per parameter and one weight per tensor, whatever the number
// of clients. Summation is in double, as in WeightedAccumulator, so the float mean does
// not depend on the arrival or merge order except at float32 rounding boundaries.

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "codec/named_subset_codec.h"
#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

// How tensors become the mean. Fixed per accumulator, because each rule sums something
// else (one buffer, not two).
enum class KeyedRule : int {
  // Per tensor: sum_i w_i f_it d_it / sum_i w_i f_it over the clients that sent it. A
  // tensor nobody sent (or sent only with fraction 0) gets delta 0: it stays unchanged.
  kSelected = 1,
  // The equal-weight rule: every client counts once for every tensor, and a tensor it
  // did not send counts as an unchanged copy (delta 0). Per tensor: sum_i d_it / n.
  // Client weights and fractions are ignored.
  kUniform = 2,
};

// "selected" | "uniform"; InvalidArgument otherwise.
Result<KeyedRule> ParseKeyedRule(std::string_view name);
std::string_view KeyedRuleName(KeyedRule rule);

// Not thread-safe; use one per thread and MergeWith to combine.
class KeyedAccumulator {
 public:
  KeyedAccumulator(std::shared_ptr<const Layout> layout, KeyedRule rule);
  KeyedAccumulator(KeyedAccumulator&&) noexcept = default;
  KeyedAccumulator& operator=(KeyedAccumulator&&) noexcept = default;
  KeyedAccumulator(const KeyedAccumulator&) = delete;
  KeyedAccumulator& operator=(const KeyedAccumulator&) = delete;

  // Folds one client's tensors with client weight `weight`: tensor t adds
  // weight * f_t * d_t and weight * f_t (kSelected) or d_t and 1 (kUniform).
  // InvalidArgument, with the accumulator unchanged, if the weight is not finite and
  // > 0, the update is empty, or a tensor does not fit the layout (index, value count,
  // a name twice), has a fraction outside [0, 1] or a non-finite value.
  Status Accumulate(const NamedSubset& update, double weight);

  // Adds other's sums into this one and leaves `other` empty. InvalidArgument (nothing
  // changed) if the layouts or the rules differ.
  Status MergeWith(KeyedAccumulator&& other);

  uint64_t count() const { return count_; }
  // Sum of the client weights folded.
  double total_weight() const { return total_weight_; }
  KeyedRule rule() const { return rule_; }
  const Layout& layout() const { return *layout_; }
  // Per tensor, the weight its sum carries (kSelected: sum_i w_i f_it; kUniform: how
  // many clients sent it).
  std::span<const double> tensor_weights() const { return tensor_weights_; }

  // The mean delta over the whole layout (see KeyedRule). FailedPrecondition if nothing
  // was accumulated.
  Result<ParamSet> Mean() const;

  // Clears sums, weights and count, keeping the buffers.
  void Reset();

 private:
  Status Check(const NamedSubset& update, double weight) const;

  std::shared_ptr<const Layout> layout_;
  KeyedRule rule_;
  std::vector<double> sums_;            // one per parameter
  std::vector<double> tensor_weights_;  // one per tensor
  uint64_t count_ = 0;
  double total_weight_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_AGG_KEYED_ACCUMULATOR_H_
