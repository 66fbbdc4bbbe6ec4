#include "algorithms/fedins/fedins_strategy.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "algorithms/fedins/keyed_round_aggregator.h"
#include "algorithms/option_checks.h"

namespace fl::internal {

Status ValidateFedInsOptions(const FedInsOptions& o) {
  if (o.entries < 1 || o.entries > 1024) return BadOption("fedins.entries", "must be in [1, 1024]");
  if (o.top_k < 1 || o.top_k > o.entries) {
    return BadOption("fedins.top_k",
                     "must be in [1, fedins.entries = " + std::to_string(o.entries) + "]");
  }
  if (!(std::isfinite(o.lambda) && o.lambda >= 0 && o.lambda <= 1)) {
    return BadOption("fedins.lambda", "must be in [0, 1]");
  }
  if (!(o.upload_min_fraction >= 0 && o.upload_min_fraction <= 1)) {
    return BadOption("fedins.upload_min_fraction", "must be in [0, 1]");
  }
  if (o.fedavg.aggregation.rule != AggregationRule::kMean) {
    // The robust rules compare dense deltas coordinate by coordinate; keyed updates are
    // folded per tensor, so they are refused rather than silently ignored.
    return BadOption("algorithm.aggregator",
                     "must be mean for fedins (keyed updates are aggregated per tensor by "
                     "fedins.aggregate)");
  }
  return ValidateFedAvgOptions(o.fedavg);
}

FedInsStrategy::FedInsStrategy(FedInsOptions options)
    : options_(std::move(options)), step_(options_.fedavg) {}

TrainConfig FedInsStrategy::ConfigureRound(uint64_t round) const {
  TrainConfig config = step_.ConfigureRound(round);
  config.extra["fedins.entries"] = options_.entries;
  config.extra["fedins.top_k"] = options_.top_k;
  config.extra["fedins.lambda"] = options_.lambda;
  config.extra["fedins.batch_shared_ssf"] = options_.batch_shared_ssf;
  config.extra["fedins.upload_min_fraction"] = options_.upload_min_fraction;
  return config;
}

std::unique_ptr<RoundAggregator> FedInsStrategy::NewRoundAggregator(const ParamSet& global,
                                                                    uint64_t round) {
  return std::make_unique<KeyedRoundAggregator>(global.shared_layout(), round, options_.aggregate);
}

namespace {

// True if the server step is w += lr * d with no state, so a zero delta is no step.
bool StatelessStep(const FedAvgOptions& o) {
  return o.server_optimizer == ServerOptimizer::kSgd && o.server_momentum == 0 &&
         o.momentum_clip == 0 && o.momentum_clip_adaptive == 0;
}

// The values of the tensors whose mean delta is all +0 (nobody weighed in on them), by
// tensor index.
std::vector<std::pair<size_t, std::vector<float>>> UnsentTensors(const ParamSet& delta,
                                                                 const ParamSet& global) {
  std::vector<std::pair<size_t, std::vector<float>>> out;
  for (size_t t = 0; t < delta.layout().num_tensors(); ++t) {
    std::span<const float> d = delta.tensor(t);
    const bool zero =
        std::all_of(d.begin(), d.end(), [](float x) { return std::bit_cast<uint32_t>(x) == 0; });
    if (!zero) continue;
    std::span<const float> g = global.tensor(t);
    out.emplace_back(t, std::vector<float>(g.begin(), g.end()));
  }
  return out;
}

}  // namespace

Status FedInsStrategy::ApplyRound(AggregateReport report, ParamSet* global) {
  if (!StatelessStep(options_.fedavg) ||
      report.mean_delta.layout().hash() != global->layout().hash()) {
    return step_.ApplyRound(std::move(report), global);
  }
  // w + lr * 0 is w for every float but -0, which becomes +0: restore the unsent tensors
  // so that they keep their bits exactly.
  auto unsent = UnsentTensors(report.mean_delta, *global);
  FL_RETURN_IF_ERROR(step_.ApplyRound(std::move(report), global));
  for (const auto& [t, values] : unsent) {
    std::copy(values.begin(), values.end(), global->tensor(t).begin());
  }
  return Status::Ok();
}

}  // namespace fl::internal
