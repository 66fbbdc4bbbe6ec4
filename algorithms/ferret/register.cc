#include "algorithms/ferret/register.h"

#include <charconv>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "algorithms/ferret/ferret_learner.h"
#include "algorithms/ferret/ferret_replay.h"

namespace fl::internal {
namespace {

Status Bad(std::string_view key, const std::string& why) {
  return Status::InvalidArgument(std::string(key) + " " + why);
}

Result<int64_t> IntInRange(const Config& config, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = config.GetInt(key);
  if (v < lo || v > hi) {
    return Bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

// The enum value named by the string at `key`; InvalidArgument listing the names
// otherwise.
template <typename E>
Result<E> Choice(const Config& config, const char* key,
                 std::initializer_list<std::pair<std::string_view, E>> names) {
  const std::string text = config.GetString(key);
  std::string expected;
  for (const auto& [name, value] : names) {
    if (text == name) return value;
    expected += (expected.empty() ? "" : " | ") + std::string(name);
  }
  return Bad(key, "must be " + expected + ", got '" + text + "'");
}

Result<ferret::BlockPlanKind> ParsePlan(std::string_view text, uint64_t* block_size) {
  constexpr std::string_view kFixed = "fixed:";
  if (text == "reference") return ferret::BlockPlanKind::kReference;
  if (text.substr(0, kFixed.size()) == kFixed) {
    std::string_view number = text.substr(kFixed.size());
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), n);
    if (ec == std::errc() && end == number.data() + number.size() && n > 0) {
      *block_size = n;
      return ferret::BlockPlanKind::kFixedSize;
    }
  }
  return Bad("ferret.block_plan", "must be reference or fixed:<n> with n > 0, got '" +
                                      std::string(text) + "'");
}

}  // namespace

nlohmann::json FerretConfigDefaults() {
  return {
      {"ferret",
       {
           {"num_bases", 200},               // K, the shared pool of bases
           {"seed_policy", "fixed"},         // fixed (one pool per run) | fresh (per round)
           {"seed", 0},                      // pool seed; 0: run.seed
           {"distribution", "rademacher"},   // rademacher | uniform | gaussian
           {"amplitude", "unit"},            // unit | inv_sqrt_dim (the reference's)
           {"scale", "unbiased"},            // unbiased | reference (d_l / n_l)
           {"selection", "fixed"},           // fixed (n_l = bases_per_block) | norm
           {"bases_per_block", 0},           // n_l or the norm budget; 0 = num_bases
           {"min_per_block", 2},             // floor of n_l under selection=norm
           // f32 | bf16 (2 bytes a coefficient) | int8, int4 (1 or 1/2 byte a
           // coefficient, and the client's selection seed instead of a K-bit map per block)
           {"upload_format", "f32"},
           {"clip", 10.0},                   // per-term norm clip; 0 disables
           {"block_plan", "reference"},      // reference | fixed:<n>
           {"server_lr", 1.0},
           {"server_lr_decay_rounds", 0},    // T: lr * T / (T + round - 1); 0 = constant
           {"server_momentum", 0.0},         // in coefficient space; needs seed_policy=fixed
           {"threads", 1},                   // server reconstruction threads; 0 = all
       }},
  };
}

Result<FerretOptions> FerretOptionsFromConfig(const Config& config) {
  FerretOptions o;
  FL_ASSIGN_OR_RETURN(int64_t k, IntInRange(config, "ferret.num_bases", 1, ferret::kMaxSeeds));
  o.num_bases = static_cast<uint32_t>(k);

  FL_ASSIGN_OR_RETURN(o.seed_policy,
                      Choice<FerretSeedPolicy>(config, "ferret.seed_policy",
                                               {{"fixed", FerretSeedPolicy::kFixed},
                                                {"fresh", FerretSeedPolicy::kFresh}}));
  FL_ASSIGN_OR_RETURN(int64_t seed, IntInRange(config, "ferret.seed", 0, INT64_MAX));
  if (seed == 0 && config.Has("run.seed")) seed = config.GetInt("run.seed");
  o.pool_seed = static_cast<uint64_t>(seed);

  FL_ASSIGN_OR_RETURN(o.distribution,
                      Choice<BasisDistribution>(config, "ferret.distribution",
                                                {{"rademacher", BasisDistribution::kRademacher},
                                                 {"uniform", BasisDistribution::kUniform},
                                                 {"gaussian", BasisDistribution::kGaussian}}));
  FL_ASSIGN_OR_RETURN(o.amplitude, Choice<ferret::BasisAmplitude>(
                                       config, "ferret.amplitude",
                                       {{"unit", ferret::BasisAmplitude::kUnit},
                                        {"inv_sqrt_dim", ferret::BasisAmplitude::kInvSqrtDim}}));
  FL_ASSIGN_OR_RETURN(o.projection.scale,
                      Choice<ferret::CoefficientScale>(
                          config, "ferret.scale",
                          {{"unbiased", ferret::CoefficientScale::kUnbiased},
                           {"reference", ferret::CoefficientScale::kReference}}));
  FL_ASSIGN_OR_RETURN(o.projection.selection,
                      Choice<ferret::SelectionPolicy>(
                          config, "ferret.selection",
                          {{"fixed", ferret::SelectionPolicy::kFixed},
                           {"norm", ferret::SelectionPolicy::kProportional}}));
  FL_ASSIGN_OR_RETURN(int64_t budget, IntInRange(config, "ferret.bases_per_block", 0, ferret::kMaxSeeds));
  o.projection.budget = static_cast<uint32_t>(budget);
  FL_ASSIGN_OR_RETURN(int64_t min_per_block,
                      IntInRange(config, "ferret.min_per_block", 1, ferret::kMaxSeeds));
  o.projection.min_per_block = static_cast<uint32_t>(min_per_block);
  FL_ASSIGN_OR_RETURN(o.projection.upload_format,
                      Choice<ferret::CoefficientTableFormat>(
                          config, "ferret.upload_format",
                          {{"f32", ferret::CoefficientTableFormat::kFloat32},
                           {"bf16", ferret::CoefficientTableFormat::kBFloat16},
                           {"int8", ferret::CoefficientTableFormat::kSampledInt8},
                           {"int4", ferret::CoefficientTableFormat::kSampledInt4}}));
  o.clip = config.GetDouble("ferret.clip");
  FL_ASSIGN_OR_RETURN(o.plan_kind, ParsePlan(config.GetString("ferret.block_plan"), &o.block_size));
  o.server_lr = config.GetDouble("ferret.server_lr");
  FL_ASSIGN_OR_RETURN(int64_t decay,
                      IntInRange(config, "ferret.server_lr_decay_rounds", 0, UINT32_MAX));
  o.server_lr_decay_rounds = static_cast<uint32_t>(decay);
  o.server_momentum = config.GetDouble("ferret.server_momentum");
  FL_ASSIGN_OR_RETURN(int64_t threads, IntInRange(config, "ferret.threads", 0, 1024));
  o.threads = static_cast<int>(threads);

  TrainConfig& t = o.train;
  FL_ASSIGN_OR_RETURN(int64_t epochs, IntInRange(config, "train.local_epochs", 0, INT_MAX));
  FL_ASSIGN_OR_RETURN(int64_t steps, IntInRange(config, "train.local_steps", 0, INT_MAX));
  FL_ASSIGN_OR_RETURN(int64_t batch, IntInRange(config, "train.batch_size", 1, INT_MAX));
  t.local_epochs = static_cast<int>(epochs);
  t.local_steps = static_cast<int>(steps);
  t.batch_size = static_cast<int>(batch);
  t.lr = config.GetDouble("train.lr");
  t.momentum = config.GetDouble("train.momentum");
  t.weight_decay = config.GetDouble("train.weight_decay");
  t.prox_mu = config.GetDouble("train.prox_mu");
  // train.upload_encoding is ignored: ferret always uploads coefficient tables.
  t.upload_encoding = Encoding::kFerret;
  FL_RETURN_IF_ERROR(ValidateFerretOptions(o));
  return o;
}

void RegisterFerret(AlgorithmRegistry* registry) {
  AlgorithmEntry e;
  e.name = "ferret";
  e.summary = "Ferret: full-parameter training, uploads projected onto K shared random bases; "
              "downlink by replay";
  e.create_strategy = [](const Config& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FerretOptions options, FerretOptionsFromConfig(config));
    return std::unique_ptr<Strategy>(std::make_unique<FerretStrategy>(std::move(options)));
  };
  e.create_learner = [] { return std::make_unique<FerretLearner>(); };
  e.apply_replay = [](std::string_view record, ParamSet* model) {
    return ApplyFerretReplayRecord(record, model);
  };
  e.config_defaults = FerretConfigDefaults();
  (void)registry->Register(std::move(e));
}

}  // namespace fl::internal
