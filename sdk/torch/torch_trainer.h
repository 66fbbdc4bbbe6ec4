#ifndef FL_SDK_TORCH_TORCH_TRAINER_H_
#define FL_SDK_TORCH_TORCH_TRAINER_H_

// The SDK's LibTorch Trainer for its built-in image models. LibTorch stays out of this
// header, so fl-sim's TUs do not pay for parsing it.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/idx_reader.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

// Resolves a --device value: "cpu" -> "cpu"; "cuda" -> "cuda", or FailedPrecondition if
// this LibTorch build has no CUDA or no device is visible; "auto" -> "cuda" when
// available, else "cpu" (logged once per process). InvalidArgument otherwise.
Result<std::string> ResolveTorchDevice(const std::string& requested);

// A dataset of images as LibTorch tensors on one device: pixels normalized as
// (x / 255 - mean) / std with Fashion-MNIST's mean 0.2860 and std 0.3530, shape
// [N, 1, rows, cols], and int64 labels. Immutable once built, so many trainers on many
// threads share one copy.
class TensorImageData;

// Builds the tensors from a decoded dataset. `device` is a resolved device ("cpu"/"cuda").
Result<std::shared_ptr<const TensorImageData>> MakeTensorImageData(const ImageDataset& dataset,
                                                                   const std::string& device);
int64_t TensorImageDataSize(const TensorImageData& data);
// The same images (shared, not copied) with every label y replaced by (C - 1 - y), C the
// number of classes (largest label + 1): the data of a label-flipping attacker in fl-sim.
// Internal on a LibTorch error.
Result<std::shared_ptr<const TensorImageData>> WithFlippedLabels(const TensorImageData& data);

struct TorchTrainerOptions {
  // Model name from the zoo (model_zoo.h).
  std::string model = "cnn";
  // A resolved device ("cpu" or "cuda"); see ResolveTorchDevice.
  std::string device = "cpu";
  // Seed of the initial weights (until SetParameters replaces them).
  uint64_t init_seed = 1;
  // Batch size of Evaluate(); affects speed only.
  int eval_batch_size = 1000;
};

// Trains a zoo model with SGD (momentum, weight decay, optional FedProx term) on the
// examples it is bound to. The dataset tensors are shared; binding is a cheap vector
// swap, so one trainer per worker thread serves many virtual clients in turn.
// Thread-compatible: one thread at a time. Intra-op threads are the caller's choice
// (torch::set_num_threads / SetTorchThreads).
class TorchTrainer final : public Trainer {
 public:
  // `train` holds the examples BindExamples indexes; `eval` is the held-out set of
  // Evaluate() (may be null: Evaluate() then uses the bound examples). Both must live
  // on options.device. InvalidArgument for an unknown model or mismatched devices.
  static Result<std::unique_ptr<TorchTrainer>> Create(
      const TorchTrainerOptions& options, std::shared_ptr<const TensorImageData> train,
      std::shared_ptr<const TensorImageData> eval);
  ~TorchTrainer() override;
  TorchTrainer(const TorchTrainer&) = delete;
  TorchTrainer& operator=(const TorchTrainer&) = delete;

  // Restricts training to `indices` (into `train`). InvalidArgument, leaving the binding
  // unchanged, if an index is out of range.
  Status BindExamples(std::vector<int64_t> indices);
  size_t num_bound_examples() const;

  const Layout& layout() const override;
  Status GetParameters(ParamSet* out) override;
  // Also records `params` as the FedProx anchor.
  Status SetParameters(const ParamSet& params) override;
  // Minibatch SGD over the bound examples, reshuffled each epoch by a generator seeded
  // with config.seed (so equal seeds give bitwise-equal results on one thread). Runs
  // config.local_steps steps if > 0, otherwise config.local_epochs epochs; the last
  // batch of an epoch may be smaller. With prox_mu > 0 the gradient of
  // (mu/2)||w - anchor||^2 is added; TrainStats::mean_loss is the data loss only.
  // FailedPrecondition if no examples are bound; Cancelled if `cancel` fires;
  // InvalidArgument for a non-positive batch size or lr; Internal on a LibTorch error.
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override;
  // Mean cross-entropy and accuracy of the current parameters on the eval set (or the
  // bound examples), in eval mode without gradients.
  Result<EvalStats> Evaluate() override;
  // Like Evaluate() on the eval-set examples [begin, end), so several trainers can share
  // one evaluation. FailedPrecondition without an eval set; InvalidArgument for a bad
  // range.
  Result<EvalStats> EvaluateRange(int64_t begin, int64_t end);
  // Examples in the eval set (0 without one).
  int64_t eval_size() const;

 private:
  struct Impl;
  explicit TorchTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sets LibTorch's intra-op thread count (process-wide) and, where the BLAS is OpenBLAS,
// its thread count too, so parallel workers do not oversubscribe the cores.
void SetTorchThreads(int threads);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_TORCH_TRAINER_H_
