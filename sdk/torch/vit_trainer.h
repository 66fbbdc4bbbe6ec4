#ifndef FL_SDK_TORCH_VIT_TRAINER_H_
#define FL_SDK_TORCH_VIT_TRAINER_H_

// W3 `fmnist-vit-shift`: a tiny vision transformer over 28 x 28 images and the trainer
// that fine-tunes part of it on a frozen pretrained backbone. LibTorch stays out of
// this header.
//
// What is federated ("the trainable part") depends on the tuning:
//   full    every tensor of the ViT (FedAvg full fine-tuning)
//   head    "head.weight", "head.bias" on the frozen backbone
//   ssf     one SSF set ("ssf.<point>.gamma|beta") + the head (federated SSF)
//   fedins  an SSF pool: entry i = "pool.<i>.ssf.<point>.gamma|beta", "pool.<i>.key",
//           "pool.<i>.head.weight", "pool.<i>.head.bias" (FedIns)
//   sfprompt "prompts", the tail blocks "blocks.<j>.*" (j >= depth - tail_blocks),
//           "norm.weight|bias", "head.weight|bias" (SFPrompt, split training with a
//           server-side body; see SfPromptOptions)
// The trainer's layout() is the trainable part only; the backbone is fixed at Create.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fl/param_set.h"
#include "fl/split_session.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

class TensorImageData;

// The ViT's shape. Defaults are W3's "vit-tiny".
struct VitOptions {
  int64_t image = 28;      // square input, one channel
  int64_t patch = 7;       // (image / patch)^2 tokens + CLS
  int64_t width = 128;     // model dimension; a multiple of heads
  int64_t depth = 4;       // transformer blocks
  int64_t heads = 4;
  int64_t mlp_ratio = 4;   // hidden width of the MLP = mlp_ratio * width
  int64_t classes = 10;
  // Learnable prompt tokens inserted after CLS, after the position embeddings (SFPrompt;
  // 0: none, and no "prompts" parameter).
  int64_t prompts = 0;
};

// "vit-tiny" (the defaults) or "vit:key=value,..." with keys patch, width, depth, heads,
// mlp_ratio, prompts; missing keys keep vit-tiny's values. InvalidArgument otherwise.
Result<VitOptions> ParseVitModelName(const std::string& name);
// The name of blocks [begin, end) of a ViT of `options`, as a split body announces itself
// (SplitSessionOptions::body): "vit:width=..,depth=..,heads=..,mlp_ratio=..,prompts=..
// blocks [begin, end)".
std::string VitBodyName(const VitOptions& options, int64_t begin, int64_t end);
bool IsVitModelName(const std::string& name);

enum class VitTuning { kFull, kHead, kSsf, kSsfPool, kPrompt };
// "full" | "head" | "ssf" | "fedins" | "sfprompt". InvalidArgument otherwise.
Result<VitTuning> ParseVitTuning(const std::string& name);
std::string VitTuningName(VitTuning tuning);

// FedIns's pool (tuning fedins). The per-task values also travel in TrainConfig::extra
// as "fedins.top_k", "fedins.lambda", "fedins.batch_shared_ssf",
// "fedins.upload_min_fraction", which override these.
struct SsfPoolOptions {
  int64_t entries = 10;           // M
  int64_t top_k = 3;              // entries each instance combines
  double lambda = 0.1;            // weight of the key-similarity term in the loss
  bool batch_shared_ssf = false;  // the reference's original: one combination per batch
  // Entries selected by a smaller share of the examples seen are left out of
  // TrainStats::tensor_weights, so they are not uploaded.
  double upload_min_fraction = 0;
};

// A piece of the ViT's forward pass, for cost counts: the patch embedding (with CLS,
// positions and prompts) if `embed`, blocks [begin, end), then the final norm and the
// head if `classify`.
struct VitPiece {
  bool embed = false;
  int64_t begin = 0;
  int64_t end = 0;
  bool classify = false;
};
// Multiply-adds of `piece`'s forward pass per sample (no SSF); the tokens include the
// prompts.
double VitForwardMacs(const VitOptions& options, const VitPiece& piece);

// Opens the client's split session with the server's body for one training task
// (fl-sim and fl-client bind it to their ServerLink).
using SplitSessionOpener =
    std::function<Result<std::unique_ptr<SplitSession>>(const SplitSessionOptions&)>;

// SFPrompt (tuning sfprompt): the client holds the head (Embed with the learned prompts,
// then blocks [0, head_blocks)) and the tail (blocks [depth - tail_blocks, depth), the
// final norm and the linear head); the server's body is the rest and must not be empty.
// Each Train runs three phases, configured by TrainConfig::extra:
//   1. local-loss update, no communication: "sfprompt.local_epochs" (int >= 0, default
//      1) epochs of CE(tail(head(x))), the body skipped. "sfprompt.local_pool" ("mean",
//      the default, or "cls") is the pooling of that path: "cls" uses Pool like the split
//      path, "mean" the final norm then the mean over all tokens (prompts included).
//      With no client blocks (head_blocks == tail_blocks == 0) and "cls" the prompts
//      get zero gradient in this phase (no block lets the CLS token attend to them),
//      hence the "mean" default.
//   2. EL2N pruning, no grad: s_i = ||softmax(local logits_i) - onehot(y_i)||_2 on that
//      same path; the ceil("sfprompt.keep_ratio" * n) highest scores are kept (double in
//      (0, 1], default 0.5; ties: the lower example index first).
//   3. split training on the kept examples for local_epochs (or local_steps), one
//      session per Train: the head's output goes to SplitSession::Forward, the body's
//      output through the tail and the loss, its gradient to Backward, and the returned
//      gradient back through the head to the prompts. Only the tokens the client reads
//      travel (SplitSessionOptions): with tail_blocks == 0 the body returns CLS alone
//      (output_tokens 1), with head_blocks == 0 the input gradient only at the prompts
//      (tokens [1, 1 + prompts)); the SGD step is the same. "sfprompt.wire" ("f32"
//      default, "f16", "bf16") encodes activations and gradients.
// One SGD optimizer (lr, momentum, weight_decay) trains the prompts and the tail in all
// phases. Evaluation and prediction run the whole model locally (backbone body, learned
// prompts and tail, CLS pooling): the same computation as the split path.
struct SfPromptOptions {
  int64_t head_blocks = 0;  // client blocks after Embed
  int64_t tail_blocks = 0;  // client blocks before the final norm and head
  // Required by Train for tuning sfprompt (FailedPrecondition when unset).
  SplitSessionOpener open_split_session;
};

struct VitTrainerOptions {
  VitOptions vit;
  VitTuning tuning = VitTuning::kFull;
  SsfPoolOptions pool;
  SfPromptOptions sfprompt;
  std::string device = "cpu";  // a resolved device (ResolveTorchDevice)
  // Seed of the trainable part's initialization (SSF gamma ~ N(1, 0.02), beta ~
  // N(0, 0.02), keys trunc-normal std 0.02; heads copy the backbone's head) and, without
  // a backbone, of the whole ViT.
  uint64_t init_seed = 1;
  int eval_batch_size = 500;
};

// One instance's prediction.
struct VitPrediction {
  int32_t label = 0;
  std::vector<float> logits;       // classes values
  std::vector<int32_t> entries;    // fedins: the top_k pool entries it used; else empty
};

// Trains the trainable part with SGD (momentum, weight decay) on bound examples, the
// backbone frozen (tuning full: nothing frozen). For fedins, TrainStats::tensor_weights
// gives each trained pool entry's tensors the fraction of the examples seen that
// selected the entry. TrainStats::metrics has "compute.seconds" (the call's client
// compute time) and "compute.flops" (2 per multiply-add, a backward pass counted as twice
// its forward), and for sfprompt per phase p in local, prune, split
// "sfprompt.<p>.seconds|flops" plus "sfprompt.split.wait_seconds" (inside the session),
// "sfprompt.split.bytes_up|bytes_down" and "sfprompt.kept_examples"; for sfprompt
// dataset_size is the bound examples, num_examples and mean_loss the split phase's.
// Thread-compatible: one thread at a time.
class VitTrainer final : public Trainer {
 public:
  // `backbone`: a full ViT of options.vit's layout (FullVitLayout), e.g. a pretrained
  // checkpoint; null initializes the ViT from options.init_seed. `train`/`eval` as in
  // TorchTrainer (may be null). InvalidArgument for a backbone of another layout or bad
  // options (sfprompt: vit.prompts < 1, or a cut leaving the body empty).
  static Result<std::unique_ptr<VitTrainer>> Create(const VitTrainerOptions& options,
                                                    const ParamSet* backbone,
                                                    std::shared_ptr<const TensorImageData> train,
                                                    std::shared_ptr<const TensorImageData> eval);
  ~VitTrainer() override;
  VitTrainer(const VitTrainer&) = delete;
  VitTrainer& operator=(const VitTrainer&) = delete;

  Status BindExamples(std::vector<int64_t> indices);
  size_t num_bound_examples() const;

  const Layout& layout() const override;
  Status GetParameters(ParamSet* out) override;
  Status SetParameters(const ParamSet& params) override;
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override;
  Result<EvalStats> Evaluate() override;
  Result<EvalStats> EvaluateRange(int64_t begin, int64_t end);
  int64_t eval_size() const;

  // Predictions for eval-set examples [begin, end) (fedins: with the entries chosen).
  Result<std::vector<VitPrediction>> PredictEvalRange(int64_t begin, int64_t end);
  // Predictions for `n` images of image x image floats each, normalized as
  // TensorImageData's, in batches of eval_batch_size.
  Result<std::vector<VitPrediction>> Predict(const float* images, int64_t n);

  // The whole ViT (backbone with the trainable part written in, sfprompt's prompts and
  // tail included; tuning ssf/fedins: the backbone alone), of FullVitLayout's layout.
  Status GetFullModel(ParamSet* out);
  // Multiply-adds of one plain forward pass of the ViT per image (no SSF; prompts
  // included), for cost reports.
  double ForwardMacsPerImage() const;

 private:
  struct Impl;
  explicit VitTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The layout of the whole ViT with `options` (a pretrained checkpoint's).
Result<Layout> FullVitLayout(const VitOptions& options);

// Reads the model file at `path` and checks that it holds a whole ViT of `options`
// (`model_name` names it in the error). A file without prompt tokens also serves a ViT
// with prompts (options.prompts > 0): pretraining has none, so SFPrompt's prompts start
// drawn from `prompt_seed` as TinyVit draws them. ReadModelFile's errors, or
// InvalidArgument giving both parameter counts for a model of another shape.
Result<ParamSet> ReadVitBackbone(const std::string& path, const VitOptions& options,
                                 const std::string& model_name, uint64_t prompt_seed = 1);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_VIT_TRAINER_H_
