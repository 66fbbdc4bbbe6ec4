#ifndef FL_SDK_INFER_VIT_INFERENCE_H_
#define FL_SDK_INFER_VIT_INFERENCE_H_

// LibTorch-free predictions of W3's tiny ViT with a tuned part (vit_tuned.h): the engine
// behind fl::AdaptivePredictor. It reproduces VitTrainer's forward passes (the reference,
// sdk/torch/vit_trainer.cc) in plain C++ with Eigen, which stays out of this header.

#include <cstdint>
#include <memory>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

struct InferenceOptions {
  int64_t top_k = 3;              // pool entries each image combines
  bool batch_shared_ssf = false;  // one combination for all the images of a Run
};

struct InferenceOutput {
  std::vector<float> logits;     // n * classes, image-major
  std::vector<int32_t> entries;  // with a pool: n * top_k, most similar first; else empty
};

// Immutable between SetTuned calls: Run is const and may run on several threads at once;
// SetTuned must not overlap anything else.
class VitInference {
 public:
  // `backbone`: a whole TinyVit with `heads` attention heads. InvalidArgument as
  // ReadVitWeights.
  static Result<std::unique_ptr<VitInference>> Create(const ParamSet& backbone, int64_t heads);
  ~VitInference();
  VitInference(const VitInference&) = delete;
  VitInference& operator=(const VitInference&) = delete;

  // Replaces the tuned part (empty: none). InvalidArgument as ReadTunedWeights, or for a
  // pool of fewer than top_k entries, leaving the previous part in place.
  Status SetTuned(const ParamSet& tuned, int64_t top_k);

  int64_t image_size() const;  // pixels per side
  int64_t num_classes() const;
  int64_t pool_entries() const;  // 0 without a pool

  // Logits (and pool entries) of n images of image_size()^2 bytes each, raw 0..255
  // pixels, normalized here as the training data was.
  // REQUIRES: with a pool, 1 <= options.top_k <= pool_entries().
  InferenceOutput Run(const uint8_t* pixels, int64_t n, const InferenceOptions& options) const;

 private:
  struct State;
  explicit VitInference(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fl::internal

#endif  // FL_SDK_INFER_VIT_INFERENCE_H_
