#include "algorithms/fedins/keyed_round_aggregator.h"

#include <string>

#include "algorithms/fedavg/dense_delta.h"
#include "codec/named_subset_codec.h"

namespace fl::internal {

KeyedRoundAggregator::KeyedRoundAggregator(std::shared_ptr<const Layout> layout, uint64_t round,
                                           KeyedRule rule)
    : round_(round), acc_(std::move(layout), rule) {}

Status KeyedRoundAggregator::CheckUsable(const char* op) const {
  if (consumed_) {
    return Status::FailedPrecondition(std::string("KeyedRoundAggregator::") + op +
                                      ": aggregator already consumed by Report()");
  }
  return Status::Ok();
}

Status KeyedRoundAggregator::Accumulate(const Payload& payload) {
  FL_RETURN_IF_ERROR(CheckUsable("Accumulate"));
  const UpdateMeta& meta = payload.meta;
  if (meta.round != round_) {
    return Status::FailedPrecondition("update for round " + std::to_string(meta.round) +
                                      " offered to the aggregator of round " +
                                      std::to_string(round_));
  }
  // Layout hash, finite train loss, finite positive weight: the dense checks apply as
  // they are, since they do not look at the bytes.
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, acc_.layout()));
  if (meta.encoding != Encoding::kNamedSubset) {
    return Status::InvalidArgument("update encoding " + EncodingName(meta.encoding) +
                                   " is not named_subset (this algorithm uploads keyed updates)");
  }
  FL_ASSIGN_OR_RETURN(NamedSubset subset, DecodeNamedSubset(payload.bytes, acc_.layout()));
  FL_RETURN_IF_ERROR(acc_.Accumulate(subset, meta.weight));
  loss_sum_ += meta.weight * meta.train_loss;
  return Status::Ok();
}

Status KeyedRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(CheckUsable("MergeWith"));
  auto* o = dynamic_cast<KeyedRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a KeyedRoundAggregator");
  if (o == this) return Status::InvalidArgument("MergeWith: cannot merge into itself");
  if (o->consumed_) return Status::FailedPrecondition("MergeWith: the other one is consumed");
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

Result<AggregateReport> KeyedRoundAggregator::Report() && {
  FL_RETURN_IF_ERROR(CheckUsable("Report"));
  if (acc_.count() == 0) {
    return Status::FailedPrecondition("KeyedRoundAggregator::Report: no updates");
  }
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
