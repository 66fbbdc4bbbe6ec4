#ifndef FL_SDK_TORCH_MODELS_H_
#define FL_SDK_TORCH_MODELS_H_

// The built-in LibTorch models and the bridge between an nn::Module and a ParamSet.
// Internal to fl_torch (includes LibTorch); other code uses model_zoo.h and
// torch_trainer.h.

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"
#include "torch/model_zoo.h"

namespace fl::internal {

// A classifier of 1 x 28 x 28 images (normalized pixels) into 10 classes.
class ImageClassifier : public torch::nn::Module {
 public:
  // x: [batch, 1, 28, 28] float; returns logits [batch, 10].
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

// W1 `fmnist-cnn`: conv5x5(16) -> maxpool 2 -> conv5x5(32) -> maxpool 2 -> fc 128 -> fc 10,
// ReLU after every hidden layer; 'same' padding keeps 28 -> 14 -> 7, 215,370 parameters.
class CnnImpl final : public ImageClassifier {
 public:
  CnnImpl();
  torch::Tensor forward(torch::Tensor x) override;

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::Conv2d conv2_;
  torch::nn::Linear fc1_;
  torch::nn::Linear fc2_;
};
TORCH_MODULE(Cnn);

// A small baseline: 784 -> 128 -> 10 with ReLU (101,770 parameters).
class MlpImpl final : public ImageClassifier {
 public:
  MlpImpl();
  torch::Tensor forward(torch::Tensor x) override;

 private:
  torch::nn::Linear fc1_;
  torch::nn::Linear fc2_;
};
TORCH_MODULE(Mlp);

// Multinomial logistic (softmax) regression: one Linear 784 -> 10 over the flattened image
// (7,850 parameters: "fc.weight" [10, 784], "fc.bias" [10]). The layout the plain C and
// Python example clients (examples/c_client.c, examples/python_client.py) train, so they
// federate with fl-client and fl-sim over the same model.
class LogRegImpl final : public ImageClassifier {
 public:
  LogRegImpl();
  torch::Tensor forward(torch::Tensor x) override;

 private:
  torch::nn::Linear fc_;
};
TORCH_MODULE(LogReg);

// W2 `fortunes-gpt`: causal self-attention over [batch, time, width] with `heads` heads;
// position t attends to positions <= t only.
class CausalSelfAttentionImpl final : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(int64_t width, int64_t heads);
  torch::Tensor forward(torch::Tensor x);

 private:
  int64_t heads_;
  torch::nn::Linear qkv_;   // the three projections in one matmul
  torch::nn::Linear proj_;  // back into the residual stream
};
TORCH_MODULE(CausalSelfAttention);

// A pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU
// MLP.
class GptBlockImpl final : public torch::nn::Module {
 public:
  GptBlockImpl(int64_t width, int64_t heads);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::LayerNorm ln1_;
  CausalSelfAttention attn_;
  torch::nn::LayerNorm ln2_;
  torch::nn::Linear fc_;
  torch::nn::Linear out_;
};
TORCH_MODULE(GptBlock);

// A byte-level causal transformer language model: token and learned position embeddings,
// options.layers GptBlocks, a final LayerNorm and an untied head over the 256 byte values.
// gpt-tiny (4 layers, width 128, 4 heads, context 128) has 875,264 parameters. Weights
// follow GPT-2's initialization (normal, std 0.02; residual output projections scaled by
// 1/sqrt(2 * layers)), so the untrained model predicts bytes nearly uniformly.
class GptImpl final : public torch::nn::Module {
 public:
  explicit GptImpl(const GptOptions& options);
  // tokens: [batch, time] int64 byte values, time <= context; returns logits
  // [batch, time, 256] where position t depends on tokens[0..t] only.
  torch::Tensor forward(torch::Tensor tokens);
  const GptOptions& options() const { return options_; }

 private:
  GptOptions options_;
  torch::nn::Embedding token_embedding_;
  torch::nn::Embedding position_embedding_;
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm ln_final_;
  torch::nn::Linear head_;
};
TORCH_MODULE(Gpt);

// torch::manual_seed seeds a process-wide generator; models built under this lock make
// "seed -> weights" reproducible even when several threads build models at once.
std::mutex& InitMutex();

// A module from the zoo by name ("cnn", "mlp", "logreg"), initialized from LibTorch's global
// generator seeded with `seed` (serialized by a process-wide mutex, so concurrent callers
// get reproducible weights). InvalidArgument for an unknown name or a language model.
Result<std::shared_ptr<ImageClassifier>> CreateImageClassifier(const std::string& name,
                                                               uint64_t seed);

// A GPT from the zoo (ParseGptModelName), seeded like CreateImageClassifier.
// InvalidArgument for a name that is not a GPT.
Result<std::shared_ptr<GptImpl>> CreateGpt(const std::string& name, uint64_t seed);

// Views a module's state as a ParamSet: its named_parameters() in registration order,
// then its floating-point named_buffers() (integer buffers such as counters are not
// averaged and are left out). The tensor list is captured once; the module must keep
// its structure for the bridge's life. Not thread-safe.
class ParamBridge {
 public:
  explicit ParamBridge(torch::nn::Module& module);

  const Layout& layout() const { return *layout_; }
  std::shared_ptr<const Layout> shared_layout() const { return layout_; }
  // The tensors in layout order (parameters share storage with the module).
  const std::vector<torch::Tensor>& tensors() const { return tensors_; }
  size_t num_parameters() const { return num_parameters_; }

  // Module -> *out, one memcpy per tensor on CPU. *out is given layout() if it has
  // another one. Internal on a LibTorch error.
  Status Read(ParamSet* out) const;
  // params -> module. InvalidArgument if params.layout() differs from layout().
  Status Write(const ParamSet& params);

 private:
  std::shared_ptr<const Layout> layout_;
  std::vector<torch::Tensor> tensors_;
  size_t num_parameters_ = 0;
};

// Converts a LibTorch exception into a Status at the module boundary.
Status TorchErrorStatus(const std::exception& e, std::string_view context);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_MODELS_H_
