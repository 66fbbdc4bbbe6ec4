#include "simulations/byzantine.h"

#include <cmath>
#include <cstdio>
#include <numeric>
#include <span>

#include "data/sampling.h"

namespace fl::internal {
namespace {

constexpr uint64_t kChooseTag = 0xB1A5'7E11'0000'0001ULL;  // separates the attacker draw
constexpr uint64_t kNoiseTag = 0xB1A5'7E11'0000'0002ULL;   // from other uses of the seeds

Status Bad(const char* key, const std::string& why) {
  return Status::InvalidArgument(std::string(key) + " " + why);
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

}  // namespace

Result<ByzantineAttack> ParseByzantineAttack(std::string_view name) {
  if (name == "sign_flip") return ByzantineAttack::kSignFlip;
  if (name == "gaussian") return ByzantineAttack::kGaussian;
  if (name == "inflated_weight") return ByzantineAttack::kInflatedWeight;
  if (name == "label_flip") return ByzantineAttack::kLabelFlip;
  if (name == "constant") return ByzantineAttack::kConstant;
  return Status::InvalidArgument("unknown attack '" + std::string(name) +
                                 "' (expected sign_flip, gaussian, inflated_weight, label_flip "
                                 "or constant)");
}

std::string_view ByzantineAttackName(ByzantineAttack attack) {
  switch (attack) {
    case ByzantineAttack::kSignFlip: return "sign_flip";
    case ByzantineAttack::kGaussian: return "gaussian";
    case ByzantineAttack::kInflatedWeight: return "inflated_weight";
    case ByzantineAttack::kLabelFlip: return "label_flip";
    case ByzantineAttack::kConstant: return "constant";
  }
  return "?";
}

nlohmann::json ByzantineConfigDefaults() {
  return {{"byzantine",
           {{"fraction", 0.0},
            {"attack", "sign_flip"},
            {"scale", 1.0},
            {"sigma", 1.0},
            {"weight_factor", 10.0},
            {"constant", 1.0}}}};
}

Result<ByzantineOptions> ByzantineOptionsFromConfig(const Config& config) {
  ByzantineOptions o;
  o.fraction = config.GetDouble("byzantine.fraction");
  if (!(std::isfinite(o.fraction) && o.fraction >= 0 && o.fraction <= 1)) {
    return Bad("byzantine.fraction", "must be in [0, 1]");
  }
  Result<ByzantineAttack> attack = ParseByzantineAttack(config.GetString("byzantine.attack"));
  if (!attack.ok()) return attack.status().WithContext("byzantine.attack");
  o.attack = *attack;
  o.scale = config.GetDouble("byzantine.scale");
  if (!std::isfinite(o.scale)) return Bad("byzantine.scale", "must be finite");
  o.sigma = config.GetDouble("byzantine.sigma");
  if (!(std::isfinite(o.sigma) && o.sigma >= 0)) return Bad("byzantine.sigma", "must be >= 0");
  o.weight_factor = config.GetDouble("byzantine.weight_factor");
  if (!(std::isfinite(o.weight_factor) && o.weight_factor > 0)) {
    return Bad("byzantine.weight_factor", "must be > 0");
  }
  o.constant = config.GetDouble("byzantine.constant");
  if (!std::isfinite(o.constant)) return Bad("byzantine.constant", "must be finite");
  return o;
}

std::vector<bool> ChooseByzantineClients(size_t num_clients, double fraction, uint64_t seed) {
  std::vector<bool> attackers(num_clients, false);
  const size_t m = std::min(
      num_clients, static_cast<size_t>(std::llround(fraction * static_cast<double>(num_clients))));
  if (m == 0) return attackers;
  std::vector<size_t> order(num_clients);
  std::iota(order.begin(), order.end(), 0);
  SeededRng rng(seed ^ kChooseTag);
  rng.Shuffle(std::span<size_t>(order));
  for (size_t i = 0; i < m; ++i) attackers[order[i]] = true;
  return attackers;
}

Status ByzantineTrainer::SetParameters(const ParamSet& params) {
  FL_RETURN_IF_ERROR(inner_->SetParameters(params));
  anchor_ = params;
  return Status::Ok();
}

Result<TrainStats> ByzantineTrainer::Train(const TrainConfig& config, const CancelToken& cancel) {
  FL_ASSIGN_OR_RETURN(TrainStats stats, inner_->Train(config, cancel));
  seed_ = config.seed;
  if (options_.attack == ByzantineAttack::kInflatedWeight) {
    stats.dataset_size = static_cast<uint64_t>(
        std::llround(static_cast<double>(stats.dataset_size) * options_.weight_factor));
    if (stats.dataset_size == 0) stats.dataset_size = 1;
  }
  return stats;
}

Status ByzantineTrainer::GetParameters(ParamSet* out) {
  FL_RETURN_IF_ERROR(inner_->GetParameters(out));
  if (options_.attack == ByzantineAttack::kInflatedWeight ||
      options_.attack == ByzantineAttack::kLabelFlip) {
    return Status::Ok();
  }
  if (anchor_.size() != out->size()) {
    return Status::FailedPrecondition("ByzantineTrainer: GetParameters before SetParameters");
  }
  float* w = out->data();
  const float* g = anchor_.data();
  const size_t n = out->size();
  switch (options_.attack) {
    case ByzantineAttack::kSignFlip:
      for (size_t i = 0; i < n; ++i) {
        w[i] = static_cast<float>(g[i] - options_.scale * (static_cast<double>(w[i]) - g[i]));
      }
      break;
    case ByzantineAttack::kGaussian: {
      SeededRng rng(seed_ ^ kNoiseTag);
      for (size_t i = 0; i < n; ++i) {
        w[i] = static_cast<float>(g[i] + options_.sigma * rng.Normal());
      }
      break;
    }
    case ByzantineAttack::kConstant:
      for (size_t i = 0; i < n; ++i) w[i] = static_cast<float>(g[i] + options_.constant);
      break;
    default:
      break;
  }
  return Status::Ok();
}

ByzantineClients::ByzantineClients(const ByzantineOptions& options, size_t num_clients,
                                   uint64_t seed, int workers)
    : options_(options),
      num_clients_(num_clients),
      attackers_(ChooseByzantineClients(num_clients, options.fraction, seed)) {
  for (bool a : attackers_) num_attackers_ += a ? 1 : 0;
  for (int w = 0; w < workers; ++w) wrappers_.push_back(std::make_unique<ByzantineTrainer>(options));
}

Result<Trainer*> ByzantineClients::Bind(WorkloadWorker& worker_state, int worker, size_t client) {
  if (!attacks(client)) return worker_state.BindClient(client);
  if (options_.attack == ByzantineAttack::kLabelFlip) {
    return worker_state.BindClientFlippedLabels(client);
  }
  FL_ASSIGN_OR_RETURN(Trainer* honest, worker_state.BindClient(client));
  ByzantineTrainer* wrapper = wrappers_[static_cast<size_t>(worker)].get();
  wrapper->Bind(honest);
  return static_cast<Trainer*>(wrapper);
}

std::string ByzantineClients::Describe() const {
  std::string s = std::to_string(num_attackers_) + " of " + std::to_string(num_clients_) +
                  " clients: " + std::string(ByzantineAttackName(options_.attack));
  switch (options_.attack) {
    case ByzantineAttack::kSignFlip: s += " (scale " + Num(options_.scale) + ")"; break;
    case ByzantineAttack::kGaussian: s += " (sigma " + Num(options_.sigma) + ")"; break;
    case ByzantineAttack::kInflatedWeight: s += " (x" + Num(options_.weight_factor) + ")"; break;
    case ByzantineAttack::kConstant: s += " (" + Num(options_.constant) + ")"; break;
    case ByzantineAttack::kLabelFlip: break;
  }
  return s;
}

}  // namespace fl::internal
