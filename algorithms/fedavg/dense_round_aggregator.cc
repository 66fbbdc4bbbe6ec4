#include "algorithms/fedavg/dense_round_aggregator.h"

#include <string>

#include "algorithms/fedavg/dense_delta.h"

namespace fl::internal {

DenseRoundAggregator::DenseRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round)
    : fold_("DenseRoundAggregator", round, WeightedAccumulator(std::move(layout))) {}

Status DenseRoundAggregator::Accumulate(const Payload& payload) {
  return AccumulateWithMeta(payload.meta, payload);
}

Status DenseRoundAggregator::AccumulateWithMeta(const UpdateMeta& meta, const Payload& payload) {
  if (meta.encoding != payload.meta.encoding) {
    return Status::InvalidArgument("AccumulateWithMeta: the metadata names another encoding");
  }
  FL_RETURN_IF_ERROR(fold_.CheckUpdate(meta));
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, fold_.acc().layout()));
  FL_ASSIGN_OR_RETURN(double weight, FoldWeight(meta));
  FL_RETURN_IF_ERROR(CheckUpdateWeight(weight));
  FL_RETURN_IF_ERROR(Fold(payload, weight, &fold_.acc()));
  fold_.AddLoss(weight, meta.train_loss);
  return Status::Ok();
}

Status DenseRoundAggregator::Fold(const Payload& payload, double weight, WeightedAccumulator* acc) {
  return acc->Accumulate(payload.bytes, payload.meta.encoding, weight);
}

Status DenseRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(fold_.CheckUsable("MergeWith"));
  auto* o = dynamic_cast<DenseRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a DenseRoundAggregator");
  return fold_.MergeFrom(&o->fold_);
}

Result<AggregateReport> DenseRoundAggregator::Report() && { return fold_.Report(); }

}  // namespace fl::internal
