#include "algorithms/fedins/named_subset_learner.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "codec/dense_codec.h"
#include "codec/named_subset_codec.h"
#include "crypto/update_digest.h"
#include "fl/algorithm.h"

namespace fl::internal {
namespace {

Status Diverged(const std::string& what) {
  return Status::FailedPrecondition("NamedSubsetLearner: " + what);
}

// The tensors to upload, in layout order (so the payload does not depend on the
// trainer's map), with their fractions. Fraction 0 carries no weight: not sent.
Result<std::vector<NamedTensorView>> SelectTensors(const TrainStats& stats, const ParamSet& delta) {
  const Layout& layout = delta.layout();
  std::vector<NamedTensorView> out;
  size_t named = 0;
  for (size_t t = 0; t < layout.num_tensors(); ++t) {
    const std::string& name = layout.tensors()[t].name;
    double fraction = 1.0;
    if (!stats.tensor_weights.empty()) {
      auto it = stats.tensor_weights.find(name);
      if (it == stats.tensor_weights.end()) continue;
      ++named;
      fraction = it->second;
      if (!std::isfinite(fraction) || fraction < 0 || fraction > 1) {
        return Diverged("the trainer reports weight fraction " + std::to_string(fraction) +
                        " for " + name + ", outside [0, 1]");
      }
      if (fraction == 0) continue;
    }
    out.push_back({name, fraction, delta.tensor(t)});
  }
  if (named != stats.tensor_weights.size()) {
    return Diverged("the trainer reports tensor weights for names outside the model's layout");
  }
  if (out.empty()) return Diverged("the trainer reports no tensor with a weight fraction > 0");
  return out;
}

// Forms local - global in place in *local.
Status FormDelta(const ParamSet& global, ParamSet* local) {
  if (local->layout().hash() != global.layout().hash() || local->size() != global.size()) {
    return Status::Internal(
        "NamedSubsetLearner: the trainer returned parameters of another layout");
  }
  float* d = local->data();
  const float* g = global.data();
  for (size_t i = 0; i < local->size(); ++i) d[i] -= g[i];
  return Status::Ok();
}

}  // namespace

Result<Payload> NamedSubsetLearner::Train(const Task& task, const ParamSet& global,
                                          Trainer& trainer, const CancelToken& cancel) {
  if (task.kind != TaskKind::kTrain) {
    return Status::InvalidArgument("NamedSubsetLearner: not a training task");
  }
  if (global.layout().hash() != trainer.layout().hash()) {
    return Status::InvalidArgument(
        "NamedSubsetLearner: the global model's layout differs from the trainer's");
  }
  const Encoding encoding = task.config.upload_encoding;
  if (!IsDenseEncoding(encoding)) {
    return Status::InvalidArgument("NamedSubsetLearner: upload encoding " + EncodingName(encoding) +
                                   " is not a dense value encoding (f32, f16, bf16)");
  }
  if (cancel.cancelled()) return Status::Cancelled("NamedSubsetLearner: cancelled");

  FL_RETURN_IF_ERROR(trainer.SetParameters(global));
  FL_ASSIGN_OR_RETURN(TrainStats stats, trainer.Train(task.config, cancel));
  if (cancel.cancelled()) return Status::Cancelled("NamedSubsetLearner: cancelled");
  ParamSet delta;
  FL_RETURN_IF_ERROR(trainer.GetParameters(&delta));
  FL_RETURN_IF_ERROR(FormDelta(global, &delta));
  if (!std::isfinite(stats.mean_loss)) {
    return Diverged("local training diverged (non-finite loss); lower train.lr");
  }
  if (stats.dataset_size == 0) return Diverged("the trainer reported an empty local dataset");
  FL_ASSIGN_OR_RETURN(std::vector<NamedTensorView> tensors, SelectTensors(stats, delta));
  // Only what is uploaded must be finite: tensors the trainer did not report stay home.
  for (const NamedTensorView& t : tensors) {
    if (FindNonFinite(t.values) != t.values.size()) {
      return Diverged("local training diverged (non-finite values in " + std::string(t.name) +
                      "); lower train.lr");
    }
  }

  Payload payload;
  FL_RETURN_IF_ERROR(EncodeNamedSubset(tensors, encoding, &payload.bytes));
  UpdateMeta& meta = payload.meta;
  meta.round = task.round;
  meta.base_version = task.model_version;
  meta.weight = static_cast<double>(stats.dataset_size);
  meta.layout_hash = global.layout().hash();
  meta.encoding = Encoding::kNamedSubset;
  SealUpdateSha256(&meta, payload.bytes);
  meta.num_examples = stats.num_examples;
  meta.train_loss = stats.mean_loss;
  return payload;
}

}  // namespace fl::internal

namespace fl {

std::unique_ptr<Learner> NewNamedSubsetLearner() {
  return std::make_unique<internal::NamedSubsetLearner>();
}

}  // namespace fl
