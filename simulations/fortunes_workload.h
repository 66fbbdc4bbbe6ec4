#ifndef FL_SIMULATIONS_FORTUNES_WORKLOAD_H_
#define FL_SIMULATIONS_FORTUNES_WORKLOAD_H_

// W2 `fortunes-gpt` (WORKLOADS.md): a byte-level GPT pretrained centrally on the English
// fortunes (`fl-sim pretrain`), then fine-tuned federatedly with one client per German,
// Spanish or Italian fortune file (workload.h LoadFortunesWorkload). The metric is bits
// per byte on the files' fixed held-out slices, pooled over every evaluated byte.
//
// Evaluation reads at most data.eval_bytes_per_client bytes from the start of each
// file's held-out slice (0 = all of it), cut into the LmTrainer's evaluation windows
// (context + 1 bytes, overlapping by one). The same bytes are evaluated in every round
// and by pretraining, whatever the number of workers.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "data/fortunes.h"
#include "fl/env.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl::internal {

// The evaluation windows of `corpus`'s held-out slices as above, in file order. A window
// evaluated alone gives the same predictions as inside its text, so any split of this
// list among workers evaluates the same bytes.
std::vector<std::string_view> HeldoutEvalWindows(const FortuneCorpus& corpus,
                                                 uint64_t bytes_per_file, int64_t context);

struct PretrainProgress {
  int64_t step = 0;   // steps done
  int64_t steps = 0;  // total
  double loss = 0;    // of the last step, nats per byte
  double elapsed_seconds = 0;
  std::string phase;  // "train", or what is being evaluated
};

struct PretrainReport {
  std::string model;
  uint64_t num_parameters = 0;
  int64_t steps = 0;
  uint64_t train_bytes = 0;    // size of the pretraining text
  uint64_t trained_bytes = 0;  // bytes predicted during training (with repetition)
  double train_seconds = 0;
  double total_seconds = 0;
  // Held-out evaluation of pretrain.languages (source) and data.languages (target),
  // before and after training; loss in nats per byte (bits per byte = loss / ln 2).
  EvalStats source_before, source_after, target_before, target_after;
  std::string out;
};

// Trains model.name (initialized from run.seed) centrally on the training slices of
// pretrain.languages with pretrain.{optimizer, lr, schedule, warmup_steps, clip_norm,
// steps, batch_size} on pretrain.threads intra-op threads, and writes the parameters with
// SerializeParamSet to pretrain.out (default: model.init_file), atomically. Windows are
// drawn from a generator seeded by run.seed, so a seed gives the same checkpoint on one
// machine and thread count. `progress` (may be empty) is called after every step and
// before each evaluation. InvalidArgument for bad config values or a model that is not a
// GPT; NotFound naming the Debian packages for missing fortunes; errors writing the file.
Result<PretrainReport> PretrainLanguageModel(
    const Config& config, const std::function<void(const PretrainProgress&)>& progress,
    Env* env = nullptr);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_FORTUNES_WORKLOAD_H_
