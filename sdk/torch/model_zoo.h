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

// Names accepted by InitialModelParameters: "cnn", "mlp", "logreg" (image classifiers) and
// "gpt-tiny" (byte-level language model; other GPT shapes by ParseGptModelName).
std::vector<std::string> ModelNames();

// The shape of a byte-level causal transformer (models.h GptImpl).
struct GptOptions {
  int64_t layers = 4;
  int64_t width = 128;    // model dimension; a multiple of heads
  int64_t heads = 4;
  int64_t context = 128;  // longest input; the number of learned positions
  static constexpr int64_t kVocab = 256;  // byte values
};

// "gpt-tiny" (the defaults above) or "gpt:key=value,..." with keys layers, width, heads,
// context; missing keys keep gpt-tiny's values, e.g. "gpt:layers=2,width=32,heads=2".
// InvalidArgument for another name, an unknown key, a value outside [1, 4096] or a width
// that heads does not divide.
Result<GptOptions> ParseGptModelName(const std::string& name);
// True for names that ParseGptModelName accepts the form of ("gpt-tiny", "gpt:...").
bool IsGptModelName(const std::string& name);

// The parameters of model `name` initialized deterministically from `seed` (same seed,
// same bits). InvalidArgument for an unknown name.
Result<ParamSet> InitialModelParameters(const std::string& name, uint64_t seed);

// Writes InitialModelParameters(name, seed) to `path` with SerializeParamSet (the format
// fl-server loads), atomically.
Status WriteInitialModel(const std::string& name, uint64_t seed, const std::string& path,
                         Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_MODEL_ZOO_H_
