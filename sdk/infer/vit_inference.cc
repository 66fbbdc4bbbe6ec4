#include "infer/vit_inference.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "infer/pool_selection.h"
#include "infer/vit_forward.h"
#include "infer/vit_tuned.h"
#include "infer/vit_weights.h"

namespace fl::internal {
namespace {

// Fashion-MNIST's pixel statistics after scaling to [0, 1], as the training data's
// (kPixelMean, kPixelStd in sdk/torch/tensor_image_data.h).
constexpr float kPixelMean = 0.2860f;
constexpr float kPixelStd = 0.3530f;

// Images per forward pass: large enough for efficient matrix products, small enough that
// the activations ([images * tokens, mlp width] floats) stay in the caches' vicinity.
constexpr int64_t kChunkImages = 64;

RowMatrix Normalized(const uint8_t* pixels, int64_t n, int64_t per_image) {
  RowMatrix x(n, per_image);
  float* out = x.data();
  for (int64_t i = 0; i < n * per_image; ++i) {
    out[i] = (static_cast<float>(pixels[i]) / 255.0f - kPixelMean) / kPixelStd;
  }
  return x;
}

}  // namespace

struct VitInference::State {
  ParamSet backbone;
  int64_t heads = 0;
  VitWeights base;                       // the backbone as given
  std::optional<VitWeights> overridden;  // with the tuned part's backbone tensors
  TunedWeights tuned;

  const VitWeights& weights() const { return overridden ? *overridden : base; }
  // Logits of images [len, pixels] starting at image `start` of the Run.
  RowMatrix ChunkLogits(const RowMatrix& images, int64_t start, const InferenceOptions& options,
                        const std::vector<int32_t>& entries, const SsfScales& shared_ssf,
                        const DenseLayer& shared_head) const;
};

RowMatrix VitInference::State::ChunkLogits(const RowMatrix& images, int64_t start,
                                           const InferenceOptions& options,
                                           const std::vector<int32_t>& entries,
                                           const SsfScales& shared_ssf,
                                           const DenseLayer& shared_head) const {
  const VitWeights& w = weights();
  const auto n = static_cast<size_t>(images.rows());
  switch (tuned.kind) {
    case TunedWeights::Kind::kNone:
    case TunedWeights::Kind::kTensors:
      return ApplyDense(VitFeatures(w, images, {}), w.head);
    case TunedWeights::Kind::kSsf: {
      const std::vector<const SsfScales*> ssf(n, &tuned.ssf);
      return ApplyDense(VitFeatures(w, images, ssf), tuned.head);
    }
    case TunedWeights::Kind::kPool:
      break;
  }
  if (options.batch_shared_ssf) {
    const std::vector<const SsfScales*> ssf(n, &shared_ssf);
    return ApplyDense(VitFeatures(w, images, ssf), shared_head);
  }
  // Per instance: the mean of its own k entries' SSF sets and heads.
  const auto k = static_cast<size_t>(options.top_k);
  std::vector<SsfScales> sets(n);
  std::vector<DenseLayer> heads(n);
  std::vector<const SsfScales*> ssf(n);
  for (size_t b = 0; b < n; ++b) {
    const std::span<const int32_t> chosen(entries.data() + (static_cast<size_t>(start) + b) * k, k);
    CombineEntries(tuned.pool, chosen, &sets[b], &heads[b]);
    ssf[b] = &sets[b];
  }
  const RowMatrix features = VitFeatures(w, images, ssf);
  RowMatrix logits(images.rows(), w.shape.classes);
  for (size_t b = 0; b < n; ++b) {
    const auto r = static_cast<Eigen::Index>(b);
    logits.row(r).noalias() = features.row(r) * heads[b].weight.transpose();
    logits.row(r) += heads[b].bias;
  }
  return logits;
}

VitInference::VitInference(std::unique_ptr<State> state) : state_(std::move(state)) {}
VitInference::~VitInference() = default;

Result<std::unique_ptr<VitInference>> VitInference::Create(const ParamSet& backbone,
                                                           int64_t heads) {
  auto state = std::make_unique<State>();
  FL_ASSIGN_OR_RETURN(state->base, ReadVitWeights(backbone, heads));
  state->backbone = backbone;
  state->heads = heads;
  return std::unique_ptr<VitInference>(new VitInference(std::move(state)));
}

Status VitInference::SetTuned(const ParamSet& tuned, int64_t top_k) {
  State& s = *state_;
  FL_ASSIGN_OR_RETURN(TunedWeights read, ReadTunedWeights(tuned, s.backbone, s.base.shape));
  if (read.kind == TunedWeights::Kind::kPool && top_k > static_cast<int64_t>(read.pool.size())) {
    return Status::InvalidArgument("top_k " + std::to_string(top_k) + " exceeds the pool's " +
                                   std::to_string(read.pool.size()) + " entries");
  }
  std::optional<VitWeights> overridden;
  if (read.kind == TunedWeights::Kind::kTensors) {
    ParamSet merged = s.backbone;
    for (size_t i = 0; i < tuned.layout().num_tensors(); ++i) {
      const std::span<const float> from = tuned.tensor(i);
      const int at = merged.layout().Find(tuned.layout().tensors()[i].name);
      std::memcpy(merged.tensor(static_cast<size_t>(at)).data(), from.data(), from.size_bytes());
    }
    FL_ASSIGN_OR_RETURN(overridden, ReadVitWeights(merged, s.heads));
    read.tensors = ParamSet();  // merged into `overridden`
  }
  s.tuned = std::move(read);
  s.overridden = std::move(overridden);
  return Status::Ok();
}

int64_t VitInference::image_size() const { return state_->base.shape.image; }
int64_t VitInference::num_classes() const { return state_->base.shape.classes; }
int64_t VitInference::pool_entries() const {
  return static_cast<int64_t>(state_->tuned.pool.size());
}

InferenceOutput VitInference::Run(const uint8_t* pixels, int64_t n,
                                  const InferenceOptions& options) const {
  const State& s = *state_;
  const VitShape& shape = s.weights().shape;
  const int64_t per_image = shape.image * shape.image;
  InferenceOutput out;
  out.logits.resize(static_cast<size_t>(n * shape.classes));
  SsfScales shared_ssf;
  DenseLayer shared_head;
  if (s.tuned.kind == TunedWeights::Kind::kPool && n > 0) {
    // The queries: the backbone's CLS features without SSF.
    RowMatrix queries(n, shape.width);
    for (int64_t start = 0; start < n; start += kChunkImages) {
      const int64_t len = std::min(kChunkImages, n - start);
      queries.middleRows(start, len) =
          VitFeatures(s.weights(), Normalized(pixels + start * per_image, len, per_image), {});
    }
    out.entries = SelectEntries(queries, s.tuned.pool, options.top_k);
    if (options.batch_shared_ssf) {
      CombineEntries(s.tuned.pool, out.entries, &shared_ssf, &shared_head);
    }
  }
  for (int64_t start = 0; start < n; start += kChunkImages) {
    const int64_t len = std::min(kChunkImages, n - start);
    const RowMatrix logits = s.ChunkLogits(Normalized(pixels + start * per_image, len, per_image),
                                           start, options, out.entries, shared_ssf, shared_head);
    std::memcpy(out.logits.data() + start * shape.classes, logits.data(),
                sizeof(float) * logits.size());
  }
  return out;
}

}  // namespace fl::internal
