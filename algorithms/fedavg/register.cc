#include "algorithms/fedavg/register.h"

#include <climits>

#include "algorithms/fedavg/fedavg_learner.h"

namespace fl::internal {
namespace {

Result<int> IntInRange(const Config& config, const char* key) {
  const int64_t v = config.GetInt(key);
  if (v < INT_MIN || v > INT_MAX) return Status::InvalidArgument(std::string(key) + " is out of range");
  return static_cast<int>(v);
}

AlgorithmEntry Entry(std::string name, std::string summary) {
  AlgorithmEntry e;
  e.name = name;
  e.summary = std::move(summary);
  e.create_strategy = [name](const Config& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FedAvgOptions options, FedAvgOptionsFromConfig(config, name));
    return std::unique_ptr<Strategy>(std::make_unique<FedAvgStrategy>(std::move(options)));
  };
  e.create_learner = [] { return std::make_unique<FedAvgLearner>(); };
  return e;
}

}  // namespace

Result<FedAvgOptions> FedAvgOptionsFromConfig(const Config& config, std::string_view name) {
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
  TrainConfig& t = o.train;
  FL_ASSIGN_OR_RETURN(t.local_epochs, IntInRange(config, "train.local_epochs"));
  FL_ASSIGN_OR_RETURN(t.local_steps, IntInRange(config, "train.local_steps"));
  FL_ASSIGN_OR_RETURN(t.batch_size, IntInRange(config, "train.batch_size"));
  t.lr = config.GetDouble("train.lr");
  t.momentum = config.GetDouble("train.momentum");
  t.weight_decay = config.GetDouble("train.weight_decay");
  t.prox_mu = config.GetDouble("train.prox_mu");
  Result<Encoding> encoding = ParseDenseEncoding(config.GetString("train.upload_encoding"));
  if (!encoding.ok()) return encoding.status().WithContext("train.upload_encoding");
  t.upload_encoding = *encoding;
  if (name == "fedprox" && !(t.prox_mu > 0)) {
    return Status::InvalidArgument("train.prox_mu must be > 0 for fedprox");
  }
  Status valid = ValidateFedAvgOptions(o);
  if (!valid.ok()) {
    return Status::InvalidArgument(valid.message() + " (algorithm " + std::string(name) + ")");
  }
  return o;
}

void RegisterFedAvgFamily(AlgorithmRegistry* registry) {
  (void)registry->Register(Entry("fedavg", "FedAvg: weighted mean of client deltas (server optimizer configurable)"));
  (void)registry->Register(Entry("fedprox", "FedProx: FedAvg with a proximal term train.prox_mu > 0 on clients"));
  (void)registry->Register(Entry("fedadam", "FedAdam: FedAvg with the adam server optimizer (try algorithm.server_lr=0.01)"));
}

}  // namespace fl::internal
