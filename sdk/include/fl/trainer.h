#ifndef FL_SDK_INCLUDE_FL_TRAINER_H_
#define FL_SDK_INCLUDE_FL_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "fl/export.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/task.h"

namespace fl {

// Cooperative cancellation: long work polls cancelled() and returns Cancelled.
class FL_EXPORT CancelToken {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct TrainStats {
  uint64_t num_examples = 0;  // examples seen (with repetition across epochs)
  uint64_t dataset_size = 0;  // distinct local examples; the FedAvg weight
  double mean_loss = 0;
  // Keyed (partial) updates: the tensors this training changed, by layout name, each with
  // the fraction in [0, 1] of the update's weight it carries (e.g. the share of examples
  // that selected a pool entry). Empty: every tensor, with the whole weight (dense).
  std::map<std::string, double> tensor_weights;
  // Named figures of this training for reports (seconds or bytes per phase, FLOPs),
  // summed over a round's clients by fl-sim into metrics.csv columns "client.<name>".
  std::map<std::string, double> metrics;
};

struct EvalStats {
  uint64_t num_examples = 0;
  double loss = 0;
  double accuracy = 0;  // in [0, 1]; 0 where not meaningful
};

// The user's compute. An edge app implements this in any language it likes; the SDK
// ships LibTorch trainers for its built-in models (sdk/torch). Not thread-safe: one
// Trainer is driven by one thread at a time.
class FL_EXPORT Trainer {
 public:
  virtual ~Trainer() = default;

  // The layout of the model; constant for the Trainer's life.
  virtual const Layout& layout() const = 0;
  // Copies the current parameters into *out (which gets layout()).
  virtual Status GetParameters(ParamSet* out) = 0;
  // Replaces the parameters. InvalidArgument if params.layout() differs. The set values
  // are also the anchor of TrainConfig::prox_mu.
  virtual Status SetParameters(const ParamSet& params) = 0;
  // Trains on local data. Returns Cancelled if `cancel` fires.
  virtual Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) = 0;
  // Evaluates on local (or held-out) data.
  virtual Result<EvalStats> Evaluate() = 0;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_TRAINER_H_
