#include "data/shifted_split_config.h"

#include <algorithm>

#include "data/partition.h"

namespace fl::internal {

Result<std::vector<Domain>> DomainsFromConfig(const Config& config) {
  Result<std::vector<Domain>> domains = ParseDomainList(config.GetString("data.domains"));
  if (!domains.ok()) return domains.status().WithContext("data.domains");
  return domains;
}

Result<ShiftedSplitOptions> ShiftedSplitOptionsFromConfig(const Config& config, int64_t train_size,
                                                          const ShiftedSplitKeys& keys) {
  ShiftedSplitOptions o;
  FL_ASSIGN_OR_RETURN(o.domains, DomainsFromConfig(config));
  Result<PartitionSpec> skew = ParsePartitionSpec(config.GetString("data.partition"));
  if (!skew.ok()) return skew.status().WithContext("data.partition");
  // Each image is shown under one domain of the client holding it: clients must not share.
  if (skew->kind == PartitionSpec::Kind::kSample) {
    return Status::InvalidArgument(
        "data.partition: sample:<m> gives clients overlapping images; the shifted split "
        "needs iid, dirichlet:<alpha> or shards:<k>");
  }
  o.label_skew = *skew;
  const int64_t clients = config.GetInt(keys.num_clients);
  const int64_t per_client = config.GetInt("data.domains_per_client");
  const int64_t limit = config.GetInt("data.train_examples");
  const int64_t seed = config.GetInt(keys.seed);
  if (clients < 1 || clients > 1000000) {
    return Status::InvalidArgument("config key " + keys.num_clients + " must be in [1, 1000000]");
  }
  if (per_client < 1 || per_client > static_cast<int64_t>(o.domains.size())) {
    return Status::InvalidArgument("config key data.domains_per_client must be in [1, " +
                                   std::to_string(o.domains.size()) + "] (the domains listed)");
  }
  if (limit < 0) return Status::InvalidArgument("config key data.train_examples must be >= 0");
  if (seed < 0) return Status::InvalidArgument("config key " + keys.seed + " must be >= 0");
  o.begin = kFederatedBegin;
  o.end = limit > 0 ? std::min(train_size, kFederatedBegin + limit) : train_size;
  o.num_clients = static_cast<int>(clients);
  o.domains_per_client = static_cast<int>(per_client);
  o.seed = static_cast<uint64_t>(seed);
  return o;
}

}  // namespace fl::internal
