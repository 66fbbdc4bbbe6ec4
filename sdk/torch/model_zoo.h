#ifndef FL_SDK_TORCH_MODEL_ZOO_H_
#define FL_SDK_TORCH_MODEL_ZOO_H_

// The built-in models by name, without LibTorch in the header: fl-sim and tools ask for
// a model's initial parameters or write them to a file for fl-server.

#include <cstdint>
#include <string>
#include <vector>

#include "fl/env.h"
#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

// Names accepted by InitialModelParameters ("cnn", "mlp").
std::vector<std::string> ModelNames();

// The parameters of model `name` initialized deterministically from `seed` (same seed,
// same bits). InvalidArgument for an unknown name.
Result<ParamSet> InitialModelParameters(const std::string& name, uint64_t seed);

// Writes InitialModelParameters(name, seed) to `path` with SerializeParamSet (the format
// fl-server loads), atomically.
Status WriteInitialModel(const std::string& name, uint64_t seed, const std::string& path,
                         Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_MODEL_ZOO_H_
