#ifndef FL_TESTS_TESTING_VIT_SPLIT_REFERENCE_H_
#define FL_TESTS_TESTING_VIT_SPLIT_REFERENCE_H_

// What a split step must compute, from the whole TinyVit in one process: a client's
// activations at the cut after block 0, the body's output (blocks 1 and 2), the tail's
// gradient at that output and the gradient the whole backward pass gives the
// activations. For tests of SplitBodyServer and of the split transports; needs LibTorch.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "fl/split_session.h"
#include "torch/vit_model.h"
#include "torch/vit_trainer.h"

namespace fl::internal {

// A ViT small enough for unit tests: 19 tokens (CLS, 2 prompts, 16 patches) of width 32.
inline VitOptions SmallSplitVit() {
  Result<VitOptions> o = ParseVitModelName("vit:width=32,depth=3,heads=2,prompts=2");
  EXPECT_TRUE(o.ok()) << o.status().ToString();
  return *o;
}

inline TokenTensor FromTensor(const torch::Tensor& t) {
  torch::Tensor c = t.detach().contiguous();
  return {c.size(0), c.size(1), c.size(2),
          std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel())};
}

inline torch::Tensor ToTensor(const TokenTensor& t) {
  return torch::tensor(t.values).reshape({t.batch, t.tokens, t.width});
}

struct SplitReference {
  torch::Tensor a, z, grad_z, grad_a;
};

// One client's step of `batch` random images through the whole model, body = blocks
// [1, 3).
inline SplitReference WholeModelStep(TinyVit& vit, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn({batch, 1, 28, 28});
  torch::Tensor y = torch::randint(0, 10, {batch});
  torch::Tensor a = vit->RunBlocks(vit->Embed(x, {}), {}, 0, 1).detach().requires_grad_(true);
  torch::Tensor z = vit->RunBlocks(a, {}, 1, 3);
  z.retain_grad();
  torch::nn::functional::cross_entropy(vit->head()->forward(vit->Pool(z, {})), y).backward();
  return {a.detach(), z.detach(), z.grad().detach(), a.grad().detach()};
}

}  // namespace fl::internal

#endif  // FL_TESTS_TESTING_VIT_SPLIT_REFERENCE_H_
