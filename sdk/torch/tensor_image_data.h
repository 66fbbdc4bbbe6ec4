#ifndef FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_
#define FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_

// The definition behind torch_trainer.h's opaque TensorImageData, for fl_torch's own
// trainers. Includes LibTorch.

#include <torch/torch.h>

#include <utility>

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

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_TENSOR_IMAGE_DATA_H_
