#ifndef FL_ALGORITHMS_FEDINS_NAMED_SUBSET_LEARNER_H_
#define FL_ALGORITHMS_FEDINS_NAMED_SUBSET_LEARNER_H_

// The client half of algorithms that upload keyed (partial) updates, e.g. FedIns: train
// from the global model, then upload (local - global) of only the tensors the trainer
// reports in TrainStats::tensor_weights, each with its weight fraction, as a
// kNamedSubset payload (codec/named_subset_codec.h). A trainer that reports no tensor
// weights gets a dense update in that format: every tensor, fraction 1.

#include "fl/learner.h"

namespace fl::internal {

// Stateless; one instance may serve any number of rounds, one call at a time.
class NamedSubsetLearner : public Learner {
 public:
  // Errors: InvalidArgument if the task is not a training task, the layouts of `global`
  // and the trainer differ, or upload_encoding (the value encoding) is not dense; the
  // Trainer's status if it fails (Cancelled when `cancel` fires); FailedPrecondition if
  // training diverged (non-finite loss or uploaded delta), reported an empty dataset, or
  // reported tensor weights the server would refuse (a name outside the layout, a
  // fraction outside [0, 1], or no tensor with a fraction > 0).
  Result<Payload> Train(const Task& task, const ParamSet& global, Trainer& trainer,
                        const CancelToken& cancel) override;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FEDINS_NAMED_SUBSET_LEARNER_H_
