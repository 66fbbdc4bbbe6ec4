#ifndef FL_ALGORITHMS_FERRET_FERRET_LEARNER_H_
#define FL_ALGORITHMS_FERRET_FERRET_LEARNER_H_

// The client half of Ferret: train all parameters from the global model with the
// task's ordinary TrainConfig, form the descent direction delta = global - local, and
// upload its projection onto the round's shared bases (one fused pass per block) as a
// coefficient table: sum_l n_l floats instead of d. Every Ferret parameter comes from
// the task (TrainConfig::extra, see ferret_spec.h); the client has no Ferret config.

#include "fl/learner.h"

namespace fl::internal {

// Stateless; one instance may serve any number of rounds, one call at a time.
class FerretLearner : public Learner {
 public:
  // Errors: InvalidArgument if the task is not a training task, the layouts of `global`
  // and the trainer differ, the task's upload encoding is not kFerret, or its Ferret
  // parameters are missing or out of range (naming the key); the Trainer's status if it
  // fails (Cancelled when `cancel` fires); FailedPrecondition if training diverged
  // (non-finite loss or parameters) or reported an empty dataset (weight 0).
  Result<Payload> Train(const Task& task, const ParamSet& global, Trainer& trainer,
                        const CancelToken& cancel) override;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_FERRET_LEARNER_H_
