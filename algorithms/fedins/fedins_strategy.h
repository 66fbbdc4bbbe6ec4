#ifndef FL_ALGORITHMS_FEDINS_FEDINS_STRATEGY_H_
#define FL_ALGORITHMS_FEDINS_FEDINS_STRATEGY_H_

// The server half of FedIns (Feng et al., "Towards Instance-adaptive Inference for
// Federated Learning", ICCV 2023): the federated model is the pool of SSF entries
// ("pool.<i>.*": scale/shift sets, key, head). A client uploads only the entries its
// samples selected (a keyed update), so the round's aggregate is a per-tensor mean
// (KeyedRoundAggregator); the server step is FedAvg's, with its optimizer options.
//
// With a stateless server step (sgd without momentum or momentum clipping, the default)
// a tensor no client sent keeps its value bit for bit. With momentum or adam/yogi such a
// tensor still moves by its optimizer state, as every parameter of a FedAvgM/FedAdam
// model does when its mean delta is 0.
//
// The coordinator's update policy treats keyed uploads like dense ones (the weight policy
// and cap, in async mode the staleness weight, and coordinator.norm_bound over the L2
// norm of the values sent); coordinator.async.gap_penalty scales dense uploads only.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "agg/keyed_accumulator.h"
#include "algorithms/fedavg/fedavg_strategy.h"
#include "fl/strategy.h"

namespace fl::internal {

struct FedInsOptions {
  // The server step and the local training sent to clients; fedavg.name is "fedins".
  // The train's upload encoding is the value encoding of the keyed uploads.
  FedAvgOptions fedavg;
  int64_t entries = 10;           // M, pool entries; [1, 1024]
  int64_t top_k = 3;              // entries selected per instance; [1, entries]
  double lambda = 0.1;            // weight of the key-similarity loss; [0, 1]
  bool batch_shared_ssf = false;  // one SSF per batch (the original reference), not per instance
  // An entry selected by a smaller share of a client's examples is not uploaded: it
  // would enter the per-tensor mean with that small weight. Trades a little of the
  // mean for bytes; [0, 1], 0 uploads every selected entry.
  double upload_min_fraction = 0;
  KeyedRule aggregate = KeyedRule::kSelected;
};

// InvalidArgument naming the config key at fault.
Status ValidateFedInsOptions(const FedInsOptions& options);

// Called by one thread at a time (the coordinator's lock), as Strategy requires.
class FedInsStrategy : public Strategy {
 public:
  // REQUIRES: ValidateFedInsOptions(options).ok().
  explicit FedInsStrategy(FedInsOptions options);

  std::string_view name() const override { return step_.name(); }
  // FedAvg's config plus TrainConfig::extra "fedins.entries", "fedins.top_k" (ints),
  // "fedins.lambda", "fedins.upload_min_fraction" (doubles) and "fedins.batch_shared_ssf"
  // (bool).
  TrainConfig ConfigureRound(uint64_t round) const override;
  // A KeyedRoundAggregator with the configured rule.
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet& global,
                                                      uint64_t round) override;
  // FedAvgStrategy::ApplyRound's step and errors.
  Status ApplyRound(AggregateReport report, ParamSet* global) override;
  std::string SaveState() const override { return step_.SaveState(); }
  Status LoadState(std::string_view state) override { return step_.LoadState(state); }
  std::map<std::string, double> LastRoundStats() const override { return step_.LastRoundStats(); }

  const FedInsOptions& options() const { return options_; }

 private:
  FedInsOptions options_;
  FedAvgStrategy step_;  // the server optimizer and the local-training config
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDINS_FEDINS_STRATEGY_H_
