#include "algorithms/fedins/keyed_round_aggregator.h"

#include <string>

#include "algorithms/fedavg/dense_delta.h"
#include "codec/named_subset_codec.h"

namespace fl::internal {

KeyedRoundAggregator::KeyedRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round,
                                           KeyedRule rule)
    : fold_("KeyedRoundAggregator", round, KeyedAccumulator(std::move(layout), rule)) {}

Status KeyedRoundAggregator::Accumulate(const Payload& payload) {
  const UpdateMeta& meta = payload.meta;
  FL_RETURN_IF_ERROR(fold_.CheckUpdate(meta));
  // Layout hash, finite train loss, finite positive weight: the dense checks apply as
  // they are, since they do not look at the bytes.
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, fold_.acc().layout()));
  if (meta.encoding != Encoding::kNamedSubset) {
    return Status::InvalidArgument("update encoding " + EncodingName(meta.encoding) +
                                   " is not named_subset (this algorithm uploads keyed updates)");
  }
  FL_ASSIGN_OR_RETURN(NamedSubset subset, DecodeNamedSubset(payload.bytes, fold_.acc().layout()));
  FL_RETURN_IF_ERROR(fold_.acc().Accumulate(subset, meta.weight));
  fold_.AddLoss(meta.weight, meta.train_loss);
  return Status::Ok();
}

Status KeyedRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(fold_.CheckUsable("MergeWith"));
  auto* o = dynamic_cast<KeyedRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a KeyedRoundAggregator");
  return fold_.MergeFrom(&o->fold_);
}

Result<AggregateReport> KeyedRoundAggregator::Report() && { return fold_.Report(); }

}  // namespace fl::internal
