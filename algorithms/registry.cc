#include "algorithms/registry.h"

#include <cstdlib>
#include <utility>
#include <variant>

#include "algorithms/fedavg/register.h"
#include "algorithms/fedins/register.h"
#include "algorithms/ferret/register.h"
#include "algorithms/sfprompt/register.h"
#include "core/logging.h"

namespace fl::internal {
namespace {

nlohmann::json ToJson(const ConfigValue& value) {
  return std::visit([](const auto& v) { return nlohmann::json(v); }, value);
}

// "section.name" -> defaults[section][name]. Keys were validated at registration.
void AddKeys(const std::vector<ConfigKey>& keys, nlohmann::json* defaults) {
  for (const ConfigKey& k : keys) {
    const size_t dot = k.key.find('.');
    (*defaults)[k.key.substr(0, dot)][k.key.substr(dot + 1)] = ToJson(k.default_value);
  }
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& n : names) joined += (joined.empty() ? "" : ", ") + n;
  return joined;
}

Result<std::shared_ptr<const AlgorithmDefinition>> FindByConfig(const Config& config) {
  const std::string name = config.GetString("algorithm.name");
  std::shared_ptr<const AlgorithmDefinition> d = FindAlgorithm(name);
  if (d == nullptr) {
    return Status::InvalidArgument("algorithm.name: unknown algorithm '" + name + "' (known: " +
                                   JoinNames(RegisteredAlgorithms()) + ")");
  }
  return d;
}

}  // namespace

Status AlgorithmRegistry::Register(AlgorithmDefinition definition) {
  FL_RETURN_IF_ERROR(ValidateAlgorithmDefinition(definition));
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& d : definitions_) {
    if (d->name == definition.name) {
      return Status::AlreadyExists("algorithm '" + definition.name + "' is already registered");
    }
  }
  for (const ConfigKey& k : definition.config_keys) {
    // Shared keys were checked to match the SDK's own; every other key has one owner, so
    // two algorithms cannot give one key two types or defaults.
    if (FindSharedAlgorithmKey(k.key) != nullptr) continue;
    const AlgorithmDefinition* owner = KeyOwnerLocked(k.key);
    if (owner != nullptr) {
      return Status::AlreadyExists("algorithm '" + definition.name + "': config key " + k.key +
                                   " is already declared by algorithm '" + owner->name + "'");
    }
  }
  definitions_.push_back(std::make_shared<const AlgorithmDefinition>(std::move(definition)));
  return Status::Ok();
}

const AlgorithmDefinition* AlgorithmRegistry::KeyOwnerLocked(std::string_view key) const {
  for (const auto& d : definitions_) {
    for (const ConfigKey& k : d->config_keys) {
      if (k.key == key) return d.get();
    }
  }
  return nullptr;
}

std::shared_ptr<const AlgorithmDefinition> AlgorithmRegistry::Find(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& d : definitions_) {
    if (d->name == name) return d;
  }
  return nullptr;
}

std::vector<std::string> AlgorithmRegistry::Names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const auto& d : definitions_) names.push_back(d->name);
  return names;
}

std::vector<std::shared_ptr<const AlgorithmDefinition>> AlgorithmRegistry::Definitions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return definitions_;
}

Status RegisterBuiltinAlgorithms(AlgorithmRegistry* registry) {
  FL_RETURN_IF_ERROR(RegisterFedAvgFamily(registry));  // fedavg, fedprox, fedadam
  FL_RETURN_IF_ERROR(RegisterFerret(registry));
  FL_RETURN_IF_ERROR(RegisterFedIns(registry));
  return RegisterSfPrompt(registry);
}

AlgorithmRegistry& GlobalAlgorithmRegistry() {
  // Leaked on purpose: algorithms may be looked up from threads still running while
  // static destructors run at exit.
  static AlgorithmRegistry* const registry = [] {
    auto* r = new AlgorithmRegistry();
    Status s = RegisterBuiltinAlgorithms(r);
    if (!s.ok()) {
      FL_LOG(ERROR) << "a built-in algorithm failed to register: " << s.ToString();
      std::abort();
    }
    return r;
  }();
  return *registry;
}

nlohmann::json AlgorithmConfigDefaults() {
  nlohmann::json defaults = nlohmann::json::object();
  AddKeys(SharedAlgorithmKeys(), &defaults);
  for (const std::string& name : RegisteredAlgorithms()) {
    std::shared_ptr<const AlgorithmDefinition> d = FindAlgorithm(name);
    if (d != nullptr) AddKeys(d->config_keys, &defaults);
  }
  return defaults;
}

Status ValidateAlgorithmConfig(const Config& config) {
  FL_ASSIGN_OR_RETURN(std::shared_ptr<const AlgorithmDefinition> d, FindByConfig(config));
  return d->validate ? d->validate(ConfigView(config)) : Status::Ok();
}

Result<std::unique_ptr<Strategy>> CreateStrategy(const Config& config) {
  FL_ASSIGN_OR_RETURN(std::shared_ptr<const AlgorithmDefinition> d, FindByConfig(config));
  const ConfigView view(config);
  if (d->validate) FL_RETURN_IF_ERROR(d->validate(view));
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, d->create_strategy(view));
  if (strategy == nullptr || strategy->name() != d->name) {
    return Status::Internal("algorithm '" + d->name + "': create_strategy must return a strategy "
                            "whose name() is '" + d->name + "'");
  }
  return strategy;
}

Result<std::unique_ptr<Learner>> CreateLearner(const std::string& algorithm_name) {
  std::shared_ptr<const AlgorithmDefinition> d = FindAlgorithm(algorithm_name);
  if (d == nullptr) return Status::NotFound("no learner for algorithm '" + algorithm_name + "'");
  std::unique_ptr<Learner> learner = d->create_learner();
  if (learner == nullptr) {
    return Status::Internal("algorithm '" + algorithm_name + "': create_learner returned null");
  }
  return learner;
}

Status ApplyReplayRecord(const std::string& algorithm_name, std::string_view record,
                         ParamSet* model) {
  std::shared_ptr<const AlgorithmDefinition> d = FindAlgorithm(algorithm_name);
  if (d == nullptr) return Status::NotFound("no replayer for algorithm '" + algorithm_name + "'");
  if (!d->apply_replay) {
    return Status::Unimplemented("algorithm '" + algorithm_name + "' has no downlink by replay");
  }
  return d->apply_replay(record, model);
}

}  // namespace fl::internal

namespace fl {

Status RegisterAlgorithm(AlgorithmDefinition definition) {
  return internal::GlobalAlgorithmRegistry().Register(std::move(definition));
}

std::vector<std::string> RegisteredAlgorithms() {
  return internal::GlobalAlgorithmRegistry().Names();
}

std::shared_ptr<const AlgorithmDefinition> FindAlgorithm(std::string_view name) {
  return internal::GlobalAlgorithmRegistry().Find(name);
}

}  // namespace fl
