#ifndef FL_SDK_INFER_VIT_TUNED_H_
#define FL_SDK_INFER_VIT_TUNED_H_

// The federated part of a tuned TinyVit, read by the names VitTrainer
// (sdk/torch/vit_trainer.h) gives it:
//   pool    "pool.<i>.ssf.<point>.gamma|beta", "pool.<i>.key", "pool.<i>.head.weight|bias"
//   ssf     "ssf.<point>.gamma|beta" and "head.weight|bias"
//   tensors any of the backbone's own tensors ("head.weight|bias" for tuning head, all of
//           them for tuning full), replacing the backbone's
//   none    no tensors: the backbone as it is
// SSF points, in order: "embed", "blocks.<j>.norm1|qkv|proj|norm2|fc1|fc2", "norm".

#include <string>
#include <utility>
#include <vector>

#include "infer/vit_weights.h"

namespace fl::internal {

// Each SSF point's name and channel count, in the order of the forward pass.
std::vector<std::pair<std::string, int64_t>> SsfPointDims(const VitShape& shape);

// The scale and shift at every SSF point (indexed like SsfPointDims): y = x * gamma + beta.
struct SsfScales {
  std::vector<RowVector> gamma;
  std::vector<RowVector> beta;
};

// One FedIns pool entry: an SSF set, the key its images are matched to and its own head.
struct PoolEntryWeights {
  SsfScales ssf;
  RowVector key;
  DenseLayer head;
};

struct TunedWeights {
  enum class Kind { kNone, kTensors, kSsf, kPool };
  Kind kind = Kind::kNone;
  ParamSet tensors;                    // kTensors: the backbone tensors to replace
  SsfScales ssf;                       // kSsf
  DenseLayer head;                     // kSsf
  std::vector<PoolEntryWeights> pool;  // kPool: entries 0 .. M-1
};

// Reads `tuned` for a backbone of `shape` whose tensors are `backbone`. InvalidArgument
// naming the tensor for a name that belongs to none of the kinds (or mixes them), a shape
// that disagrees with the backbone, or a pool entry or SSF set with a tensor missing.
Result<TunedWeights> ReadTunedWeights(const ParamSet& tuned, const ParamSet& backbone,
                                      const VitShape& shape);

}  // namespace fl::internal

#endif  // FL_SDK_INFER_VIT_TUNED_H_
