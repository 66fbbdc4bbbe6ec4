#ifndef FL_ALGORITHMS_FEDINS_REGISTER_H_
#define FL_ALGORITHMS_FEDINS_REGISTER_H_

#include <vector>

#include "algorithms/fedins/fedins_strategy.h"
#include "algorithms/registry.h"
#include "core/config.h"

namespace fl::internal {

// The "fedins" config keys with their defaults (the reference's top-k 3 and lambda 0.1;
// a 10-entry pool).
std::vector<ConfigKey> FedInsConfigKeys();

// Reads the "fedins", "algorithm" and "train" sections into options and validates
// them: InvalidArgument naming the key.
Result<FedInsOptions> FedInsOptionsFromConfig(const AlgorithmConfig& config);

// Registers "fedins" (strategy, keyed learner, config keys).
Status RegisterFedIns(AlgorithmRegistry* registry);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDINS_REGISTER_H_
