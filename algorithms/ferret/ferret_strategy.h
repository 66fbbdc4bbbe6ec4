#ifndef FL_ALGORITHMS_FERRET_FERRET_STRATEGY_H_
#define FL_ALGORITHMS_FERRET_FERRET_STRATEGY_H_

// The server half of Ferret (Shu et al., "Ferret: Federated Full-Parameter Tuning at
// Scale for Large Language Models", ICML 2025; spec: specs/ferret.md).
//
// Clients train all parameters, then upload the projection of their descent direction
// delta_i = w_{r-1} - w_i onto K shared random bases per block (FerretLearner). The
// server averages the coefficient tables in coefficient space (FerretRoundAggregator),
// applies server momentum there, C_r = momentum * C_{r-1} + mean_r, and reconstructs
// once: w_r = w_{r-1} - server_lr * sum clip(C_r[k,l] v_{k,l}). That step is a replay
// record (ferret_replay.h); the strategy applies it through the same function clients
// use, so a client holding w_{r-1} rebuilds w_r bit for bit from the record alone.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "algorithms/ferret/ferret_spec.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

// Persisted in configs by name: never change existing values.
enum class FerretSeedPolicy : int {
  kFixed = 1,  // one pool of K seeds for the whole run (the reference)
  kFresh = 2,  // a new pool every round (epoch = round)
};

struct FerretOptions {
  uint32_t num_bases = 200;  // K
  FerretSeedPolicy seed_policy = FerretSeedPolicy::kFixed;
  uint64_t pool_seed = 1;  // the seed pools derive from
  BasisDistribution distribution = BasisDistribution::kRademacher;
  ferret::BasisAmplitude amplitude = ferret::BasisAmplitude::kUnit;
  ferret::BlockPlanKind plan_kind = ferret::BlockPlanKind::kReference;
  uint64_t block_size = 0;  // kFixedSize only
  FerretProjection projection;
  // Each reconstructed (seed, block) term is scaled down to this norm; 0 disables.
  double clip = 10.0;
  double server_lr = 1.0;        // > 0
  // T > 0: round r steps with server_lr * T / (T + r - 1), so the noise each round's
  // random directions add shrinks while the steps still sum without bound; 0: constant.
  uint32_t server_lr_decay_rounds = 0;
  double server_momentum = 0.0;  // [0, 1); needs the fixed seed policy
  // Threads of the server's reconstruction; 0 = all cores. Results do not depend on it.
  int threads = 1;
  // Sent to every client (seed excluded; upload_encoding is always kFerret).
  TrainConfig train;
};

// InvalidArgument naming the config key ("ferret.*", "train.*") of an out-of-range
// option, including momentum > 0 with fresh seeds (each round's table would then be
// added to one computed for other bases).
Status ValidateFerretOptions(const FerretOptions& options);

// Called by one thread at a time (the coordinator's lock), as Strategy requires.
class FerretStrategy : public Strategy {
 public:
  // REQUIRES: ValidateFerretOptions(options).ok().
  explicit FerretStrategy(FerretOptions options);

  std::string_view name() const override { return "ferret"; }
  // The train options plus the round's FerretRoundSpec and projection in `extra`.
  TrainConfig ConfigureRound(uint64_t round) const override;
  // Also makes `round` the round ApplyRound expects. Returns an aggregator that refuses
  // every update if no block plan can be made for global's layout (logged).
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet& global,
                                                      uint64_t round) override;
  // report.encoded_aggregate must be the mean table of the round of the last
  // NewRoundAggregator call. InvalidArgument: not a Ferret aggregate, malformed, or the
  // step makes the model non-finite; FailedPrecondition: no round was started, or the
  // table or loaded momentum belongs to other bases. Model and state unchanged on error.
  Status ApplyRound(AggregateReport report, ParamSet* global) override;
  // The momentum table (empty while there is none).
  std::string SaveState() const override;
  // Accepts what SaveState produced; empty resets. DataLoss if truncated or corrupt.
  Status LoadState(std::string_view state) override;
  std::string TakeReplayRecord() override;
  // "ferret.terms_applied", "ferret.terms_clipped", "ferret.terms_skipped_nonfinite",
  // "ferret.coefficients" (entries of the applied table), "ferret.replay_bytes",
  // "ferret.server_lr".
  std::map<std::string, double> LastRoundStats() const override { return last_stats_; }

  const FerretOptions& options() const { return options_; }
  FerretRoundSpec SpecForRound(uint64_t round) const;
  // The server learning rate of `round` (rounds count from 1).
  double ServerLrForRound(uint64_t round) const;
  uint64_t steps() const { return steps_; }

 private:
  FerretOptions options_;
  // The round of the last NewRoundAggregator call, its spec and plan.
  std::optional<uint64_t> round_;
  FerretRoundSpec spec_;
  std::optional<ferret::BlockPlan> plan_;
  ferret::BasisSpec basis_;
  // Valid as long as the pool does not change (fixed policy); cleared otherwise.
  ferret::BasisNormCache norm_cache_;
  std::optional<ferret::CoefficientTable> momentum_;
  std::string pending_replay_;
  std::map<std::string, double> last_stats_;
  uint64_t steps_ = 0;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_FERRET_STRATEGY_H_
