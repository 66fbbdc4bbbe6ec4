#ifndef FL_ALGORITHMS_FEDINS_KEYED_ROUND_AGGREGATOR_H_
#define FL_ALGORITHMS_FEDINS_KEYED_ROUND_AGGREGATOR_H_

// The round aggregator of keyed (partial) updates: each upload is a kNamedSubset payload
// holding some tensors of the model, each with its weight fraction. It validates the
// metadata as DenseRoundAggregator does, decodes the payload against the layout and
// folds it into a KeyedAccumulator; the report is a dense mean delta over the whole
// layout, zero for the tensors nobody sent.

#include <cstdint>
#include <memory>

#include "agg/keyed_accumulator.h"
#include "algorithms/fedavg/round_fold.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/update.h"

namespace fl::internal {

// Not thread-safe (the coordinator serializes calls). On any error the aggregator is
// unchanged.
class KeyedRoundAggregator : public RoundAggregator {
 public:
  KeyedRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round, KeyedRule rule);
  KeyedRoundAggregator(const KeyedRoundAggregator&) = delete;
  KeyedRoundAggregator& operator=(const KeyedRoundAggregator&) = delete;

  // FailedPrecondition once consumed or if payload.meta.round is another round;
  // InvalidArgument if the layout hash differs, the weight is not finite and > 0, the
  // train loss is not finite, the encoding is not kNamedSubset, or the payload fails
  // DecodeNamedSubset (the message names the tensor at fault).
  Status Accumulate(const Payload& payload) override;
  // Consumes `other`, a KeyedRoundAggregator of the same round, layout and rule
  // (InvalidArgument otherwise); FailedPrecondition if either is consumed.
  Status MergeWith(RoundAggregator&& other) override;
  uint64_t count() const override { return fold_.acc().count(); }
  bool CanReport() const override { return fold_.CanReport(); }
  // mean_delta: the accumulator's mean over the whole layout; total_weight: the sum of
  // the client weights; mean_train_loss: weighted by client weight.
  Result<AggregateReport> Report() && override;

  uint64_t round() const { return fold_.round(); }

 private:
  RoundFold<KeyedAccumulator> fold_;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDINS_KEYED_ROUND_AGGREGATOR_H_
