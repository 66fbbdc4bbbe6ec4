#ifndef FL_ALGORITHMS_FEDAVG_FEDAVG_LEARNER_H_
#define FL_ALGORITHMS_FEDAVG_FEDAVG_LEARNER_H_

// The client half of FedAvg/FedProx/FedAdam: train from the global model and upload
// the dense delta (local - global). FedProx needs nothing more here: the proximal
// term is the Trainer's job (TrainConfig::prox_mu, anchored at SetParameters).

#include "fl/learner.h"

namespace fl::internal {

// Stateless; one instance may serve any number of rounds, one call at a time.
class FedAvgLearner : public Learner {
 public:
  // Errors: InvalidArgument if the task is not a training task, the layouts of
  // `global` and the trainer differ, or upload_encoding is not dense; the Trainer's
  // status if it fails (Cancelled when `cancel` fires); FailedPrecondition if training
  // diverged (non-finite parameters) or reported an empty dataset (weight 0), since the
  // server would refuse either.
  Result<Payload> Train(const Task& task, const ParamSet& global, Trainer& trainer,
                        const CancelToken& cancel) override;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDAVG_FEDAVG_LEARNER_H_
