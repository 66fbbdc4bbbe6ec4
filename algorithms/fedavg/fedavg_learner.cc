#include "algorithms/fedavg/fedavg_learner.h"

#include <cmath>
#include <string>

#include "codec/dense_codec.h"
#include "crypto/update_digest.h"

namespace fl::internal {

Result<Payload> FedAvgLearner::Train(const Task& task, const ParamSet& global, Trainer& trainer,
                                     const CancelToken& cancel) {
  if (task.kind != TaskKind::kTrain) return Status::InvalidArgument("FedAvgLearner: not a training task");
  if (global.layout().hash() != trainer.layout().hash()) {
    return Status::InvalidArgument("FedAvgLearner: the global model's layout differs from the trainer's");
  }
  const Encoding encoding = task.config.upload_encoding;
  if (!IsDenseEncoding(encoding)) {
    return Status::InvalidArgument("FedAvgLearner: upload encoding " + EncodingName(encoding) +
                                   " is not dense");
  }
  if (cancel.cancelled()) return Status::Cancelled("FedAvgLearner: cancelled");

  FL_RETURN_IF_ERROR(trainer.SetParameters(global));
  FL_ASSIGN_OR_RETURN(TrainStats stats, trainer.Train(task.config, cancel));
  if (cancel.cancelled()) return Status::Cancelled("FedAvgLearner: cancelled");
  ParamSet local;
  FL_RETURN_IF_ERROR(trainer.GetParameters(&local));
  if (local.layout().hash() != global.layout().hash() || local.size() != global.size()) {
    return Status::Internal("FedAvgLearner: the trainer returned parameters of another layout");
  }
  if (!std::isfinite(stats.mean_loss)) {
    return Status::FailedPrecondition("FedAvgLearner: local training diverged (non-finite loss); "
                                      "lower train.lr");
  }
  if (stats.dataset_size == 0) {
    return Status::FailedPrecondition("FedAvgLearner: the trainer reported an empty local dataset");
  }

  // The delta is formed in the local buffer: no second model-sized allocation.
  float* d = local.data();
  const float* g = global.data();
  for (size_t i = 0; i < local.size(); ++i) d[i] -= g[i];
  const size_t bad = FindNonFinite(local.values());
  if (bad != local.size()) {
    return Status::FailedPrecondition("FedAvgLearner: local training diverged (non-finite parameter at "
                                      "index " + std::to_string(bad) + "); lower train.lr");
  }

  Payload payload;
  FL_RETURN_IF_ERROR(EncodeDense(local.values(), encoding, &payload.bytes));
  UpdateMeta& meta = payload.meta;
  meta.round = task.round;
  meta.base_version = task.model_version;
  meta.weight = static_cast<double>(stats.dataset_size);
  meta.layout_hash = global.layout().hash();
  meta.encoding = encoding;
  SealUpdateSha256(&meta, payload.bytes);
  meta.num_examples = stats.num_examples;
  meta.train_loss = stats.mean_loss;
  return payload;
}

}  // namespace fl::internal
