#ifndef FL_SDK_INFER_VIT_FORWARD_H_
#define FL_SDK_INFER_VIT_FORWARD_H_

// The TinyVit forward pass (TinyVitImpl::Features in sdk/torch/vit_model.cc) for a batch
// of images with an SSF set per image: VitWeights handed to the copy of the kernel
// (vit_kernel.h) that suits the CPU.

#include <span>

#include "infer/vit_tuned.h"
#include "infer/vit_weights.h"

namespace fl::internal {

// The CLS token after the final LayerNorm and its SSF point, [n, width], for n images
// [n, image * image] normalized as the training data was. `ssf`: empty (no SSF) or one
// set per image; images may point to the same set.
RowMatrix VitFeatures(const VitWeights& w, const RowMatrix& images,
                      std::span<const SsfScales* const> ssf);

// x W^T + b for each row of x, as torch::nn::Linear.
RowMatrix ApplyDense(const RowMatrix& x, const DenseLayer& layer);

}  // namespace fl::internal

#endif  // FL_SDK_INFER_VIT_FORWARD_H_
