#include "algorithms/sfprompt/register.h"

#include <cmath>
#include <string>
#include <utility>

#include "algorithms/fedavg/register.h"
#include "algorithms/option_checks.h"
#include "fl/algorithm.h"

namespace fl::internal {

std::vector<ConfigKey> SfPromptConfigKeys() {
  return {
      {"sfprompt.local_epochs", int64_t{1},
       "phase 1: epochs of the local-loss update (body skipped, no communication), [0, 100]"},
      {"sfprompt.keep_ratio", 0.5,
       "phase 2: share of each client's examples kept by EL2N pruning (the hardest), (0, 1]"},
      {"sfprompt.local_pool", std::string("mean"),
       "phase 1's pooling: mean (over all tokens, so prompts get a gradient without client "
       "blocks) | cls (as the split path; prompts get none when the tail has no block)"},
      {"sfprompt.wire", std::string("f32"),
       "activations and gradients on the wire: f32 | f16 | bf16"},
  };
}

namespace {

Status ValidateSfPromptKeys(const AlgorithmConfig& config) {
  const int64_t local_epochs = config.GetInt("sfprompt.local_epochs");
  if (local_epochs < 0 || local_epochs > 100) {
    return BadOption("sfprompt.local_epochs", "must be in [0, 100]");
  }
  const double keep = config.GetDouble("sfprompt.keep_ratio");
  if (!(std::isfinite(keep) && keep > 0 && keep <= 1)) {
    return BadOption("sfprompt.keep_ratio", "must be in (0, 1]");
  }
  const std::string pool = config.GetString("sfprompt.local_pool");
  if (pool != "mean" && pool != "cls") return BadOption("sfprompt.local_pool", "must be mean or cls");
  Result<Encoding> wire = ParseDenseEncoding(config.GetString("sfprompt.wire"));
  if (!wire.ok()) return wire.status().WithContext("sfprompt.wire");
  return Status::Ok();
}

}  // namespace

Result<FedAvgOptions> SfPromptOptionsFromConfig(const AlgorithmConfig& config) {
  FL_RETURN_IF_ERROR(ValidateSfPromptKeys(config));
  FL_ASSIGN_OR_RETURN(FedAvgOptions o, FedAvgOptionsFromConfig(config, "sfprompt"));
  std::map<std::string, TrainValue>& extra = o.train.extra;
  extra["sfprompt.local_epochs"] = config.GetInt("sfprompt.local_epochs");
  extra["sfprompt.keep_ratio"] = config.GetDouble("sfprompt.keep_ratio");
  extra["sfprompt.local_pool"] = config.GetString("sfprompt.local_pool");
  extra["sfprompt.wire"] = config.GetString("sfprompt.wire");
  return o;
}

Status RegisterSfPrompt(AlgorithmRegistry* registry) {
  AlgorithmDefinition d;
  d.name = "sfprompt";
  d.summary =
      "SFPrompt: split fine-tuning with soft prompts; clients train prompts + tail against the "
      "server's frozen body (local-loss update, EL2N pruning, split training); FedAvg rounds";
  d.config_keys = SfPromptConfigKeys();
  d.validate = [](const AlgorithmConfig& config) {
    return SfPromptOptionsFromConfig(config).status();
  };
  d.create_strategy = [](const AlgorithmConfig& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FedAvgOptions options, SfPromptOptionsFromConfig(config));
    return std::unique_ptr<Strategy>(std::make_unique<FedAvgStrategy>(std::move(options)));
  };
  d.create_learner = [] { return NewDenseDeltaLearner(); };
  return registry->Register(std::move(d));
}

}  // namespace fl::internal
