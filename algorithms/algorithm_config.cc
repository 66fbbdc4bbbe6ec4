// What an algorithm may declare (its config keys) and read (fl::AlgorithmConfig).

#include <array>
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>

#include "algorithms/option_checks.h"
#include "algorithms/registry.h"
#include "core/config.h"
#include "fl/algorithm.h"

namespace fl::internal {
namespace {

// Sections the SDK's binaries own (server/server_main.cc, client/client_main.cc,
// simulations/simulator.cc): an algorithm adding keys there could collide with a future
// SDK key or change a binary's meaning.
constexpr std::array<std::string_view, 10> kSdkSections = {
    "run", "coordinator", "model", "data", "sim", "server", "client", "lm", "pretrain",
    "byzantine"};
// Sections every algorithm reads; only the SDK adds keys to them.
constexpr std::array<std::string_view, 2> kSharedSections = {"algorithm", "train"};

template <size_t N>
bool Contains(const std::array<std::string_view, N>& list, std::string_view s) {
  for (std::string_view x : list) {
    if (x == s) return true;
  }
  return false;
}

bool IsIdentifier(std::string_view s, bool allow_dash) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                    (allow_dash && c == '-');
    if (!ok) return false;
  }
  return true;
}

Status CheckKey(const std::string& algorithm, const ConfigKey& k) {
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("algorithm '" + algorithm + "': config key '" + k.key + "' " + why);
  };
  const size_t dot = k.key.find('.');
  if (dot == std::string::npos || !IsIdentifier(k.key.substr(0, dot), false) ||
      !IsIdentifier(k.key.substr(dot + 1), false)) {
    return bad("must be section.name, each part [a-z0-9_]{1,64}");
  }
  const std::string section = k.key.substr(0, dot);
  if (Contains(kSdkSections, section)) {
    return bad("is in the SDK's own section '" + section + "'; use a section of the algorithm's own");
  }
  if (!Contains(kSharedSections, section)) return Status::Ok();
  const ConfigKey* shared = FindSharedAlgorithmKey(k.key);
  if (shared == nullptr) {
    return bad("adds to the section '" + section + "', which every algorithm shares and only "
               "the SDK extends; use a section of the algorithm's own");
  }
  if (!(shared->default_value == k.default_value)) {
    return bad("is shared by every algorithm: declare it with the SDK's type and default, or "
               "not at all");
  }
  return Status::Ok();
}

Result<int> IntKey(const AlgorithmConfig& config, const char* key) {
  const int64_t v = config.GetInt(key);
  if (v < INT_MIN || v > INT_MAX) return BadOption(key, "is out of range");
  return static_cast<int>(v);
}

}  // namespace

const std::vector<ConfigKey>& SharedAlgorithmKeys() {
  static const std::vector<ConfigKey>* const keys = new std::vector<ConfigKey>{
      {"algorithm.name", std::string("fedavg"), "the registered algorithm to run"},
      {"algorithm.server_optimizer", std::string("sgd"), "FedAvg family: sgd | adam | yogi"},
      {"algorithm.server_lr", 1.0, "FedAvg family: server step on the mean delta"},
      {"algorithm.server_momentum", 0.0, "FedAvg family: server momentum (sgd)"},
      {"algorithm.beta1", 0.9, "FedAvg family: adam/yogi first moment decay"},
      {"algorithm.beta2", 0.99, "FedAvg family: adam/yogi second moment decay"},
      {"algorithm.tau", 1e-3, "FedAvg family: adam/yogi adaptivity"},
      {"algorithm.momentum_clip", 0.0,
       "FedAvg family: per-tensor L2 clip of the server momentum (CO2's phi); 0: off"},
      {"algorithm.momentum_clip_adaptive", 0.0,
       "FedAvg family: clip each tensor's momentum at c x the running mean of its norm; 0: off"},
      {"algorithm.aggregator", std::string("mean"),
       "FedAvg family: mean | median | trimmed_mean | multi_krum (robust rules hold the "
       "round's updates: n * d * 4 bytes)"},
      {"algorithm.trim_beta", 0.1, "trimmed_mean: fraction cut at each end, [0, 0.5)"},
      {"algorithm.krum_f", int64_t{1}, "multi_krum: Byzantine updates assumed, >= 0"},
      {"algorithm.robust_max_updates", int64_t{100},
       "robust aggregators: updates held per round; more are refused (ResourceExhausted)"},
      {"train.local_epochs", int64_t{1}, "passes over local data when local_steps is 0"},
      {"train.local_steps", int64_t{0}, "if > 0, exactly this many minibatch steps"},
      {"train.batch_size", int64_t{32}, "local minibatch size"},
      {"train.lr", 0.05, "local learning rate"},
      {"train.momentum", 0.0, "local SGD momentum"},
      {"train.weight_decay", 0.0, "local weight decay"},
      {"train.prox_mu", 0.0, "FedProx proximal term (mu/2)||w - w_global||^2"},
      {"train.upload_encoding", std::string("f32"), "dense uploads: f32 | f16 | bf16"},
  };
  return *keys;
}

const ConfigKey* FindSharedAlgorithmKey(std::string_view key) {
  for (const ConfigKey& k : SharedAlgorithmKeys()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

Status ValidateAlgorithmDefinition(const AlgorithmDefinition& d) {
  if (!IsIdentifier(d.name, true)) {
    return Status::InvalidArgument("algorithm name '" + d.name + "' must match [a-z0-9_-]{1,64}");
  }
  if (!d.create_strategy || !d.create_learner) {
    return Status::InvalidArgument("algorithm '" + d.name +
                                   "' needs both create_strategy and create_learner");
  }
  for (size_t i = 0; i < d.config_keys.size(); ++i) {
    FL_RETURN_IF_ERROR(CheckKey(d.name, d.config_keys[i]));
    for (size_t j = 0; j < i; ++j) {
      if (d.config_keys[j].key == d.config_keys[i].key) {
        return Status::InvalidArgument("algorithm '" + d.name + "': config key '" +
                                       d.config_keys[i].key + "' is declared twice");
      }
    }
  }
  return Status::Ok();
}

bool ConfigView::Has(std::string_view key) const { return config_->Has(key); }
int64_t ConfigView::GetInt(std::string_view key) const { return config_->GetInt(key); }
double ConfigView::GetDouble(std::string_view key) const { return config_->GetDouble(key); }
std::string ConfigView::GetString(std::string_view key) const { return config_->GetString(key); }
bool ConfigView::GetBool(std::string_view key) const { return config_->GetBool(key); }

}  // namespace fl::internal

namespace fl {

Result<TrainConfig> AlgorithmConfig::LocalTraining() const {
  TrainConfig t;
  FL_ASSIGN_OR_RETURN(t.local_epochs, internal::IntKey(*this, "train.local_epochs"));
  FL_ASSIGN_OR_RETURN(t.local_steps, internal::IntKey(*this, "train.local_steps"));
  FL_ASSIGN_OR_RETURN(t.batch_size, internal::IntKey(*this, "train.batch_size"));
  t.lr = GetDouble("train.lr");
  t.momentum = GetDouble("train.momentum");
  t.weight_decay = GetDouble("train.weight_decay");
  t.prox_mu = GetDouble("train.prox_mu");
  Result<Encoding> encoding = ParseDenseEncoding(GetString("train.upload_encoding"));
  if (!encoding.ok()) return encoding.status().WithContext("train.upload_encoding");
  t.upload_encoding = *encoding;
  FL_RETURN_IF_ERROR(internal::ValidateLocalTraining(t));
  return t;
}

}  // namespace fl
