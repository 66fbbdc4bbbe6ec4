#include "algorithms/fedavg/dense_round_aggregator.h"

#include <string>

#include "algorithms/fedavg/dense_delta.h"

namespace fl::internal {

DenseRoundAggregator::DenseRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round)
    : round_(round), acc_(std::move(layout)) {}

Status DenseRoundAggregator::CheckUsable(const char* op) const {
  if (consumed_) {
    return Status::FailedPrecondition(std::string("DenseRoundAggregator::") + op +
                                      ": aggregator already consumed by Report()");
  }
  return Status::Ok();
}

Status DenseRoundAggregator::Accumulate(const Payload& payload) {
  FL_RETURN_IF_ERROR(CheckUsable("Accumulate"));
  const UpdateMeta& meta = payload.meta;
  if (meta.round != round_) {
    return Status::FailedPrecondition("update for round " + std::to_string(meta.round) +
                                      " offered to the aggregator of round " + std::to_string(round_));
  }
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, acc_.layout()));
  FL_ASSIGN_OR_RETURN(double weight, FoldWeight(meta));
  FL_RETURN_IF_ERROR(CheckUpdateWeight(weight));
  FL_RETURN_IF_ERROR(Fold(payload, weight, &acc_));
  loss_sum_ += weight * meta.train_loss;
  return Status::Ok();
}

Status DenseRoundAggregator::Fold(const Payload& payload, double weight, WeightedAccumulator* acc) {
  return acc->Accumulate(payload.bytes, payload.meta.encoding, weight);
}

Status DenseRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(CheckUsable("MergeWith"));
  auto* o = dynamic_cast<DenseRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a DenseRoundAggregator");
  if (o == this) return Status::InvalidArgument("MergeWith: cannot merge an aggregator into itself");
  if (o->consumed_) return Status::FailedPrecondition("MergeWith: the other aggregator is consumed");
  if (o->round_ != round_) {
    return Status::InvalidArgument("MergeWith: rounds differ (" + std::to_string(round_) + " vs " +
                                   std::to_string(o->round_) + ")");
  }
  FL_RETURN_IF_ERROR(acc_.MergeWith(std::move(o->acc_)));
  loss_sum_ += o->loss_sum_;
  o->loss_sum_ = 0;
  o->consumed_ = true;
  return Status::Ok();
}

Result<AggregateReport> DenseRoundAggregator::Report() && {
  FL_RETURN_IF_ERROR(CheckUsable("Report"));
  if (acc_.count() == 0) return Status::FailedPrecondition("DenseRoundAggregator::Report: no updates");
  FL_ASSIGN_OR_RETURN(ParamSet mean, acc_.Mean());
  AggregateReport report;
  report.mean_delta = std::move(mean);
  report.total_weight = acc_.total_weight();
  report.count = acc_.count();
  report.mean_train_loss = loss_sum_ / acc_.total_weight();
  consumed_ = true;
  return report;
}

}  // namespace fl::internal
