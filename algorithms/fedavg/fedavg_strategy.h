#ifndef FL_ALGORITHMS_FEDAVG_FEDAVG_STRATEGY_H_
#define FL_ALGORITHMS_FEDAVG_FEDAVG_STRATEGY_H_

// The server half of FedAvg, FedProx and FedAdam/FedYogi (Reddi et al., "Adaptive
// Federated Optimization", ICLR 2021). The three differ only in what they send to
// clients (FedProx: a proximal term mu) and in the server optimizer that turns the
// round's mean delta d into a new global model w:
//   sgd:  m = momentum * m + d;  w += server_lr * m        (plain FedAvg: momentum 0, lr 1)
//   adam: m = b1 m + (1-b1) d;  v = b2 v + (1-b2) d^2;            w += lr m / (sqrt(v) + tau)
//   yogi: m as adam;  v = v - (1-b2) d^2 sign(v - d^2);          w += lr m / (sqrt(v) + tau)
// As in the paper, m starts at 0 and v at tau^2, with no bias correction.
// Outer momentum clipping (CO2, specs/async-co2.md): with momentum_clip and/or
// momentum_clip_adaptive set, each tensor l of m is scaled to L2 norm at most phi_l before
// the step, phi_l = momentum_clip, or momentum_clip_adaptive x the running mean of ||m_l||
// over earlier steps (the smaller if both). With plain sgd and no momentum, m is the mean
// delta itself, so the step is clipped.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fl/algorithm.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

enum class ServerOptimizer : int { kSgd = 1, kAdam = 2, kYogi = 3 };

// "sgd" | "adam" | "yogi"; InvalidArgument otherwise.
Result<ServerOptimizer> ParseServerOptimizer(std::string_view name);
std::string_view ServerOptimizerName(ServerOptimizer optimizer);

struct FedAvgOptions {
  // Algorithm name reported by Strategy::name() and sent to clients in Task::algorithm
  // (the client creates its Learner from it).
  std::string name = "fedavg";
  ServerOptimizer server_optimizer = ServerOptimizer::kSgd;
  double server_lr = 1.0;        // > 0
  double server_momentum = 0.0;  // [0, 1); sgd only
  double beta1 = 0.9;            // [0, 1); adam/yogi
  double beta2 = 0.99;           // [0, 1); adam/yogi
  double tau = 1e-3;             // > 0; adaptivity (adam/yogi)
  double momentum_clip = 0;           // >= 0; phi of the per-tensor momentum clip; 0: off
  double momentum_clip_adaptive = 0;  // >= 0; c of phi_l = c x mean ||m_l||; 0: off
  // How the round's deltas become the mean delta (fl/algorithm.h). kMean (default) is the
  // streaming weighted mean; the robust rules hold the round's updates (n * d * 4 bytes).
  AggregationOptions aggregation;
  // Sent to every client each round (seed excluded: the coordinator sets it).
  TrainConfig train;
};

// InvalidArgument naming the offending field if an option is out of range.
Status ValidateFedAvgOptions(const FedAvgOptions& options);

// Called by one thread at a time (the coordinator's lock), as Strategy requires.
class FedAvgStrategy : public Strategy {
 public:
  // REQUIRES: ValidateFedAvgOptions(options).ok().
  explicit FedAvgStrategy(FedAvgOptions options);

  std::string_view name() const override { return options_.name; }
  TrainConfig ConfigureRound(uint64_t round) const override;
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet& global,
                                                      uint64_t round) override;
  // InvalidArgument if the report's layout differs from the global model's or its
  // mean delta is not finite; FailedPrecondition if loaded optimizer state does not fit
  // the model. Neither the model nor the optimizer state changes on error, including
  // when the step would make the model non-finite (InvalidArgument).
  Status ApplyRound(AggregateReport report, ParamSet* global) override;
  // Empty while the optimizer has no state (plain sgd, or before the first round).
  std::string SaveState() const override;
  // Accepts what SaveState produced (empty resets). DataLoss if truncated or corrupt;
  // InvalidArgument if it was saved by another server optimizer.
  Status LoadState(std::string_view state) override;

  // "momentum.clipped_tensors" of the last step, when clipping is on.
  std::map<std::string, double> LastRoundStats() const override;

  const FedAvgOptions& options() const { return options_; }
  uint64_t steps() const { return steps_; }

 private:
  bool HasMoments() const;
  bool ClipsMomentum() const;
  // Scales each tensor of m (layout order) to its threshold and updates the running mean
  // of the norms into *means. Returns how many tensors were scaled.
  uint64_t ClipMomentum(const Layout& layout, std::vector<float>* m,
                        std::vector<double>* means) const;

  FedAvgOptions options_;
  // Robust rules: updates held by the aggregators of robust_round_ together
  // (RobustRoundAggregator::HeldCount), shared by the round's leaf aggregators.
  std::shared_ptr<std::atomic<uint64_t>> robust_held_;
  uint64_t robust_round_ = 0;
  uint64_t steps_ = 0;         // rounds applied
  std::vector<float> m_;       // first moment / momentum buffer (empty until needed)
  std::vector<float> v_;       // second moment (adam/yogi)
  std::vector<double> m_norm_means_;  // per tensor, mean ||m_l|| over the steps (clipping)
  uint64_t last_clipped_ = 0;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_FEDAVG_STRATEGY_H_
