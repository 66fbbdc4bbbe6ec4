// The tiny ViT cut into head / body / tail (SFPrompt's split) computes what the whole
// model does, with and without prompt tokens.
#include "torch/vit_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "torch/models.h"

namespace fl::internal {
namespace {

TinyVit Small(int64_t prompts) {
  Result<VitOptions> o = ParseVitModelName("vit:width=32,depth=3,heads=2,prompts=" +
                                           std::to_string(prompts));
  EXPECT_TRUE(o.ok()) << o.status().ToString();
  Result<TinyVit> vit = CreateTinyVit(*o, 5);
  EXPECT_TRUE(vit.ok()) << vit.status().ToString();
  return *vit;
}

TEST(VitModelTest, PromptsAreAParameterOnlyWhenAsked) {
  TinyVit plain = Small(0), prompted = Small(3);
  EXPECT_FALSE(plain->named_parameters().contains("prompts"));
  ASSERT_TRUE(prompted->named_parameters().contains("prompts"));
  EXPECT_EQ(prompted->named_parameters()["prompts"].sizes(), (std::vector<int64_t>{1, 3, 32}));
  torch::Tensor x = torch::randn({2, 1, 28, 28});
  EXPECT_EQ(plain->Embed(x, {}).size(1), 1 + 16);
  EXPECT_EQ(prompted->Embed(x, {}).size(1), 1 + 3 + 16);
  EXPECT_FALSE(ParseVitModelName("vit:prompts=-1").ok());
}

// A pretrained checkpoint has no prompts; SFPrompt's ViT reads it with prompts added,
// every other tensor bit for bit.
TEST(VitModelTest, BackboneWithoutPromptsServesAViTWithPrompts) {
  ParamSet plain;
  ASSERT_TRUE(ParamBridge(*Small(0)).Read(&plain).ok());
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "vit_backbone_no_prompts.flps").string();
  ASSERT_TRUE(WriteModelFile(path, plain).ok());
  Result<VitOptions> with = ParseVitModelName("vit:width=32,depth=3,heads=2,prompts=3");
  ASSERT_TRUE(with.ok());
  Result<ParamSet> read = ReadVitBackbone(path, *with, "vit", /*prompt_seed=*/7);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->layout().hash(), FullVitLayout(*with)->hash());
  for (size_t t = 0; t < plain.layout().num_tensors(); ++t) {
    const int at = read->layout().Find(plain.layout().tensors()[t].name);
    ASSERT_GE(at, 0);
    std::span<const float> a = plain.tensor(t), b = read->tensor(static_cast<size_t>(at));
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << plain.layout().tensors()[t].name;
  }
  std::span<const float> prompts = read->tensor(static_cast<size_t>(read->layout().Find("prompts")));
  EXPECT_TRUE(std::any_of(prompts.begin(), prompts.end(), [](float v) { return v != 0; }));
  Result<VitOptions> wider = ParseVitModelName("vit:width=64,depth=3,heads=2,prompts=3");
  EXPECT_EQ(ReadVitBackbone(path, *wider, "vit").status().code(), StatusCode::kInvalidArgument);
}

TEST(VitModelTest, EveryCutComputesTheWholeForwardPass) {
  torch::NoGradGuard no_grad;
  for (int64_t prompts : {0, 4}) {
    TinyVit vit = Small(prompts);
    torch::Tensor x = torch::randn({5, 1, 28, 28});
    torch::Tensor whole = vit->forward(x);
    for (int64_t cut = 0; cut <= 3; ++cut) {
      torch::Tensor head_side = vit->RunBlocks(vit->Embed(x, {}), {}, 0, cut);
      torch::Tensor logits = vit->head()->forward(vit->Pool(vit->RunBlocks(head_side, {}, cut, 3), {}));
      EXPECT_TRUE(torch::allclose(logits, whole, 1e-5, 1e-6)) << "prompts " << prompts << " cut " << cut;
    }
  }
}

// The body's vector-Jacobian product at its input, given the gradient at its output, is
// the gradient the whole model's backward pass gives that activation.
TEST(VitModelTest, BodyInputGradientEqualsTheWholeModelsBackward) {
  TinyVit vit = Small(2);
  torch::Tensor x = torch::randn({4, 1, 28, 28});
  torch::Tensor y = torch::tensor({1, 3, 5, 7});
  // Whole model, keeping the activation at the cut (after block 0).
  torch::Tensor a = vit->RunBlocks(vit->Embed(x, {}), {}, 0, 1);
  a.retain_grad();
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      vit->head()->forward(vit->Pool(vit->RunBlocks(a, {}, 1, 3), {})), y);
  loss.backward();
  // Split: the body (blocks 1..2) runs on a detached copy; the tail's gradient comes back.
  torch::Tensor a_server = a.detach().requires_grad_(true);
  torch::Tensor z = vit->RunBlocks(a_server, {}, 1, 3);
  torch::Tensor z_client = z.detach().requires_grad_(true);
  torch::nn::functional::cross_entropy(vit->head()->forward(vit->Pool(z_client, {})), y).backward();
  torch::Tensor g_a = torch::autograd::grad({z}, {a_server}, {z_client.grad()})[0];
  EXPECT_TRUE(torch::allclose(g_a, a.grad(), 1e-5, 1e-7));
}

}  // namespace
}  // namespace fl::internal
