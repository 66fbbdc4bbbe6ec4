#ifndef FL_ALGORITHMS_OPTION_CHECKS_H_
#define FL_ALGORITHMS_OPTION_CHECKS_H_

// Range checks shared by the algorithms' option validators, with messages that name the
// config key at fault.

#include <cmath>
#include <string>

#include "fl/status.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

inline bool InUnitInterval(double x) { return std::isfinite(x) && x >= 0 && x < 1; }

inline Status BadOption(const char* key, const std::string& why) {
  return Status::InvalidArgument(std::string(key) + " " + why);
}

// The local-training options every learner reads ("train.*"), except the upload
// encoding, which each algorithm constrains itself.
inline Status ValidateLocalTraining(const TrainConfig& t) {
  if (t.local_epochs < 0) return BadOption("train.local_epochs", "must be >= 0");
  if (t.local_steps < 0) return BadOption("train.local_steps", "must be >= 0");
  if (t.local_epochs == 0 && t.local_steps == 0) {
    return BadOption("train.local_epochs", "and train.local_steps cannot both be 0");
  }
  if (t.batch_size < 1) return BadOption("train.batch_size", "must be >= 1");
  if (!(std::isfinite(t.lr) && t.lr > 0)) return BadOption("train.lr", "must be > 0");
  if (!InUnitInterval(t.momentum)) return BadOption("train.momentum", "must be in [0, 1)");
  if (!(std::isfinite(t.weight_decay) && t.weight_decay >= 0)) {
    return BadOption("train.weight_decay", "must be >= 0");
  }
  if (!(std::isfinite(t.prox_mu) && t.prox_mu >= 0)) {
    return BadOption("train.prox_mu", "must be >= 0");
  }
  return Status::Ok();
}

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_OPTION_CHECKS_H_
