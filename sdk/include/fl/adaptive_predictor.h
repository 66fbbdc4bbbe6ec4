#ifndef FL_SDK_INCLUDE_FL_ADAPTIVE_PREDICTOR_H_
#define FL_SDK_INCLUDE_FL_ADAPTIVE_PREDICTOR_H_

// Predictions of a federated tiny ViT (W3, `fmnist-vit-shift`) inside an app, without
// LibTorch. The frozen backbone is a model file; the federation trains and serves only a
// small tuned part, which the app swaps in after each round:
//
//   auto backbone = fl::ReadModelFile("vit-backbone.flps");
//   auto predictor = fl::AdaptivePredictor::Create(*backbone, {}, fl::PredictorOptions{});
//   if (!predictor.ok()) ...;
//   fl::Status s = (*predictor)->SetTuned(*client->FetchGlobalModel());  // a FedIns pool
//   auto predictions = (*predictor)->Predict(pixels, count);  // count 28 x 28 images
//
// The tuned part, by its tensor names (those of VitTrainer's tunings):
//   fedins  "pool.<i>.ssf.<point>.gamma|beta", "pool.<i>.key", "pool.<i>.head.weight|bias":
//           each image picks the top_k entries whose keys are most cosine-similar to its
//           backbone feature and is classified with the mean of their SSF sets and heads
//   ssf     "ssf.<point>.gamma|beta", "head.weight|bias": one SSF set and its head
//   head, full, ...  any of the backbone's own tensors, replacing the backbone's
//   none    no tensors: the backbone with its own head

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fl/export.h"
#include "fl/param_set.h"
#include "fl/status.h"

namespace fl {

struct PredictorOptions {
  // Attention heads of the backbone (no tensor shape shows them). Must divide its width.
  int heads = 4;
  // Pool entries each image combines; 1 <= top_k <= the pool's entries when there is a
  // pool (ignored without one).
  int top_k = 3;
  // FedIns's original reference: one combination of every selection of a Predict call
  // instead of one per image, so an image's prediction depends on the others in the call.
  bool batch_shared_ssf = false;
};

struct Prediction {
  int32_t label = 0;             // the index of the largest logit
  std::vector<float> logits;     // num_classes() values
  std::vector<int32_t> entries;  // the top_k pool entries used, most similar first;
                                 // empty without a pool
};

// Predict is const and may run on several threads at once; SetTuned must not overlap any
// other call.
class FL_EXPORT AdaptivePredictor {
 public:
  // `backbone`: a whole tiny ViT ("patch_embed.*", "cls", "pos", "blocks.<j>.*", "norm.*",
  // "head.*"); its width, depth, patch, MLP ratio and classes come from the tensors'
  // shapes. `tuned`: as above; may be empty. InvalidArgument, naming the tensor, for a
  // backbone that is not such a ViT, a tuned tensor of an unknown name or of a shape that
  // disagrees with the backbone, or a pool entry with a tensor missing; for heads that
  // do not divide the width; for top_k outside [1, pool entries].
  static Result<std::unique_ptr<AdaptivePredictor>> Create(const ParamSet& backbone,
                                                           const ParamSet& tuned,
                                                           const PredictorOptions& options);
  ~AdaptivePredictor();
  AdaptivePredictor(const AdaptivePredictor&) = delete;
  AdaptivePredictor& operator=(const AdaptivePredictor&) = delete;

  // Replaces the tuned part, e.g. with a newer global pool after a round. InvalidArgument
  // as Create's, and then the previous tuned part stays in place.
  Status SetTuned(const ParamSet& tuned);

  // Predictions for `count` images of image_size() x image_size() raw grey pixels
  // (0..255, row-major, image after image), normalized as the training data was.
  // InvalidArgument if pixels is null while count > 0.
  Result<std::vector<Prediction>> Predict(const uint8_t* pixels, size_t count) const;

  int image_size() const;  // pixels per side (28 for W3's ViTs)
  int num_classes() const;
  int pool_entries() const;  // of the tuned pool; 0 without one
  const PredictorOptions& options() const;

 private:
  struct Impl;
  explicit AdaptivePredictor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_ADAPTIVE_PREDICTOR_H_
