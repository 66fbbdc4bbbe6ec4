#include "algorithms/registry.h"

#include "algorithms/fedavg/register.h"
#include "algorithms/ferret/register.h"

namespace fl::internal {

void RegisterBuiltinAlgorithms(AlgorithmRegistry* registry) {
  RegisterFedAvgFamily(registry);  // fedavg, fedprox, fedadam
  RegisterFerret(registry);
}

Status AlgorithmRegistry::Register(AlgorithmEntry entry) {
  if (entry.name.empty() || !entry.create_strategy || !entry.create_learner) {
    return Status::InvalidArgument("AlgorithmRegistry: an entry needs a name and both factories");
  }
  if (Find(entry.name) != nullptr) {
    return Status::AlreadyExists("algorithm '" + entry.name + "' is already registered");
  }
  entries_.push_back(std::move(entry));
  return Status::Ok();
}

const AlgorithmEntry* AlgorithmRegistry::Find(std::string_view name) const {
  for (const AlgorithmEntry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::vector<std::string> AlgorithmRegistry::Names() const {
  std::vector<std::string> names;
  for (const AlgorithmEntry& e : entries_) names.push_back(e.name);
  return names;
}

const AlgorithmRegistry& BuiltinAlgorithms() {
  static const AlgorithmRegistry* const registry = [] {
    auto* r = new AlgorithmRegistry();
    RegisterBuiltinAlgorithms(r);
    return r;
  }();
  return *registry;
}

nlohmann::json AlgorithmConfigDefaults() {
  nlohmann::json defaults = {
      {"algorithm",
       {
           {"name", "fedavg"},
           {"server_optimizer", "sgd"},
           {"server_lr", 1.0},
           {"server_momentum", 0.0},
           {"beta1", 0.9},
           {"beta2", 0.99},
           {"tau", 1e-3},
       }},
      {"train",
       {
           {"local_epochs", 1},
           {"local_steps", 0},
           {"batch_size", 32},
           {"lr", 0.05},
           {"momentum", 0.0},
           {"weight_decay", 0.0},
           {"prox_mu", 0.0},
           {"upload_encoding", "f32"},
       }},
  };
  for (const AlgorithmEntry& e : BuiltinAlgorithms().entries()) defaults.update(e.config_defaults, true);
  return defaults;
}

Result<std::unique_ptr<Strategy>> CreateStrategy(const Config& config) {
  const std::string name = config.GetString("algorithm.name");
  const AlgorithmEntry* entry = BuiltinAlgorithms().Find(name);
  if (entry == nullptr) {
    std::string known;
    for (const std::string& n : BuiltinAlgorithms().Names()) known += (known.empty() ? "" : ", ") + n;
    return Status::InvalidArgument("algorithm.name: unknown algorithm '" + name + "' (known: " + known + ")");
  }
  return entry->create_strategy(config);
}

Result<std::unique_ptr<Learner>> CreateLearner(const std::string& algorithm_name) {
  const AlgorithmEntry* entry = BuiltinAlgorithms().Find(algorithm_name);
  if (entry == nullptr) return Status::NotFound("no learner for algorithm '" + algorithm_name + "'");
  return entry->create_learner();
}

Status ApplyReplayRecord(const std::string& algorithm_name, std::string_view record,
                         ParamSet* model) {
  const AlgorithmEntry* entry = BuiltinAlgorithms().Find(algorithm_name);
  if (entry == nullptr) return Status::NotFound("no replayer for algorithm '" + algorithm_name + "'");
  if (!entry->apply_replay) {
    return Status::Unimplemented("algorithm '" + algorithm_name + "' has no downlink by replay");
  }
  return entry->apply_replay(record, model);
}

}  // namespace fl::internal
