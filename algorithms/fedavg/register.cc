#include "algorithms/fedavg/register.h"

#include <utility>

#include "fl/algorithm.h"

namespace fl::internal {
namespace {

AlgorithmDefinition Definition(std::string name, std::string summary) {
  AlgorithmDefinition d;
  d.name = name;
  d.summary = std::move(summary);
  d.validate = [name](const AlgorithmConfig& config) {
    return FedAvgOptionsFromConfig(config, name).status();
  };
  d.create_strategy = [name](const AlgorithmConfig& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FedAvgOptions options,
                        FedAvgOptionsFromConfig(config, name));
    return std::unique_ptr<Strategy>(std::make_unique<FedAvgStrategy>(std::move(options)));
  };
  d.create_learner = [] { return NewDenseDeltaLearner(); };
  return d;
}

}  // namespace

Result<FedAvgOptions> FedAvgOptionsFromConfig(const AlgorithmConfig& config, std::string_view name) {
  FedAvgOptions o;
  o.name = std::string(name);
  Result<ServerOptimizer> optimizer =
      ParseServerOptimizer(config.GetString("algorithm.server_optimizer"));
  if (!optimizer.ok()) return optimizer.status().WithContext("algorithm.server_optimizer");
  o.server_optimizer = *optimizer;
  if (name == "fedadam") o.server_optimizer = ServerOptimizer::kAdam;
  o.server_lr = config.GetDouble("algorithm.server_lr");
  o.server_momentum = config.GetDouble("algorithm.server_momentum");
  o.beta1 = config.GetDouble("algorithm.beta1");
  o.beta2 = config.GetDouble("algorithm.beta2");
  o.tau = config.GetDouble("algorithm.tau");
  o.momentum_clip = config.GetDouble("algorithm.momentum_clip");
  o.momentum_clip_adaptive = config.GetDouble("algorithm.momentum_clip_adaptive");
  FL_ASSIGN_OR_RETURN(o.aggregation, AggregationOptionsFromConfig(config));
  FL_ASSIGN_OR_RETURN(o.train, config.LocalTraining());
  if (name == "fedprox" && !(o.train.prox_mu > 0)) {
    return Status::InvalidArgument("train.prox_mu must be > 0 for fedprox");
  }
  Status valid = ValidateFedAvgOptions(o);
  if (!valid.ok()) {
    return Status::InvalidArgument(valid.message() + " (algorithm " + std::string(name) + ")");
  }
  return o;
}

Status RegisterFedAvgFamily(AlgorithmRegistry* registry) {
  FL_RETURN_IF_ERROR(registry->Register(Definition(
      "fedavg", "FedAvg: weighted mean of client deltas (server optimizer configurable)")));
  FL_RETURN_IF_ERROR(registry->Register(Definition(
      "fedprox", "FedProx: FedAvg with a proximal term train.prox_mu > 0 on clients")));
  return registry->Register(Definition(
      "fedadam", "FedAdam: FedAvg with the adam server optimizer (try algorithm.server_lr=0.01)"));
}

}  // namespace fl::internal
