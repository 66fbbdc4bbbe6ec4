#include "server/coordinator_config.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "codec/param_io.h"
#include "core/config.h"
#include "fl/env.h"
#include "rng/splitmix64.h"

namespace fl::internal {
namespace {

constexpr char kSyntheticPrefix[] = "random:";

Result<int64_t> IntAtLeast(const Config& config, const std::string& key, int64_t min,
                           int64_t max = std::numeric_limits<int64_t>::max()) {
  const int64_t v = config.GetInt(key);
  if (v < min || v > max) {
    std::string requirement = ">= " + std::to_string(min);
    if (max != std::numeric_limits<int64_t>::max()) requirement += " and <= " + std::to_string(max);
    return ConfigValueError(key, requirement, std::to_string(v));
  }
  return v;
}

Result<std::chrono::milliseconds> PositiveSeconds(const Config& config, const std::string& key) {
  const double s = config.GetDouble(key);
  // Upper bound keeps the millisecond count far from overflow.
  if (!std::isfinite(s) || s <= 0 || s > 1e9) {
    return ConfigValueError(key, "a positive number of seconds", FormatConfigNumber(s));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(s * 1000.0)));
}

Result<double> NumberIn(const Config& config, const std::string& key, double max) {
  const double v = config.GetDouble(key);
  if (!(std::isfinite(v) && v >= 0 && v <= max)) {
    return ConfigValueError(key, "in [0, " + FormatConfigNumber(max) + "]", FormatConfigNumber(v));
  }
  return v;
}

// coordinator.mode and the async section.
Status ReadAsyncOptions(const Config& config, CoordinatorOptions* o) {
  Result<CoordinatorMode> mode = ParseCoordinatorMode(config.GetString("coordinator.mode"));
  if (!mode.ok()) return mode.status().WithContext("coordinator.mode");
  o->mode = *mode;
  AsyncOptions& a = o->async;
  constexpr int64_t kU32 = std::numeric_limits<uint32_t>::max();
  FL_ASSIGN_OR_RETURN(int64_t concurrency, IntAtLeast(config, "async.concurrency", 1, kU32));
  a.concurrency = static_cast<uint32_t>(concurrency);
  FL_ASSIGN_OR_RETURN(double timeout_s, NumberIn(config, "async.task_timeout_s", 1e9));
  a.task_timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(timeout_s * 1000.0)));
  FL_ASSIGN_OR_RETURN(int64_t max_staleness, IntAtLeast(config, "async.max_staleness", 0, 100000));
  a.max_staleness = static_cast<uint32_t>(max_staleness);
  FL_ASSIGN_OR_RETURN(int64_t buffer_size, IntAtLeast(config, "async.buffer_size", 1, kU32));
  a.buffer_size = static_cast<uint32_t>(buffer_size);
  Result<StalenessWeight> weight =
      ParseStalenessWeight(config.GetString("async.staleness_weight"));
  if (!weight.ok()) return weight.status().WithContext("async.staleness_weight");
  a.staleness_weight = *weight;
  FL_ASSIGN_OR_RETURN(a.staleness_exponent, NumberIn(config, "async.staleness_exponent", 1e6));
  FL_ASSIGN_OR_RETURN(a.hinge_a, NumberIn(config, "async.hinge_a", 1e6));
  FL_ASSIGN_OR_RETURN(int64_t hinge_b, IntAtLeast(config, "async.hinge_b", 0, kU32));
  a.hinge_b = static_cast<uint32_t>(hinge_b);
  FL_ASSIGN_OR_RETURN(a.gap_penalty, NumberIn(config, "async.gap_penalty", 1e6));
  return ValidateAsyncOptions(a);
}

}  // namespace

nlohmann::json CoordinatorConfigDefaults() {
  const CoordinatorOptions d;
  return {
      {"coordinator",
       {
           {"mode", std::string(CoordinatorModeName(d.mode))},  // sync | async
           {"client_fraction", d.client_fraction},
           {"clients_per_round", d.clients_per_round},
           {"min_clients", d.min_clients},
           {"min_updates", d.min_updates},
           {"round_deadline_s", static_cast<double>(d.round_deadline.count()) / 1000.0},
           {"client_timeout_s", static_cast<double>(d.client_timeout.count()) / 1000.0},
           {"max_update_mb", d.max_update_bytes >> 20},
           {"enrollment_token", d.enrollment_token},
           {"durable", d.durable},
           {"keep_models", d.keep_models},
           {"max_replay_rounds", d.max_replay_rounds},  // 0 disables downlink by replay
           {"max_clients", d.max_clients},              // per enrollment token; 0: no cap
           {"joins_per_second", d.joins_per_second},    // 0 disables the join rate limit
           {"join_burst", d.join_burst},
           {"session_ttl_s", static_cast<double>(d.session_ttl.count()) / 1000.0},
           {"max_rejected_rows_per_client", d.max_rejected_rows_per_client},  // 0: no cap
           {"weight_policy", std::string(WeightPolicyName(d.update_policy.weight_policy))},
           {"max_weight", d.update_policy.max_weight},
           {"weight_over_cap", std::string(WeightOverCapName(d.update_policy.over_cap))},
           {"norm_bound", d.norm_bound},                    // 0: off
           {"norm_bound_quantile", d.norm_bound_quantile},  // 0: off
           {"norm_bound_warmup", d.norm_bound_warmup},
           {"aggregation_leaves", d.aggregation_leaves},  // 0: min(4, hardware threads / 2)
       }},
      // Asynchronous mode only (coordinator.mode = async; server/staleness.h).
      {"async",
       {
           {"concurrency", d.async.concurrency},    // clients holding a task at once
           // an unanswered task frees its slot after this long; 0: never
           {"task_timeout_s", static_cast<double>(d.async.task_timeout.count()) / 1000.0},
           {"max_staleness", d.async.max_staleness},  // S_max; staler updates are refused
           {"buffer_size", d.async.buffer_size},    // K: updates per server step
           {"staleness_weight", std::string(StalenessWeightName(d.async.staleness_weight))},
           {"staleness_exponent", d.async.staleness_exponent},  // a of (1 + tau)^-a
           {"hinge_a", d.async.hinge_a},  // hinge: 1 / (a (tau - b) + 1) for tau > b
           {"hinge_b", d.async.hinge_b},
           {"gap_penalty", d.async.gap_penalty},  // rho of the CO2 gap penalty; 0: off
       }},
      {"run",
       {
           {"seed", d.seed},
           {"rounds", d.num_rounds},
           {"state_dir", d.state_dir},
       }},
  };
}

Result<CoordinatorOptions> CoordinatorOptionsFromConfig(const Config& config) {
  CoordinatorOptions o;
  const double fraction = config.GetDouble("coordinator.client_fraction");
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return ConfigValueError("coordinator.client_fraction", "in (0, 1]", FormatConfigNumber(fraction));
  }
  o.client_fraction = fraction;
  constexpr int64_t kU32 = std::numeric_limits<uint32_t>::max();
  FL_ASSIGN_OR_RETURN(int64_t per_round,
                      IntAtLeast(config, "coordinator.clients_per_round", 0, kU32));
  o.clients_per_round = static_cast<uint32_t>(per_round);
  FL_ASSIGN_OR_RETURN(int64_t min_clients, IntAtLeast(config, "coordinator.min_clients", 1, kU32));
  o.min_clients = static_cast<uint32_t>(min_clients);
  FL_ASSIGN_OR_RETURN(int64_t min_updates, IntAtLeast(config, "coordinator.min_updates", 1, kU32));
  o.min_updates = static_cast<uint32_t>(min_updates);
  FL_ASSIGN_OR_RETURN(o.round_deadline, PositiveSeconds(config, "coordinator.round_deadline_s"));
  FL_ASSIGN_OR_RETURN(o.client_timeout, PositiveSeconds(config, "coordinator.client_timeout_s"));
  // 2^43 MiB = 8 EiB would overflow the byte count.
  FL_ASSIGN_OR_RETURN(int64_t max_mb,
                      IntAtLeast(config, "coordinator.max_update_mb", 1, 1ll << 40));
  o.max_update_bytes = static_cast<uint64_t>(max_mb) << 20;
  o.enrollment_token = config.GetString("coordinator.enrollment_token");
  o.durable = config.GetBool("coordinator.durable");
  FL_ASSIGN_OR_RETURN(int64_t keep, IntAtLeast(config, "coordinator.keep_models", 0, kU32));
  o.keep_models = static_cast<uint32_t>(keep);
  FL_ASSIGN_OR_RETURN(int64_t replay,
                      IntAtLeast(config, "coordinator.max_replay_rounds", 0, kU32));
  o.max_replay_rounds = static_cast<uint32_t>(replay);
  FL_ASSIGN_OR_RETURN(int64_t max_clients, IntAtLeast(config, "coordinator.max_clients", 0, kU32));
  o.max_clients = static_cast<uint32_t>(max_clients);
  const double joins_per_second = config.GetDouble("coordinator.joins_per_second");
  if (!std::isfinite(joins_per_second) || joins_per_second < 0 || joins_per_second > 1e9) {
    return ConfigValueError("coordinator.joins_per_second", ">= 0", FormatConfigNumber(joins_per_second));
  }
  o.joins_per_second = joins_per_second;
  FL_ASSIGN_OR_RETURN(int64_t burst, IntAtLeast(config, "coordinator.join_burst", 1, kU32));
  o.join_burst = static_cast<uint32_t>(burst);
  FL_ASSIGN_OR_RETURN(o.session_ttl, PositiveSeconds(config, "coordinator.session_ttl_s"));
  FL_ASSIGN_OR_RETURN(int64_t rows,
                      IntAtLeast(config, "coordinator.max_rejected_rows_per_client", 0, kU32));
  o.max_rejected_rows_per_client = static_cast<uint32_t>(rows);
  {
    Result<WeightPolicy> policy = ParseWeightPolicy(config.GetString("coordinator.weight_policy"));
    if (!policy.ok()) return policy.status().WithContext("coordinator.weight_policy");
    o.update_policy.weight_policy = *policy;
    Result<WeightOverCap> over = ParseWeightOverCap(config.GetString("coordinator.weight_over_cap"));
    if (!over.ok()) return over.status().WithContext("coordinator.weight_over_cap");
    o.update_policy.over_cap = *over;
    const double max_weight = config.GetDouble("coordinator.max_weight");
    if (!(max_weight > 0 && max_weight <= kMaxWeightLimit)) {
      return ConfigValueError("coordinator.max_weight", "in (0, " + FormatConfigNumber(kMaxWeightLimit) + "]",
                        FormatConfigNumber(max_weight));
    }
    o.update_policy.max_weight = max_weight;
    const double bound = config.GetDouble("coordinator.norm_bound");
    if (!(std::isfinite(bound) && bound >= 0)) {
      return ConfigValueError("coordinator.norm_bound", ">= 0 (0: off)", FormatConfigNumber(bound));
    }
    o.norm_bound = bound;
    const double q = config.GetDouble("coordinator.norm_bound_quantile");
    if (!(q >= 0 && q <= 1)) {
      return ConfigValueError("coordinator.norm_bound_quantile", "in (0, 1] (0: off)", FormatConfigNumber(q));
    }
    o.norm_bound_quantile = q;
    FL_ASSIGN_OR_RETURN(int64_t warmup,
                        IntAtLeast(config, "coordinator.norm_bound_warmup", 1, kU32));
    o.norm_bound_warmup = static_cast<uint32_t>(warmup);
  }

  FL_ASSIGN_OR_RETURN(int64_t leaves,
                      IntAtLeast(config, "coordinator.aggregation_leaves", 0, kMaxAggregationLeaves));
  o.aggregation_leaves = static_cast<uint32_t>(leaves);

  FL_RETURN_IF_ERROR(ReadAsyncOptions(config, &o));

  FL_ASSIGN_OR_RETURN(int64_t seed, IntAtLeast(config, "run.seed", 0));
  o.seed = static_cast<uint64_t>(seed);
  FL_ASSIGN_OR_RETURN(int64_t rounds, IntAtLeast(config, "run.rounds", 1));
  o.num_rounds = static_cast<uint64_t>(rounds);
  o.state_dir = config.GetString("run.state_dir");
  if (o.state_dir.empty()) return ConfigValueError("run.state_dir", "a directory path", "\"\"");
  return o;
}

nlohmann::json ModelConfigDefaults(const std::string& default_name) {
  return {{"model", {{"name", default_name}, {"init_file", ""}}}};
}

Result<uint64_t> ParseSyntheticModelName(const std::string& name) {
  const std::string_view prefix = kSyntheticPrefix;
  if (name.compare(0, prefix.size(), prefix) != 0) {
    return Status::InvalidArgument("model name '" + name + "' is not of the form random:<n>");
  }
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(first, last, n);
  if (ec != std::errc() || ptr != last || first == last || n == 0) {
    return Status::InvalidArgument("model name '" + name +
                                   "': random:<n> needs a positive integer n");
  }
  return n;
}

Result<ParamSet> SyntheticModel(uint64_t num_params, uint64_t seed) {
  if (num_params == 0) return Status::InvalidArgument("synthetic model needs at least 1 parameter");
  // One float32 buffer; refuse sizes whose byte count cannot be represented.
  if (num_params > (std::numeric_limits<uint64_t>::max() >> 3)) {
    return Status::InvalidArgument("synthetic model too large");
  }
  Layout layout;
  layout.Add("weight", {static_cast<int64_t>(num_params)});
  ParamSet params(std::move(layout));
  float* data = params.data();
  const uint64_t key = SplitMix64(seed ^ 0x73796e7468657469ull);  // "synthetic"
  for (uint64_t i = 0; i < num_params; ++i) {
    // Top 24 bits give an exactly representable float in [0, 1).
    const uint64_t bits = SplitMix64(key + i) >> 40;
    data[i] = (static_cast<float>(bits) * (1.0f / 16777216.0f) - 0.5f) * 0.2f;
  }
  return params;
}

Result<ParamSet> InitialModelFromConfig(const Config& config) {
  const std::string file = config.GetString("model.init_file");
  const std::string name = config.GetString("model.name");
  if (!file.empty()) {
    FL_ASSIGN_OR_RETURN(std::string data, Env::Default()->ReadFile(file));
    Result<ParamSet> params = ParseParamSet(data);
    if (!params.ok()) return params.status().WithContext("model.init_file " + file);
    if (!params->AllFinite()) {
      return Status::InvalidArgument("model.init_file " + file + " holds non-finite values");
    }
    return params;
  }
  Result<uint64_t> n = ParseSyntheticModelName(name);
  if (!n.ok() && name.rfind(kSyntheticPrefix, 0) == 0) {
    return n.status().WithContext("model.name");
  }
  if (!n.ok()) {
    return Status::InvalidArgument("model.name '" + name +
                                   "' needs model.init_file (--init-model FILE; write one with "
                                   "`fl-sim export-model`), or use random:<n>");
  }
  FL_ASSIGN_OR_RETURN(int64_t seed, IntAtLeast(config, "run.seed", 0));
  return SyntheticModel(*n, static_cast<uint64_t>(seed));
}

}  // namespace fl::internal
