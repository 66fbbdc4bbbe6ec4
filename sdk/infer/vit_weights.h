#ifndef FL_SDK_INFER_VIT_WEIGHTS_H_
#define FL_SDK_INFER_VIT_WEIGHTS_H_

// W3's tiny ViT (sdk/torch/vit_model.h) as plain Eigen matrices, read from a ParamSet by
// tensor name and shape, for the inference engine that must not link LibTorch. Internal
// to fl_infer: only its .cc files include Eigen.

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

// Activations are [rows = tokens, columns = channels] and row-major, like LibTorch's
// tensors, so one token's channels are contiguous.
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

// The ViT's shape, as far as the backbone's tensors determine it (heads do not show in
// any shape, so they come from the caller).
struct VitShape {
  int64_t image = 0;  // square input side, one channel
  int64_t patch = 0;
  int64_t width = 0;
  int64_t depth = 0;
  int64_t heads = 0;
  int64_t mlp_ratio = 0;
  int64_t classes = 0;

  int64_t side() const { return image / patch; }
  int64_t patches() const { return side() * side(); }
  int64_t tokens() const { return patches() + 1; }  // the patches and CLS
  int64_t hidden() const { return mlp_ratio * width; }
};

// y = x W^T + b, as torch::nn::Linear; weight [out, in].
struct DenseLayer {
  RowMatrix weight;
  RowVector bias;
};

struct LayerNormWeights {
  RowVector weight;
  RowVector bias;
};

struct VitBlockWeights {
  LayerNormWeights norm1;
  DenseLayer qkv;
  DenseLayer proj;
  LayerNormWeights norm2;
  DenseLayer fc1;
  DenseLayer fc2;
};

struct VitWeights {
  VitShape shape;
  DenseLayer patch_embed;  // the stride-patch convolution: weight [width, patch * patch]
  RowVector cls;           // [width]
  RowMatrix pos;           // [tokens, width]
  std::vector<VitBlockWeights> blocks;
  LayerNormWeights norm;
  DenseLayer head;  // [classes, width]
};

// Reads a whole TinyVit ("patch_embed.weight", "cls", "pos", "blocks.<j>.<layer>...",
// "norm.*", "head.*") with `heads` attention heads. InvalidArgument naming the tensor
// when `backbone` is not such a ViT: a tensor missing, of a shape that disagrees with the
// others, or one a TinyVit does not have; or when heads does not divide the width.
Result<VitWeights> ReadVitWeights(const ParamSet& backbone, int64_t heads);

// A copy of tensor `name` of `params` as a 1 x numel row vector, or as a matrix of
// `rows` rows. REQUIRES: the tensor exists (Layout::Find >= 0) and numel % rows == 0.
RowVector TensorRow(const ParamSet& params, const std::string& name);
RowMatrix TensorMatrix(const ParamSet& params, const std::string& name, int64_t rows);

std::string ShapeText(const std::vector<int64_t>& shape);

}  // namespace fl::internal

#endif  // FL_SDK_INFER_VIT_WEIGHTS_H_
