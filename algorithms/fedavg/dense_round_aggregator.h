#ifndef FL_ALGORITHMS_FEDAVG_DENSE_ROUND_AGGREGATOR_H_
#define FL_ALGORITHMS_FEDAVG_DENSE_ROUND_AGGREGATOR_H_

// The generic round aggregator: validates an update's metadata, folds it into a
// streaming WeightedAccumulator and reports the weighted mean delta. Algorithms whose
// uploads decode to a dense delta (FedAvg/FedProx/FedAdam as they are; Ferret after
// reconstruction; async with a staleness-scaled weight) subclass it and override
// Fold() and/or FoldWeight().

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "agg/weighted_accumulator.h"
#include "algorithms/fedavg/round_fold.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/update.h"

namespace fl::internal {

// Not thread-safe (the coordinator serializes calls). Operations validate before they
// change anything: on any error the aggregator is unchanged.
class DenseRoundAggregator : public RoundAggregator {
 public:
  // Aggregates deltas of models with `layout` for `round`.
  DenseRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round);
  ~DenseRoundAggregator() override = default;
  DenseRoundAggregator(const DenseRoundAggregator&) = delete;
  DenseRoundAggregator& operator=(const DenseRoundAggregator&) = delete;

  // FailedPrecondition once consumed or if payload.meta.round is another round;
  // InvalidArgument if the layout hash differs, the weight is not finite and > 0, the
  // train loss is not finite, or Fold() refuses the content (encoding, length,
  // non-finite values).
  Status Accumulate(const Payload& payload) final;
  // Folds payload.bytes in place, with `meta`'s round, layout, weight and loss.
  Status AccumulateWithMeta(const UpdateMeta& meta, const Payload& payload) final;
  // Consumes `other`, which must be a DenseRoundAggregator of the same round and
  // layout (InvalidArgument otherwise); FailedPrecondition if either is consumed.
  Status MergeWith(RoundAggregator&& other) final;
  uint64_t count() const final { return fold_.acc().count(); }
  bool CanReport() const final { return fold_.CanReport(); }
  // mean_delta = sum w_i d_i / sum w_i; mean_train_loss is weighted the same way.
  Result<AggregateReport> Report() && final;
  // The fp64 sums, total weight, count and loss sum, tagged with the round and the
  // layout hash (format in dense_round_aggregator.cc). Merging partials adds fp64 sums,
  // so the reported mean equals a single aggregator's up to fp64 rounding (see
  // agg/weighted_accumulator.h).
  Result<std::string> SerializePartial() const final;
  Status MergeSerializedPartial(std::string_view partial) final;

  uint64_t round() const { return fold_.round(); }
  bool consumed() const { return fold_.consumed(); }

 protected:
  // Decodes payload.bytes and folds weight * delta into *acc. Must leave *acc unchanged
  // on error. The default accepts the dense encodings (f32/f16/bf16). Reads only the
  // values and payload.meta.encoding (the rest of the metadata may have been replaced,
  // AccumulateWithMeta).
  virtual Status Fold(const Payload& payload, double weight, WeightedAccumulator* acc);
  // The weight an update is folded with; the default is meta.weight. Checked to be
  // finite and > 0 after this returns.
  virtual Result<double> FoldWeight(const UpdateMeta& meta) { return meta.weight; }

 private:
  RoundFold<WeightedAccumulator> fold_;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_DENSE_ROUND_AGGREGATOR_H_
