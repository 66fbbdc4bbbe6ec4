#ifndef FL_ALGORITHMS_ROBUST_ROBUST_AGGREGATOR_H_
#define FL_ALGORITHMS_ROBUST_ROBUST_AGGREGATOR_H_

// Byzantine-tolerant aggregation rules for dense deltas (fl/algorithm.h:
// AggregationRule): coordinate-wise median, trimmed mean and multi-Krum. Unlike the
// streaming DenseRoundAggregator they hold every decoded update of the round until
// Report(): n * d * 4 bytes for n updates of d parameters, O(d * clients). n is capped by
// AggregationOptions::max_updates (algorithm.robust_max_updates, default 100) for the
// whole round: the coordinator's leaf aggregators of one round (agg/aggregator_tree.h)
// share one count of held updates, so the cap is the round's, not each leaf's, and an
// update beyond it is refused with ResourceExhausted (the round goes on without it).
// Report() adds d * 4 bytes for the result and, for multi-Krum, n * n doubles.
// Held updates do not depend on the leaf split: median and trimmed mean sort each
// coordinate; multi-Krum breaks exact score ties by the order the leaves merged in.
//
// The kernels are free functions over n pointers to d floats, so they are tested on
// known inputs without payloads.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "fl/algorithm.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/update.h"

namespace fl::internal {

// "mean" | "median" | "trimmed_mean" | "multi_krum"; InvalidArgument otherwise.
Result<AggregationRule> ParseAggregationRule(std::string_view name);
std::string_view AggregationRuleName(AggregationRule rule);

// InvalidArgument naming the config key of the first field out of range.
Status ValidateAggregationOptions(const AggregationOptions& options);

// out[j] = median of updates[i][j] over i (mean of the two middle values, in double,
// when n is even). REQUIRES: n >= 1; out has d values.
void CoordinateMedian(std::span<const float* const> updates, size_t d, float* out);

// out[j] = mean (in double) of updates[i][j] after dropping the `trim` largest and
// `trim` smallest values. REQUIRES: 2 * trim < n; out has d values.
void CoordinateTrimmedMean(std::span<const float* const> updates, size_t d, size_t trim,
                           float* out);

// The number cut at each end by trimmed mean with `beta` over n updates: floor(beta * n)
// (with a guard against beta * n landing just below an integer in floating point).
size_t TrimCount(double beta, size_t n);

// Multi-Krum selection: each update's score is the sum of its squared distances to its
// k = clamp(n - f - 2, 1, n - 1) nearest others; returns the indices of the
// max(1, n - f) lowest scores, ascending by (score, index). n == 1 selects {0}.
std::vector<size_t> MultiKrumSelect(std::span<const float* const> updates, size_t d, size_t f);

// Holds each accepted update's decoded delta and reports the rule's aggregate. Not
// thread-safe (the coordinator serializes calls). On any error the aggregator is
// unchanged.
class RobustRoundAggregator final : public RoundAggregator {
 public:
  // Updates held by all aggregators of one round together (the cap's count).
  using HeldCount = std::atomic<uint64_t>;

  // REQUIRES: ValidateAggregationOptions(options).ok() and options.rule != kMean.
  // Aggregators of one round given the same `held` share the max_updates cap; null: a
  // count of its own.
  RobustRoundAggregator(AggregationOptions options, std::shared_ptr<const Layout> layout,
                        uint64_t round, std::shared_ptr<HeldCount> held = nullptr);
  ~RobustRoundAggregator() override;
  RobustRoundAggregator(const RobustRoundAggregator&) = delete;
  RobustRoundAggregator& operator=(const RobustRoundAggregator&) = delete;

  // FailedPrecondition once consumed or for another round; InvalidArgument for what
  // DecodeDenseDelta refuses; ResourceExhausted once max_updates updates are held.
  Status Accumulate(const Payload& payload) override;
  // Appends `other`'s updates (same rule, round and layout; InvalidArgument otherwise),
  // consuming it. ResourceExhausted if together they exceed max_updates (never when
  // they share one count: it already holds both).
  Status MergeWith(RoundAggregator&& other) override;
  uint64_t count() const override { return deltas_.size(); }
  bool CanReport() const override { return !consumed_ && !deltas_.empty(); }
  Result<AggregateReport> Report() && override;

  const AggregationOptions& options() const { return options_; }

 private:
  Status CheckUsable(const char* op) const;
  // Drops the held deltas and their share of the count.
  void ReleaseDeltas();

  AggregationOptions options_;
  std::shared_ptr<const Layout> layout_;
  uint64_t round_;
  std::shared_ptr<HeldCount> held_;
  std::vector<ParamSet> deltas_;
  double weight_sum_ = 0;
  double loss_sum_ = 0;  // unweighted
  bool consumed_ = false;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_ROBUST_ROBUST_AGGREGATOR_H_
