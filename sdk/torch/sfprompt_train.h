#ifndef FL_SDK_TORCH_SFPROMPT_TRAIN_H_
#define FL_SDK_TORCH_SFPROMPT_TRAIN_H_

// SFPrompt's client side (VitTrainer's tuning sfprompt): the trainable part and the three
// phases of a round (local-loss update, EL2N pruning, split training), as
// vit_trainer.h describes them. Internal to fl_torch (includes LibTorch).

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fl/status.h"
#include "fl/trainer.h"
#include "torch/tensor_image_data.h"
#include "torch/vit_model.h"

namespace fl::internal {

// The per-task settings from TrainConfig::extra ("sfprompt.*", defaults as documented in
// vit_trainer.h).
struct SfPromptSettings {
  int64_t local_epochs = 1;
  bool mean_pool = true;  // "sfprompt.local_pool": "mean" (true) or "cls"
  double keep_ratio = 0.5;
  Encoding wire = Encoding::kDenseF32;
};

// InvalidArgument unless `vit` has prompts and the cut leaves a non-empty body.
Status CheckSfPromptCut(const VitOptions& vit, const SfPromptOptions& cut);

// The trainable part: the ViT's own prompts, tail blocks, final norm and head under
// their names in the ViT, so training them trains the ViT. REQUIRES: CheckSfPromptCut.
std::shared_ptr<torch::nn::Module> SfPromptTrainable(TinyVit& vit, int64_t tail_blocks);

// What one Train works on; everything outlives the call.
struct SfPromptJob {
  TinyVit vit{nullptr};
  const SfPromptOptions* cut = nullptr;
  const TensorImageData* train = nullptr;
  const std::vector<int64_t>* bound = nullptr;  // non-empty
  std::vector<torch::Tensor> parameters;        // the trainable part's
  int64_t score_batch = 500;                    // batch of the pruning pass
};

// Runs the three phases on job.bound. FailedPrecondition without an opener; the
// session's errors with their code; Cancelled if `cancel` fires; Internal for a LibTorch
// error. REQUIRES: config's common fields validated (batch_size, lr, steps or epochs).
Result<TrainStats> TrainSfPrompt(const SfPromptJob& job, const SfPromptSettings& settings,
                                 const TrainConfig& config, const CancelToken& cancel);

// The examples of `examples` whose EL2N scores (||softmax(logits) - onehot(y)||_2) are the
// ceil(keep_ratio * n) highest, ties to the lower example index, in `examples`' order.
// REQUIRES: scores.size() == examples.size(), keep_ratio in (0, 1].
std::vector<int64_t> KeepHardest(const std::vector<int64_t>& examples,
                                 const std::vector<float>& scores, double keep_ratio);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_SFPROMPT_TRAIN_H_
