#ifndef FL_ALGORITHMS_FERRET_REGISTER_H_
#define FL_ALGORITHMS_FERRET_REGISTER_H_

#include <nlohmann/json.hpp>

#include "algorithms/ferret/ferret_strategy.h"
#include "algorithms/registry.h"
#include "core/config.h"

namespace fl::internal {

// The "ferret" config section with its defaults (the reference's choices where they
// are sound: K = 200, one seed pool per run, reference block plan, clip 10).
nlohmann::json FerretConfigDefaults();

// Reads the "ferret" and "train" sections (and run.seed when ferret.seed is 0 and the
// config has one) into options and validates them: InvalidArgument naming the key.
Result<FerretOptions> FerretOptionsFromConfig(const Config& config);

// Registers "ferret" (strategy, learner, replayer, config section).
void RegisterFerret(AlgorithmRegistry* registry);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_REGISTER_H_
