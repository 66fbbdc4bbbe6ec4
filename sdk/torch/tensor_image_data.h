#ifndef FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_
#define FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_

// The definition behind torch_trainer.h's opaque TensorImageData, for fl_torch's own
// trainers. Includes LibTorch.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

// Fashion-MNIST's pixel statistics after scaling to [0, 1].
inline constexpr float kPixelMean = 0.2860f;
inline constexpr float kPixelStd = 0.3530f;

class TensorImageData {
 public:
  TensorImageData(torch::Tensor images, torch::Tensor labels)
      : images(std::move(images)), labels(std::move(labels)) {}
  torch::Tensor images;  // [N, 1, rows, cols] float32, normalized
  torch::Tensor labels;  // [N] int64
  int64_t size() const { return labels.size(0); }
};

// A classifier's logits for a batch of `images` ([b, 1, rows, cols]) whose indices into
// the data are `indices` ([b], on the data's device).
using BatchLogits =
    std::function<torch::Tensor(const torch::Tensor& images, const torch::Tensor& indices)>;

// Mean cross-entropy and accuracy of `logits_of` over the examples `subset` lists, or over
// [begin, end) when it is null, in batches of `batch`, without gradients; the sums stay
// on the device until the end. Throws what LibTorch throws.
EvalStats EvaluateClassifier(const TensorImageData& data, const std::vector<int64_t>* subset,
                             int64_t begin, int64_t end, int64_t batch,
                             const BatchLogits& logits_of);

// The images of the examples idx[start, start + len), and in *indices those example
// indices on the data's device. On CPU *indices views idx's storage (no copy per batch):
// idx must outlive it and stay unchanged.
inline torch::Tensor SelectBatch(const TensorImageData& data, const std::vector<int64_t>& idx,
                                 int64_t start, int64_t len, torch::Tensor* indices) {
  *indices = torch::from_blob(const_cast<int64_t*>(idx.data()) + start, {len}, torch::kLong);
  if (!data.images.device().is_cpu()) *indices = indices->to(data.images.device());
  return data.images.index_select(0, *indices);
}

// InvalidArgument naming the first index outside [0, n).
inline Status CheckExampleIndices(const std::vector<int64_t>& indices, int64_t n) {
  for (int64_t i : indices) {
    if (i < 0 || i >= n) {
      return Status::InvalidArgument("example index " + std::to_string(i) +
                                     " out of range [0, " + std::to_string(n) + ")");
    }
  }
  return Status::Ok();
}

// InvalidArgument unless [begin, end) lies within [0, n).
inline Status CheckEvalRange(int64_t begin, int64_t end, int64_t n) {
  if (begin >= 0 && begin <= end && end <= n) return Status::Ok();
  return Status::InvalidArgument("eval range [" + std::to_string(begin) + ", " +
                                 std::to_string(end) + ") outside [0, " + std::to_string(n) + ")");
}

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_
