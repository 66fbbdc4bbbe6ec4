#ifndef FL_SDK_TORCH_LM_TRAINER_H_
#define FL_SDK_TORCH_LM_TRAINER_H_

// The SDK's LibTorch Trainer for its byte-level language models (model_zoo.h GPTs, W2
// `fortunes-gpt`). LibTorch stays out of this header.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

// Local optimizers of LmTrainer; the numeric values are what TrainConfig::extra["optimizer"]
// carries on the wire: never change the value of an existing entry.
enum class LmOptimizer : int { kSgd = 0, kAdam = 1 };

// Parses "sgd" | "adam". InvalidArgument otherwise.
Result<LmOptimizer> ParseLmOptimizer(const std::string& name);

// Learning-rate schedules within one Train() call (TrainConfig::extra["lr_schedule"]).
enum class LmSchedule : int { kConstant = 0, kCosine = 1 };

// Parses "constant" | "cosine". InvalidArgument otherwise.
Result<LmSchedule> ParseLmSchedule(const std::string& name);

struct LmTrainerOptions {
  // A GPT from the zoo: "gpt-tiny" or "gpt:layers=...,width=...,heads=...,context=...".
  std::string model = "gpt-tiny";
  // A resolved device ("cpu" or "cuda"); see ResolveTorchDevice.
  std::string device = "cpu";
  // Seed of the initial weights (until SetParameters replaces them).
  uint64_t init_seed = 1;
  // Windows per forward pass in evaluation; affects speed only.
  int eval_batch_size = 32;
  // Defaults for the TrainConfig::extra keys below when a task does not set them.
  LmOptimizer optimizer = LmOptimizer::kSgd;
  double clip_norm = 0;  // <= 0: no clipping
};

// Trains a GPT as a next-byte predictor on the text it is bound to.
//
// Train() takes config.local_steps steps (or, if 0, config.local_epochs passes' worth of
// windows: ceil(epochs * train bytes / (batch * context)) steps); each step draws
// config.batch_size windows of context + 1 bytes at uniformly random offsets of the
// training text (the whole text if it is shorter) from a generator seeded with
// config.seed, so equal seeds give bitwise-equal results on one thread. The loss is the
// mean cross-entropy of predicting every byte of a window from the bytes before it.
// TrainConfig fields used: lr, momentum and weight_decay (SGD), prox_mu (FedProx term
// around the last SetParameters), and these TrainConfig::extra keys (absent -> options):
//   "optimizer":    integer LmOptimizer value (0 sgd, 1 adam; Adam betas 0.9/0.99, eps 1e-8)
//   "clip_norm":    number; > 0 clips the global gradient norm to this value
//   "lr_schedule":  integer LmSchedule value (0 constant [default], 1 cosine from lr to
//                   0.1 lr)
//   "warmup_steps": number; linear warm-up from 0 over this many steps (default 0)
// TrainStats: num_examples = predicted bytes, dataset_size = training bytes (the FedAvg
// weight), mean_loss in nats per byte.
//
// Evaluation cuts a text into consecutive windows of context + 1 bytes that overlap by
// one byte, so every byte but the first is predicted exactly once; EvalStats::loss is the
// mean cross-entropy in nats per predicted byte (bits per byte = loss / ln 2),
// accuracy the fraction of bytes predicted exactly (argmax), num_examples the predicted
// bytes.
//
// The text is not copied: callers keep bound texts alive while bound. Thread-compatible:
// one thread at a time; intra-op threads are the caller's choice (SetTorchThreads).
class LmTrainer final : public Trainer {
 public:
  // InvalidArgument for a model that is not a GPT, a bad device or eval_batch_size < 1.
  static Result<std::unique_ptr<LmTrainer>> Create(const LmTrainerOptions& options);
  ~LmTrainer() override;
  LmTrainer(const LmTrainer&) = delete;
  LmTrainer& operator=(const LmTrainer&) = delete;

  // Binds the training text and the held-out texts of Evaluate(). Either may be empty;
  // Train() then fails with FailedPrecondition (fewer than two bytes), Evaluate() with
  // FailedPrecondition (nothing to predict).
  void BindText(std::string_view train, std::vector<std::string_view> heldout);

  int64_t context() const;

  const Layout& layout() const override;
  Status GetParameters(ParamSet* out) override;
  // Also records `params` as the FedProx anchor.
  Status SetParameters(const ParamSet& params) override;
  // See the class comment. FailedPrecondition without training text; InvalidArgument for
  // a non-positive batch size or lr, a bad extra value, or no steps; Cancelled if `cancel`
  // fires; Internal on a LibTorch error.
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override;
  // Pooled over the bound held-out texts (see the class comment).
  Result<EvalStats> Evaluate() override;
  // Evaluates the current parameters on `texts`, pooled over all their predicted bytes.
  // A text shorter than two bytes contributes nothing. Internal on a LibTorch error.
  Result<EvalStats> EvaluateTexts(const std::vector<std::string_view>& texts);

  // Called after every training step with (step index from 0, that step's mean loss).
  // For long central runs such as pretraining; may be empty.
  void set_step_callback(std::function<void(int64_t, double)> callback);

 private:
  struct Impl;
  explicit LmTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ln 2: bits per byte = nats per byte / kLn2.
inline constexpr double kLn2 = 0.69314718055994530942;

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_LM_TRAINER_H_
