#ifndef FL_ALGORITHMS_FEDAVG_REGISTER_H_
#define FL_ALGORITHMS_FEDAVG_REGISTER_H_

#include "algorithms/fedavg/fedavg_strategy.h"
#include "algorithms/registry.h"
#include "core/config.h"

namespace fl::internal {

// Reads the "algorithm" and "train" sections into options for algorithm `name`
// ("fedavg" | "fedprox" | "fedadam") and validates them: InvalidArgument naming the key.
// fedprox requires train.prox_mu > 0; fedadam always uses the adam server optimizer.
Result<FedAvgOptions> FedAvgOptionsFromConfig(const AlgorithmConfig& config, std::string_view name);

// Registers fedavg, fedprox and fedadam (they read only the shared "algorithm" and
// "train" sections).
Status RegisterFedAvgFamily(AlgorithmRegistry* registry);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_REGISTER_H_
