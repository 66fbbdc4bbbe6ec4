#ifndef FL_ALGORITHMS_FERRET_REGISTER_H_
#define FL_ALGORITHMS_FERRET_REGISTER_H_

#include <vector>

#include "algorithms/ferret/ferret_strategy.h"
#include "algorithms/registry.h"
#include "core/config.h"

namespace fl::internal {

// The "ferret" config keys with their defaults (the reference's choices where they are
// sound: K = 200, one seed pool per run, reference block plan, clip 10).
std::vector<ConfigKey> FerretConfigKeys();

// Reads the "ferret" and "train" sections (the latter through
// AlgorithmConfig::LocalTraining), and run.seed when ferret.seed is 0 and the config has
// one, into options and validates them: InvalidArgument naming the key.
Result<FerretOptions> FerretOptionsFromConfig(const AlgorithmConfig& config);

// Registers "ferret" (strategy, learner, replayer, config keys).
Status RegisterFerret(AlgorithmRegistry* registry);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_REGISTER_H_
