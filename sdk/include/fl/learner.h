#ifndef FL_SDK_INCLUDE_FL_LEARNER_H_
#define FL_SDK_INCLUDE_FL_LEARNER_H_

#include "fl/export.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl {

// The client half of an algorithm: from a task, the global model and the user's
// Trainer, produce the payload to upload. Knows nothing about transports.
class FL_EXPORT Learner {
 public:
  virtual ~Learner() = default;
  // REQUIRES: task.kind == kTrain; global.layout() == trainer.layout().
  // Fills payload.meta except client_id, which the runtime sets.
  virtual Result<Payload> Train(const Task& task, const ParamSet& global, Trainer& trainer,
                                const CancelToken& cancel) = 0;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_LEARNER_H_
