#ifndef FL_SDK_TORCH_VIT_MODEL_H_
#define FL_SDK_TORCH_VIT_MODEL_H_

// W3's tiny ViT and the SSF (scale-and-shift) modules that tune it. Internal to fl_torch
// (includes LibTorch); the rest of the project uses vit_trainer.h.
//
// SSF insertion points, in order (the reference's, for a pre-norm ViT):
//   "embed"                      after the patch embedding            width
//   "blocks.<j>.norm1"           after each block's first LayerNorm    width
//   "blocks.<j>.qkv"             after the q/k/v projection            3 * width
//   "blocks.<j>.proj"            after the attention's projection      width
//   "blocks.<j>.norm2"           after the second LayerNorm            width
//   "blocks.<j>.fc1"             after the MLP's first layer (pre-GELU) mlp_ratio * width
//   "blocks.<j>.fc2"             after the MLP's second layer          width
//   "norm"                       after the final LayerNorm             width
// Each point has gamma and beta: y = x * gamma + beta over the last dimension.

#include <torch/torch.h>

#include <string>
#include <vector>

#include "torch/models.h"
#include "torch/vit_trainer.h"

namespace fl::internal {

struct SsfPoint {
  std::string name;
  int64_t dim = 0;
};
std::vector<SsfPoint> SsfPoints(const VitOptions& options);

// The scale and shift applied at each point, indexed like SsfPoints: each [dim] (one
// for the whole batch) or [batch, dim] (one per instance). Empty: no SSF.
struct SsfApplied {
  std::vector<torch::Tensor> gamma;
  std::vector<torch::Tensor> beta;
  bool empty() const { return gamma.empty(); }
};

// One SSF set as parameters "<point>.gamma", "<point>.beta".
class SsfSetImpl final : public torch::nn::Module {
 public:
  explicit SsfSetImpl(const VitOptions& options);
  // gamma ~ N(1, 0.02), beta ~ N(0, 0.02) from the global generator.
  void Reinitialize();
  const std::vector<torch::Tensor>& gammas() const { return gammas_; }
  const std::vector<torch::Tensor>& betas() const { return betas_; }
  SsfApplied Shared() const { return {gammas_, betas_}; }

 private:
  std::vector<torch::Tensor> gammas_;
  std::vector<torch::Tensor> betas_;
};
TORCH_MODULE(SsfSet);

class VitBlockImpl final : public torch::nn::Module {
 public:
  VitBlockImpl(const VitOptions& options);
  // `ssf` with `first` = the index of this block's "norm1" point; empty ssf: none.
  torch::Tensor forward(torch::Tensor x, const SsfApplied& ssf, size_t first);

 private:
  int64_t heads_;
  torch::nn::LayerNorm norm1_;
  torch::nn::Linear qkv_;
  torch::nn::Linear proj_;
  torch::nn::LayerNorm norm2_;
  torch::nn::Linear fc1_;
  torch::nn::Linear fc2_;
};
TORCH_MODULE(VitBlock);

// Patch embedding (a stride-`patch` convolution), a CLS token, learned positions,
// `depth` pre-norm blocks, a final LayerNorm and a linear head on the CLS token.
// Parameters: "patch_embed.weight|bias", "cls", "pos", "blocks.<j>.<layer>.weight|bias",
// "norm.weight|bias", "head.weight|bias". vit-tiny: 803,338 parameters.
class TinyVitImpl final : public ImageClassifier {
 public:
  explicit TinyVitImpl(const VitOptions& options);
  // x: [batch, 1, image, image]; logits [batch, classes].
  torch::Tensor forward(torch::Tensor x) override;
  // The CLS token after the final norm, [batch, width], with `ssf` applied (may be empty):
  // Pool(RunBlocks(Embed(x, ssf), ssf, 0, depth), ssf).
  torch::Tensor Features(torch::Tensor x, const SsfApplied& ssf);

  // The forward pass cut into pieces (SFPrompt's head / body / tail split at any block):
  // Embed: patch embedding, CLS, positions, then the prompts -> tokens [batch, 1 + prompts
  // + patches, width]; RunBlocks: blocks [begin, end); Pool: the final norm of the CLS
  // token. Head on top of Pool gives forward().
  torch::Tensor Embed(torch::Tensor x, const SsfApplied& ssf);
  torch::Tensor RunBlocks(torch::Tensor tokens, const SsfApplied& ssf, int64_t begin, int64_t end);
  torch::Tensor Pool(torch::Tensor tokens, const SsfApplied& ssf);
  torch::nn::Linear& head() { return head_; }
  torch::nn::LayerNorm& norm() { return norm_; }
  // [1, prompts, width]; undefined without prompts.
  const torch::Tensor& prompts() const { return prompts_; }
  std::shared_ptr<torch::nn::Module> block(int64_t j) const { return blocks_->ptr(static_cast<size_t>(j)); }
  const VitOptions& options() const { return options_; }

 private:
  VitOptions options_;
  torch::nn::Conv2d patch_embed_;
  torch::Tensor cls_;
  torch::Tensor pos_;
  torch::Tensor prompts_;  // [1, prompts, width]; undefined without prompts
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm norm_;
  torch::nn::Linear head_;
};
TORCH_MODULE(TinyVit);

// x * gamma + beta over the last dimension of x [batch, tokens, dim]; gamma/beta [dim]
// or [batch, dim].
torch::Tensor ApplySsf(const torch::Tensor& x, const torch::Tensor& gamma,
                       const torch::Tensor& beta);

// A TinyVit built under InitMutex from `seed`. InvalidArgument for bad options.
Result<TinyVit> CreateTinyVit(const VitOptions& options, uint64_t seed);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_VIT_MODEL_H_
