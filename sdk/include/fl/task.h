#ifndef FL_SDK_INCLUDE_FL_TASK_H_
#define FL_SDK_INCLUDE_FL_TASK_H_

// What the server asks a client to do: a task and its training configuration.

#include <cstdint>
#include <map>
#include <string>

#include "fl/update.h"

namespace fl {

// Configuration a client receives with a training task. Algorithm-specific
// numbers beyond the common ones travel in `extra`.
struct TrainConfig {
  int local_epochs = 1;        // passes over local data when local_steps == 0
  int local_steps = 0;         // if > 0, exactly this many minibatch steps instead
  int batch_size = 32;
  double lr = 0.05;
  double momentum = 0.0;
  double weight_decay = 0.0;
  double prox_mu = 0.0;        // FedProx: (mu/2)||w - w_global||^2 added to the loss
  uint64_t seed = 0;           // per (run, client, round): shuffling and dropout
  uint64_t round = 0;          // the task's round (Task::round), for the trainer's logs
  Encoding upload_encoding = Encoding::kDenseF32;
  std::map<std::string, double> extra;
};

enum class TaskKind : int { kTrain = 1, kWait = 2, kDone = 3 };

// The answer to PullTask.
struct Task {
  TaskKind kind = TaskKind::kWait;
  uint64_t round = 0;
  uint64_t model_version = 0;
  std::string algorithm;
  TrainConfig config;
  int64_t retry_after_ms = 0;  // for kWait
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_TASK_H_
