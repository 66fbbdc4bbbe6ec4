#ifndef FL_ALGORITHMS_FEDAVG_ROUND_FOLD_H_
#define FL_ALGORITHMS_FEDAVG_ROUND_FOLD_H_

// The bookkeeping a streaming round aggregator keeps around its accumulator: its round,
// the weighted sum of train losses, and whether Report() consumed it. Shared by the dense
// (WeightedAccumulator) and keyed (KeyedAccumulator) aggregators, whose accumulators
// both offer count(), total_weight(), MergeWith(Acc&&) and Mean().

#include <cstdint>
#include <string>
#include <utility>

#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/update.h"

namespace fl::internal {

template <typename Acc>
class RoundFold {
 public:
  // `owner` names the aggregator in errors, e.g. "DenseRoundAggregator".
  RoundFold(const char* owner, uint64_t round, Acc acc)
      : owner_(owner), round_(round), acc_(std::move(acc)) {}

  uint64_t round() const { return round_; }
  bool consumed() const { return consumed_; }
  Acc& acc() { return acc_; }
  const Acc& acc() const { return acc_; }
  bool CanReport() const { return !consumed_ && acc_.count() > 0; }

  // FailedPrecondition once consumed by Report().
  Status CheckUsable(const char* op) const {
    if (!consumed_) return Status::Ok();
    return Status::FailedPrecondition(std::string(owner_) + "::" + op +
                                      ": aggregator already consumed by Report()");
  }

  // FailedPrecondition once consumed or for an update of another round.
  Status CheckUpdate(const UpdateMeta& meta) const {
    FL_RETURN_IF_ERROR(CheckUsable("Accumulate"));
    if (meta.round == round_) return Status::Ok();
    return Status::FailedPrecondition("update for round " + std::to_string(meta.round) +
                                      " offered to the aggregator of round " +
                                      std::to_string(round_));
  }

  // After the accumulator took an update of `weight`.
  void AddLoss(double weight, double train_loss) { loss_sum_ += weight * train_loss; }
  // The weighted sum of train losses folded so far, and one folded elsewhere (a partial
  // from another process).
  double loss_sum() const { return loss_sum_; }
  void AddLossSum(double loss_sum) { loss_sum_ += loss_sum; }

  // Folds `other` (an aggregator's fold the caller found to be of its own type) into
  // this one and marks it consumed. InvalidArgument for itself or another round (or what
  // the accumulator refuses); FailedPrecondition if either is consumed.
  Status MergeFrom(RoundFold* other) {
    FL_RETURN_IF_ERROR(CheckUsable("MergeWith"));
    if (other == this) {
      return Status::InvalidArgument("MergeWith: cannot merge an aggregator into itself");
    }
    if (other->consumed_) {
      return Status::FailedPrecondition("MergeWith: the other aggregator is consumed");
    }
    if (other->round_ != round_) {
      return Status::InvalidArgument("MergeWith: rounds differ (" + std::to_string(round_) +
                                     " vs " + std::to_string(other->round_) + ")");
    }
    FL_RETURN_IF_ERROR(acc_.MergeWith(std::move(other->acc_)));
    loss_sum_ += other->loss_sum_;
    other->loss_sum_ = 0;
    other->consumed_ = true;
    return Status::Ok();
  }

  // The accumulator's mean as mean_delta, with the total weight, the count and the
  // weighted mean train loss; consumes the fold. FailedPrecondition if consumed or empty.
  Result<AggregateReport> Report() {
    FL_RETURN_IF_ERROR(CheckUsable("Report"));
    if (acc_.count() == 0) {
      return Status::FailedPrecondition(std::string(owner_) + "::Report: no updates");
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

 private:
  const char* owner_;
  uint64_t round_;
  Acc acc_;
  double loss_sum_ = 0;  // sum of weight * train_loss
  bool consumed_ = false;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_ROUND_FOLD_H_
