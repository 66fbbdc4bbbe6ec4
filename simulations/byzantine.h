#ifndef FL_SIMULATIONS_BYZANTINE_H_
#define FL_SIMULATIONS_BYZANTINE_H_

// Byzantine virtual clients in fl-sim. A fraction of the population (byzantine.fraction,
// chosen by a shuffle seeded from run.seed, so the same clients attack in every round
// and for any worker count) runs the honest Learner and Trainer, and the attack is
// applied around the trainer the Learner drives: the algorithm, the coordinator and
// the transport are the production ones, untouched. Attacks (byzantine.attack):
//   sign_flip        the update d becomes -scale * d                 (byzantine.scale)
//   gaussian         the update is replaced by N(0, sigma^2) noise   (byzantine.sigma),
//                    seeded by the task's training seed
//   inflated_weight  the honest update, claiming weight_factor times its dataset size
//                    (byzantine.weight_factor)
//   label_flip       trains on its own examples with label y replaced by (classes-1-y)
//   constant         every coordinate of the update is byzantine.constant
// "Update" is what the Learner computes as trained - global: the wrapper hands the
// Learner global + f(trained - global) as the trained parameters, so any algorithm that
// uploads (a projection of) trained - global carries the attack.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"
#include "simulations/workload.h"

namespace fl::internal {

enum class ByzantineAttack { kSignFlip, kGaussian, kInflatedWeight, kLabelFlip, kConstant };

// "sign_flip" | "gaussian" | "inflated_weight" | "label_flip" | "constant";
// InvalidArgument otherwise.
Result<ByzantineAttack> ParseByzantineAttack(std::string_view name);
std::string_view ByzantineAttackName(ByzantineAttack attack);

struct ByzantineOptions {
  double fraction = 0;       // of the clients, [0, 1]; 0 disables the attack
  ByzantineAttack attack = ByzantineAttack::kSignFlip;
  double scale = 1.0;        // sign_flip, finite
  double sigma = 1.0;        // gaussian, >= 0
  double weight_factor = 10; // inflated_weight, > 0
  double constant = 1.0;     // constant, finite
};

// The "byzantine" section with its defaults (fraction 0: no attacker).
nlohmann::json ByzantineConfigDefaults();

// Reads and validates the byzantine.* keys. InvalidArgument naming the key.
Result<ByzantineOptions> ByzantineOptionsFromConfig(const Config& config);

// The attacking clients: round(fraction * num_clients) of them, picked by a shuffle
// seeded from `seed`; result[i] says whether client i attacks.
std::vector<bool> ChooseByzantineClients(size_t num_clients, double fraction, uint64_t seed);

// Wraps the honest trainer of an attacking client (see the top of this file). The inner
// trainer must outlive the binding. Thread-compatible, like any Trainer.
class ByzantineTrainer final : public Trainer {
 public:
  explicit ByzantineTrainer(ByzantineOptions options) : options_(options) {}

  // The honest trainer this one drives until the next Bind.
  void Bind(Trainer* inner) { inner_ = inner; }

  const Layout& layout() const override { return inner_->layout(); }
  // The inner trainer's parameters with the attack applied to (trained - global), where
  // global is the last SetParameters.
  Status GetParameters(ParamSet* out) override;
  Status SetParameters(const ParamSet& params) override;
  // The inner trainer's Train; inflated_weight multiplies dataset_size.
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override;
  Result<EvalStats> Evaluate() override { return inner_->Evaluate(); }

 private:
  ByzantineOptions options_;
  Trainer* inner_ = nullptr;
  ParamSet anchor_;
  uint64_t seed_ = 0;  // of the last Train (gaussian noise)
};

// The attack as fl-sim's engine applies it: which clients attack, and one wrapper per
// worker thread. Bind() is called from worker `worker` only (no locking needed).
class ByzantineClients {
 public:
  // Disabled (every client honest) if options.fraction is 0.
  ByzantineClients(const ByzantineOptions& options, size_t num_clients, uint64_t seed,
                   int workers);

  bool enabled() const { return num_attackers_ > 0; }
  size_t num_attackers() const { return num_attackers_; }
  bool attacks(size_t client) const { return client < attackers_.size() && attackers_[client]; }
  // The trainer `client` trains with on `worker`: the worker's honest trainer for an
  // honest client, else the worker's ByzantineTrainer around it (bound to the
  // label-flipped data for label_flip). Errors of the workload's BindClient.
  Result<Trainer*> Bind(WorkloadWorker& worker_state, int worker, size_t client);
  // One line for the run record, e.g. "10 of 100 clients: sign_flip (scale 1)".
  std::string Describe() const;

 private:
  ByzantineOptions options_;
  size_t num_clients_;
  size_t num_attackers_ = 0;
  std::vector<bool> attackers_;
  std::vector<std::unique_ptr<ByzantineTrainer>> wrappers_;  // one per worker
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_BYZANTINE_H_
