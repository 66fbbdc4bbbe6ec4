// sign-SGD with majority vote; see sign_sgd.h. Only public headers: this file is
// compiled with sdk/include alone on its include path.

#include "sign_sgd.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fl/param_set.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::examples {
namespace {

// One vote counter per coordinate. Not thread-safe (the coordinator serializes calls);
// every error leaves the counters unchanged.
class SignVoteAggregator final : public fl::RoundAggregator {
 public:
  SignVoteAggregator(std::shared_ptr<const fl::Layout> layout, uint64_t round)
      : layout_(std::move(layout)), round_(round), votes_(layout_->total_numel(), 0) {}

  fl::Status Accumulate(const fl::Payload& payload) override {
    FL_RETURN_IF_ERROR(CheckOpen());
    if (payload.meta.round != round_) {
      return fl::Status::FailedPrecondition("signsgd: update for round " +
                                            std::to_string(payload.meta.round) +
                                            ", aggregating round " + std::to_string(round_));
    }
    // The SDK's dense checks (layout, length, finite values, weight) run on the whole
    // update before a single vote is counted.
    FL_ASSIGN_OR_RETURN(fl::ParamSet delta, fl::DecodeDenseDelta(payload, *layout_));
    const float* d = delta.data();
    for (size_t i = 0; i < votes_.size(); ++i) votes_[i] += (d[i] > 0) - (d[i] < 0);
    ++count_;
    loss_sum_ += payload.meta.train_loss;
    return fl::Status::Ok();
  }

  fl::Status MergeWith(fl::RoundAggregator&& other) override {
    FL_RETURN_IF_ERROR(CheckOpen());
    auto* o = dynamic_cast<SignVoteAggregator*>(&other);
    if (o == nullptr || o == this || o->round_ != round_ || o->layout_->hash() != layout_->hash()) {
      return fl::Status::InvalidArgument(
          "signsgd: can merge only another vote of the same round and model");
    }
    FL_RETURN_IF_ERROR(o->CheckOpen());
    for (size_t i = 0; i < votes_.size(); ++i) votes_[i] += o->votes_[i];
    count_ += o->count_;
    loss_sum_ += o->loss_sum_;
    o->consumed_ = true;
    return fl::Status::Ok();
  }

  uint64_t count() const override { return count_; }
  bool CanReport() const override { return !consumed_ && count_ > 0; }

  // mean_delta is the mean vote, in [-1, 1]: its sign is the majority's, and it is
  // exactly 0 on a tie.
  fl::Result<fl::AggregateReport> Report() && override {
    if (!CanReport()) return fl::Status::FailedPrecondition("signsgd: nothing to report");
    fl::AggregateReport report;
    report.mean_delta = fl::ParamSet(*layout_);
    float* mean = report.mean_delta.data();
    const double n = static_cast<double>(count_);
    for (size_t i = 0; i < votes_.size(); ++i) mean[i] = static_cast<float>(votes_[i] / n);
    report.count = count_;
    report.total_weight = n;  // one vote per client
    report.mean_train_loss = loss_sum_ / n;
    consumed_ = true;
    return report;
  }

 private:
  fl::Status CheckOpen() const {
    if (consumed_) return fl::Status::FailedPrecondition("signsgd: vote already reported");
    return fl::Status::Ok();
  }

  std::shared_ptr<const fl::Layout> layout_;
  uint64_t round_;
  std::vector<int32_t> votes_;  // sum of sign(delta_i); 2^31 clients a round is plenty
  uint64_t count_ = 0;
  double loss_sum_ = 0;
  bool consumed_ = false;
};

class SignSgdStrategy final : public fl::Strategy {
 public:
  SignSgdStrategy(fl::TrainConfig train, double server_lr)
      : train_(std::move(train)), step_(static_cast<float>(server_lr)) {}

  std::string_view name() const override { return kSignSgdName; }
  fl::TrainConfig ConfigureRound(uint64_t round) const override { return train_; }

  std::unique_ptr<fl::RoundAggregator> NewRoundAggregator(const fl::ParamSet& global,
                                                          uint64_t round) override {
    return std::make_unique<SignVoteAggregator>(global.shared_layout(), round);
  }

  fl::Status ApplyRound(fl::AggregateReport report, fl::ParamSet* global) override {
    const fl::ParamSet& vote = report.mean_delta;
    if (vote.layout().hash() != global->layout().hash() || vote.size() != global->size()) {
      return fl::Status::InvalidArgument("signsgd: the vote's layout differs from the model's");
    }
    float* w = global->data();
    const float* v = vote.data();
    for (size_t i = 0; i < global->size(); ++i) {
      if (v[i] > 0) w[i] += step_;
      if (v[i] < 0) w[i] -= step_;
    }
    return fl::Status::Ok();
  }

 private:
  fl::TrainConfig train_;
  float step_;  // server_lr in the model's precision: each step is exactly +-step_
};

fl::Result<double> ServerLr(const fl::AlgorithmConfig& config) {
  const double lr = config.GetDouble(kSignSgdServerLrKey);
  if (!(std::isfinite(lr) && lr > 0)) {
    return fl::Status::InvalidArgument(std::string(kSignSgdServerLrKey) +
                                       " must be finite and > 0, got " + std::to_string(lr));
  }
  return lr;
}

}  // namespace

fl::AlgorithmDefinition SignSgdAlgorithm() {
  fl::AlgorithmDefinition d;
  d.name = kSignSgdName;
  d.summary = "sign-SGD: the server steps by server_lr along the clients' majority sign";
  d.config_keys = {{kSignSgdServerLrKey, 0.01, "step per coordinate and round"}};
  d.validate = [](const fl::AlgorithmConfig& config) {
    FL_RETURN_IF_ERROR(ServerLr(config).status());
    return config.LocalTraining().status();
  };
  d.create_strategy =
      [](const fl::AlgorithmConfig& config) -> fl::Result<std::unique_ptr<fl::Strategy>> {
    FL_ASSIGN_OR_RETURN(double lr, ServerLr(config));
    FL_ASSIGN_OR_RETURN(fl::TrainConfig train, config.LocalTraining());
    return std::unique_ptr<fl::Strategy>(std::make_unique<SignSgdStrategy>(train, lr));
  };
  d.create_learner = [] { return fl::NewDenseDeltaLearner(); };
  return d;
}

fl::Status RegisterSignSgd() { return fl::RegisterAlgorithm(SignSgdAlgorithm()); }

}  // namespace fl::examples
