#ifndef FL_SIMULATIONS_VIT_PRETRAIN_H_
#define FL_SIMULATIONS_VIT_PRETRAIN_H_

// W3's central pretraining (`fl-sim pretrain --preset fmnist-vit-shift`): the backbone
// that federated fine-tuning (vit_shift_workload.h) starts from.

#include <cstdint>
#include <functional>
#include <string>

#include "core/config.h"
#include "fl/env.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

struct VitPretrainProgress {
  int64_t step = 0;   // steps done
  int64_t steps = 0;  // total
  double loss = 0;    // mean training loss of the last chunk of steps
  double elapsed_seconds = 0;
  std::string phase;  // "train", or what is being evaluated
};

struct VitPretrainReport {
  std::string model;
  uint64_t num_parameters = 0;
  int64_t steps = 0;
  uint64_t trained_examples = 0;  // with repetition
  double train_seconds = 0;
  double total_seconds = 0;
  // Test accuracy on the clean images before and after, and after on the shifted test
  // set that `fl-sim run` evaluates.
  EvalStats clean_before, clean_after, shifted_after;
  std::string out;
};

// Trains the whole ViT of model.name (tuning full, no backbone, initialized from
// run.seed) centrally on the clean train images [0, 30,000) with SGD: pretrain.lr,
// pretrain.momentum, pretrain.weight_decay, pretrain.batch_size, for pretrain.epochs
// passes or, when that is 0, pretrain.steps steps, on pretrain.threads intra-op threads.
// Training runs in calls of at most 100 steps (an epoch: slices of one shuffled order,
// so each image is seen once per epoch), seeded from run.seed, and `progress` (may be
// empty) is called after each call and before each evaluation. Writes the full model (VitTrainer::GetFullModel) with
// WriteModelFile to pretrain.out (default: model.backbone). InvalidArgument for bad
// config values; NotFound for missing data; FailedPrecondition if training diverged;
// errors writing the file.
Result<VitPretrainReport> PretrainVitBackbone(
    const Config& config, const std::function<void(const VitPretrainProgress&)>& progress,
    Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_VIT_PRETRAIN_H_
