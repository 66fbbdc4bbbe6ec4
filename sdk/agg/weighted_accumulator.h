#ifndef FL_SDK_AGG_WEIGHTED_ACCUMULATOR_H_
#define FL_SDK_AGG_WEIGHTED_ACCUMULATOR_H_

// Streaming weighted mean of dense vectors: sum_i w_i x_i / sum_i w_i.
//
// The running sum is kept in double precision in one buffer of the model's size, so
// memory does not depend on the number of clients. Every float32/f16/bf16 input is
// exact in double and each product w_i * x_i rounds once; the sum of a few thousand
// such terms in double carries ~2^-53 relative error per addition, far below float32's
// resolution, so the float result of Mean() is bitwise the same for any arrival or
// merge order except in the rare case where the double sum lies within that error of
// a float32 rounding boundary. That is the "documented floating-point summation order"
// caveat of the determinism rule.

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "agg/aligned_allocator.h"
#include "codec/dense_codec.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// Not thread-safe; use one per thread and MergeWith to combine (tree aggregation).
class WeightedAccumulator {
 public:
  // An accumulator for vectors of layout.total_numel() values.
  explicit WeightedAccumulator(std::shared_ptr<const Layout> layout);
  WeightedAccumulator(WeightedAccumulator&&) noexcept = default;
  WeightedAccumulator& operator=(WeightedAccumulator&&) noexcept = default;
  WeightedAccumulator(const WeightedAccumulator&) = delete;
  WeightedAccumulator& operator=(const WeightedAccumulator&) = delete;

  // Folds `weight` * decode(bytes). InvalidArgument (state unchanged) if the weight is
  // not finite and > 0, the encoding is not dense, the length is wrong or a value is
  // not finite.
  Status Accumulate(std::string_view bytes, Encoding encoding, double weight);
  // Folds several dense updates in one sweep over the sums (AccumulateDenseBatch): the
  // sums are read and written once per batch, not once per update, and the result is
  // bitwise that of Accumulate on each term in turn. results[t] is what Accumulate
  // would have returned for terms[t]; a refused term changes nothing.
  // REQUIRES: results.size() == terms.size().
  void AccumulateBatch(std::span<const DenseTerm> terms, std::span<Status> results);
  // Folds float values directly (in-process callers that hold a ParamSet).
  // Same errors as Accumulate.
  Status AccumulateValues(std::span<const float> values, double weight);

  // Adds other's sums into this one and leaves `other` empty (count 0).
  // InvalidArgument (nothing changed) if the layouts differ.
  Status MergeWith(WeightedAccumulator&& other);
  // Adds sums folded elsewhere (another process's partial state, already validated by
  // the caller: finite, weight >= 0). InvalidArgument (nothing changed) unless
  // sums.size() is the layout's number of values.
  Status MergeSums(std::span<const double> sums, uint64_t count, double total_weight);

  uint64_t count() const { return count_; }
  double total_weight() const { return total_weight_; }
  const Layout& layout() const { return *layout_; }
  std::shared_ptr<const Layout> shared_layout() const { return layout_; }
  // The raw weighted sums (for checkpointing and tests).
  std::span<const double> sums() const { return sums_; }

  // The weighted mean as float32 with this layout. FailedPrecondition if nothing was
  // accumulated.
  Result<ParamSet> Mean() const;

  // Clears sums, count and weight, keeping the buffer.
  void Reset();

 private:
  static Status CheckWeight(double weight);

  std::shared_ptr<const Layout> layout_;
  std::vector<double, CacheAlignedAllocator<double>> sums_;  // 8 bytes per parameter
  uint64_t count_ = 0;
  double total_weight_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_AGG_WEIGHTED_ACCUMULATOR_H_
