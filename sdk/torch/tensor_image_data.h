#ifndef FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_
#define FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_

// The definition behind torch_trainer.h's opaque TensorImageData, for fl_torch's own
// trainers. Includes LibTorch.

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fl/status.h"

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
