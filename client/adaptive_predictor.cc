// fl::AdaptivePredictor (fl/adaptive_predictor.h): argument checks and the Prediction
// values around the LibTorch-free engine, internal::VitInference.

#include "fl/adaptive_predictor.h"

#include <algorithm>
#include <limits>
#include <string>

#include "infer/vit_inference.h"

namespace fl {
namespace {

// Without a pool top_k is unused, but a bad one is refused at once rather than when a
// pool arrives (the engine checks it against each pool's size).
Status CheckTopK(int top_k) {
  if (top_k < 1) {
    return Status::InvalidArgument("top_k must be >= 1 (got " + std::to_string(top_k) + ")");
  }
  return Status::Ok();
}

}  // namespace

struct AdaptivePredictor::Impl {
  PredictorOptions options;
  std::unique_ptr<internal::VitInference> engine;
};

AdaptivePredictor::AdaptivePredictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdaptivePredictor::~AdaptivePredictor() = default;

Result<std::unique_ptr<AdaptivePredictor>> AdaptivePredictor::Create(
    const ParamSet& backbone, const ParamSet& tuned, const PredictorOptions& options) {
  FL_RETURN_IF_ERROR(CheckTopK(options.top_k).WithContext("AdaptivePredictor"));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto engine = internal::VitInference::Create(backbone, options.heads);
  if (!engine.ok()) return engine.status().WithContext("AdaptivePredictor");
  impl->engine = std::move(engine).value();
  std::unique_ptr<AdaptivePredictor> predictor(new AdaptivePredictor(std::move(impl)));
  FL_RETURN_IF_ERROR(predictor->SetTuned(tuned));
  return predictor;
}

Status AdaptivePredictor::SetTuned(const ParamSet& tuned) {
  return impl_->engine->SetTuned(tuned, impl_->options.top_k).WithContext("AdaptivePredictor");
}

Result<std::vector<Prediction>> AdaptivePredictor::Predict(const uint8_t* pixels,
                                                           size_t count) const {
  if (count == 0) return std::vector<Prediction>();
  if (pixels == nullptr) {
    return Status::InvalidArgument("AdaptivePredictor::Predict: pixels is null");
  }
  const internal::VitInference& engine = *impl_->engine;
  const auto per_image = static_cast<size_t>(engine.image_size() * engine.image_size());
  if (count > std::numeric_limits<size_t>::max() / per_image / sizeof(float)) {
    return Status::InvalidArgument("AdaptivePredictor::Predict: " + std::to_string(count) +
                                   " images are too many");
  }
  internal::InferenceOptions options;
  options.top_k = impl_->options.top_k;
  options.batch_shared_ssf = impl_->options.batch_shared_ssf;
  const internal::InferenceOutput out = engine.Run(pixels, static_cast<int64_t>(count), options);
  const auto classes = static_cast<size_t>(engine.num_classes());
  const size_t k = out.entries.empty() ? 0 : static_cast<size_t>(options.top_k);
  std::vector<Prediction> predictions(count);
  for (size_t i = 0; i < count; ++i) {
    Prediction& p = predictions[i];
    p.logits.assign(out.logits.begin() + i * classes, out.logits.begin() + (i + 1) * classes);
    // The first of equal maxima, as argmax.
    p.label =
        static_cast<int32_t>(std::max_element(p.logits.begin(), p.logits.end()) - p.logits.begin());
    p.entries.assign(out.entries.begin() + i * k, out.entries.begin() + (i + 1) * k);
  }
  return predictions;
}

int AdaptivePredictor::image_size() const { return static_cast<int>(impl_->engine->image_size()); }
int AdaptivePredictor::num_classes() const {
  return static_cast<int>(impl_->engine->num_classes());
}
int AdaptivePredictor::pool_entries() const {
  return static_cast<int>(impl_->engine->pool_entries());
}
const PredictorOptions& AdaptivePredictor::options() const { return impl_->options; }

}  // namespace fl
