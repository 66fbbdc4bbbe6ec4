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

Result<int64_t> IntInRange(const AlgorithmConfig& config, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = config.GetInt(key);
  if (v < lo || v > hi) {
    return Bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

// The enum value named by the string at `key`; InvalidArgument listing the names
// otherwise.
template <typename E>
Result<E> Choice(const AlgorithmConfig& config, const char* key,
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

std::vector<ConfigKey> FerretConfigKeys() {
  return {
      {"ferret.num_bases", int64_t{200}, "K, the shared pool of bases"},
      {"ferret.seed_policy", std::string("fixed"), "fixed (one pool per run) | fresh (per round)"},
      {"ferret.seed", int64_t{0}, "pool seed; 0: run.seed"},
      {"ferret.distribution", std::string("rademacher"), "rademacher | uniform | gaussian"},
      {"ferret.amplitude", std::string("unit"), "unit | inv_sqrt_dim (the reference's)"},
      {"ferret.scale", std::string("unbiased"), "unbiased | reference (d_l / n_l)"},
      {"ferret.selection", std::string("fixed"), "fixed (n_l = bases_per_block) | norm"},
      {"ferret.bases_per_block", int64_t{0}, "n_l or the norm budget; 0 = num_bases"},
      {"ferret.min_per_block", int64_t{2}, "floor of n_l under selection=norm"},
      // int8/int4 send the client's selection seed instead of a K-bit map per block.
      {"ferret.upload_format", std::string("f32"), "f32 | bf16 | int8 | int4 per coefficient"},
      {"ferret.clip", 10.0, "per-term norm clip; 0 disables"},
      {"ferret.block_plan", std::string("reference"), "reference | fixed:<n>"},
      {"ferret.server_lr", 1.0, "server step"},
      {"ferret.server_lr_decay_rounds", int64_t{0}, "T: lr * T / (T + round - 1); 0 = constant"},
      {"ferret.server_momentum", 0.0, "in coefficient space; needs seed_policy=fixed"},
      {"ferret.threads", int64_t{1}, "server reconstruction threads; 0 = all"},
  };
}

Result<FerretOptions> FerretOptionsFromConfig(const AlgorithmConfig& config) {
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

  FL_ASSIGN_OR_RETURN(o.train, config.LocalTraining());
  // Ferret always uploads coefficient tables, whatever train.upload_encoding says.
  o.train.upload_encoding = Encoding::kFerret;
  FL_RETURN_IF_ERROR(ValidateFerretOptions(o));
  return o;
}

Status RegisterFerret(AlgorithmRegistry* registry) {
  AlgorithmDefinition d;
  d.name = "ferret";
  d.summary =
      "Ferret: full-parameter training, uploads projected onto K shared random bases; "
      "downlink by replay";
  d.config_keys = FerretConfigKeys();
  d.validate = [](const AlgorithmConfig& config) -> Status {
    // Ferret sums coefficient tables as they arrive; the robust rules of
    // algorithm.aggregator need the dense deltas, so they are refused, not ignored.
    if (config.Has("algorithm.aggregator") &&
        config.GetString("algorithm.aggregator") != "mean") {
      return Status::InvalidArgument("algorithm.aggregator must be mean for ferret (the robust "
                                     "rules aggregate dense deltas: fedavg, fedprox, fedadam)");
    }
    return FerretOptionsFromConfig(config).status();
  };
  d.create_strategy = [](const AlgorithmConfig& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FerretOptions options, FerretOptionsFromConfig(config));
    return std::unique_ptr<Strategy>(std::make_unique<FerretStrategy>(std::move(options)));
  };
  d.create_learner = [] { return std::make_unique<FerretLearner>(); };
  d.apply_replay = [](std::string_view record, ParamSet* model) {
    return ApplyFerretReplayRecord(record, model);
  };
  return registry->Register(std::move(d));
}

}  // namespace fl::internal
