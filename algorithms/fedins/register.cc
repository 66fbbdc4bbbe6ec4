#include "algorithms/fedins/register.h"

#include <string>
#include <utility>

#include "algorithms/fedavg/register.h"
#include "fl/algorithm.h"

namespace fl::internal {

std::vector<ConfigKey> FedInsConfigKeys() {
  return {
      {"fedins.entries", int64_t{10}, "M, pool entries, [1, 1024]"},
      {"fedins.top_k", int64_t{3}, "entries selected per instance, [1, entries]"},
      {"fedins.lambda", 0.1, "weight of the key-similarity loss, [0, 1]"},
      {"fedins.batch_shared_ssf", false, "one SSF per batch (the original reference's quirk)"},
      {"fedins.upload_min_fraction", 0.0,
       "entries selected by a smaller share of a client's examples stay home, [0, 1] "
       "(0: every selected entry is uploaded, as the reference)"},
      {"fedins.aggregate", std::string("selected"),
       "selected (per tensor, weighted by the share of examples that selected it) | uniform "
       "(every client counts once per tensor, unsent tensors as unchanged copies)"},
  };
}

Result<FedInsOptions> FedInsOptionsFromConfig(const AlgorithmConfig& config) {
  FedInsOptions o;
  FL_ASSIGN_OR_RETURN(o.fedavg, FedAvgOptionsFromConfig(config, "fedins"));
  o.entries = config.GetInt("fedins.entries");
  o.top_k = config.GetInt("fedins.top_k");
  o.lambda = config.GetDouble("fedins.lambda");
  o.batch_shared_ssf = config.GetBool("fedins.batch_shared_ssf");
  o.upload_min_fraction = config.GetDouble("fedins.upload_min_fraction");
  Result<KeyedRule> rule = ParseKeyedRule(config.GetString("fedins.aggregate"));
  if (!rule.ok()) return rule.status().WithContext("fedins.aggregate");
  o.aggregate = *rule;
  FL_RETURN_IF_ERROR(ValidateFedInsOptions(o));
  return o;
}

Status RegisterFedIns(AlgorithmRegistry* registry) {
  AlgorithmDefinition d;
  d.name = "fedins";
  d.summary =
      "FedIns: a pool of SSF entries selected per instance; clients upload the entries they "
      "trained (keyed updates), aggregated per tensor";
  d.config_keys = FedInsConfigKeys();
  d.validate = [](const AlgorithmConfig& config) {
    return FedInsOptionsFromConfig(config).status();
  };
  d.create_strategy = [](const AlgorithmConfig& config) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(FedInsOptions options, FedInsOptionsFromConfig(config));
    return std::unique_ptr<Strategy>(std::make_unique<FedInsStrategy>(std::move(options)));
  };
  d.create_learner = [] { return NewNamedSubsetLearner(); };
  return registry->Register(std::move(d));
}

}  // namespace fl::internal
