#include "algorithms/ferret/ferret_round_aggregator.h"

#include <cmath>
#include <string>

namespace fl::internal {

FerretRoundAggregator::FerretRoundAggregator(const FerretRoundKey& key)
    : key_(key), acc_(key.plan_hash, key.basis_hash, key.num_seeds, key.num_blocks) {}

Status FerretRoundAggregator::CheckUsable(const char* op) const {
  if (consumed_) {
    return Status::FailedPrecondition(std::string("FerretRoundAggregator::") + op +
                                      ": aggregator already consumed by Report()");
  }
  return Status::Ok();
}

Status FerretRoundAggregator::Accumulate(const Payload& payload) {
  FL_RETURN_IF_ERROR(CheckUsable("Accumulate"));
  const UpdateMeta& meta = payload.meta;
  if (meta.round != key_.round) {
    return Status::FailedPrecondition("update for round " + std::to_string(meta.round) +
                                      " offered to the aggregator of round " +
                                      std::to_string(key_.round));
  }
  if (meta.layout_hash != key_.layout_hash) {
    return Status::InvalidArgument("update layout hash " + std::to_string(meta.layout_hash) +
                                   " does not match the model's " +
                                   std::to_string(key_.layout_hash));
  }
  if (meta.encoding != Encoding::kFerret) {
    return Status::InvalidArgument("ferret accepts only coefficient tables (encoding " +
                                   EncodingName(Encoding::kFerret) + "), got " +
                                   EncodingName(meta.encoding));
  }
  if (!std::isfinite(meta.weight) || !(meta.weight > 0)) {
    return Status::InvalidArgument("update weight must be finite and > 0, got " +
                                   std::to_string(meta.weight));
  }
  if (!std::isfinite(meta.train_loss)) {
    return Status::InvalidArgument("update reports a non-finite train loss");
  }
  Result<ferret::CoefficientTable> table = ferret::ParseCoefficientTable(payload.bytes);
  if (!table.ok()) {
    // The bytes passed their SHA-256 check, so a parse failure is malformed content.
    return Status::InvalidArgument("malformed ferret coefficient table: " +
                                   table.status().message());
  }
  if (table->plan_hash() == key_.plan_hash && table->basis_hash() == key_.basis_hash) {
    // A header that widens K or L to carry out-of-range entries: name the entry.
    for (const ferret::Coefficient& c : table->entries()) {
      if (c.block >= key_.num_blocks) {
        return Status::InvalidArgument("ferret update names unknown block " +
                                       std::to_string(c.block) + " (seed " +
                                       std::to_string(c.seed) + "); the plan has " +
                                       std::to_string(key_.num_blocks) + " blocks");
      }
      if (c.seed >= key_.num_seeds) {
        return Status::InvalidArgument("ferret update names unknown seed index " +
                                       std::to_string(c.seed) + " (block " +
                                       std::to_string(c.block) + "); the pool has " +
                                       std::to_string(key_.num_seeds) + " seeds");
      }
    }
  }
  FL_RETURN_IF_ERROR(ferret::ValidateCoefficientTable(*table, key_.plan_hash, key_.basis_hash,
                                                      key_.num_seeds, key_.num_blocks));
  FL_RETURN_IF_ERROR(acc_.Add(*table, meta.weight));
  loss_sum_ += meta.weight * meta.train_loss;
  return Status::Ok();
}

Status FerretRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(CheckUsable("MergeWith"));
  auto* o = dynamic_cast<FerretRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a FerretRoundAggregator");
  if (o == this) return Status::InvalidArgument("MergeWith: cannot merge an aggregator into itself");
  if (o->consumed_) return Status::FailedPrecondition("MergeWith: the other aggregator is consumed");
  const FerretRoundKey& k = o->key_;
  if (k.round != key_.round || k.layout_hash != key_.layout_hash ||
      k.plan_hash != key_.plan_hash || k.basis_hash != key_.basis_hash ||
      k.num_seeds != key_.num_seeds || k.num_blocks != key_.num_blocks) {
    return Status::InvalidArgument("MergeWith: aggregators of different rounds or bases");
  }
  FL_RETURN_IF_ERROR(acc_.MergeWith(o->acc_));
  loss_sum_ += o->loss_sum_;
  o->loss_sum_ = 0;
  o->consumed_ = true;
  return Status::Ok();
}

Result<AggregateReport> FerretRoundAggregator::Report() && {
  FL_RETURN_IF_ERROR(CheckUsable("Report"));
  if (acc_.num_added() == 0) {
    return Status::FailedPrecondition("FerretRoundAggregator::Report: no updates");
  }
  FL_ASSIGN_OR_RETURN(ferret::CoefficientTable mean, acc_.ToTable(1.0 / acc_.total_weight()));
  AggregateReport report;
  report.encoded_aggregate = ferret::SerializeCoefficientTable(mean);
  report.aggregate_encoding = Encoding::kFerret;
  report.total_weight = acc_.total_weight();
  report.count = acc_.num_added();
  report.mean_train_loss = loss_sum_ / acc_.total_weight();
  consumed_ = true;
  return report;
}

}  // namespace fl::internal
