#include "algorithms/ferret/ferret_learner.h"

#include <cmath>
#include <string>

#include "algorithms/ferret/ferret_spec.h"
#include "codec/dense_codec.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"
#include "core/hash.h"
#include "crypto/update_digest.h"

namespace fl::internal {

Result<Payload> FerretLearner::Train(const Task& task, const ParamSet& global, Trainer& trainer,
                                     const CancelToken& cancel) {
  if (task.kind != TaskKind::kTrain) return Status::InvalidArgument("FerretLearner: not a training task");
  if (global.layout().hash() != trainer.layout().hash()) {
    return Status::InvalidArgument("FerretLearner: the global model's layout differs from the trainer's");
  }
  if (task.config.upload_encoding != Encoding::kFerret) {
    return Status::InvalidArgument("FerretLearner: upload encoding " +
                                   EncodingName(task.config.upload_encoding) + " is not ferret");
  }
  FerretRoundSpec spec;
  FerretProjection projection;
  FL_RETURN_IF_ERROR(ReadFerretExtra(task.config.extra, &spec, &projection));
  FL_ASSIGN_OR_RETURN(ferret::BlockPlan plan, MakeFerretPlan(spec, global.layout()));
  const ferret::BasisSpec basis = MakeFerretBasis(spec);
  if (cancel.cancelled()) return Status::Cancelled("FerretLearner: cancelled");

  FL_RETURN_IF_ERROR(trainer.SetParameters(global));
  FL_ASSIGN_OR_RETURN(TrainStats stats, trainer.Train(task.config, cancel));
  if (cancel.cancelled()) return Status::Cancelled("FerretLearner: cancelled");
  ParamSet local;
  FL_RETURN_IF_ERROR(trainer.GetParameters(&local));
  if (local.layout().hash() != global.layout().hash() || local.size() != global.size()) {
    return Status::Internal("FerretLearner: the trainer returned parameters of another layout");
  }
  if (!std::isfinite(stats.mean_loss)) {
    return Status::FailedPrecondition("FerretLearner: local training diverged (non-finite loss); "
                                      "lower train.lr");
  }
  if (stats.dataset_size == 0) {
    return Status::FailedPrecondition("FerretLearner: the trainer reported an empty local dataset");
  }

  // The descent direction global - local, formed in the local buffer (no second
  // model-sized allocation); the server steps along -delta.
  float* d = local.data();
  const float* g = global.data();
  for (size_t i = 0; i < local.size(); ++i) d[i] = g[i] - d[i];
  const size_t bad = FindNonFinite(local.values());
  if (bad != local.size()) {
    return Status::FailedPrecondition("FerretLearner: local training diverged (non-finite parameter "
                                      "at index " + std::to_string(bad) + "); lower train.lr");
  }

  ferret::ProjectOptions options;
  options.selection = projection.selection;
  options.budget = projection.budget;
  options.min_per_block = projection.min_per_block;
  options.scale = projection.scale;
  // Per (run, client, round) through the task seed, so clients draw independent subsets.
  options.selection_seed = Fnv1a64U64(kFnv1a64OffsetBasis, task.config.seed);
  FL_ASSIGN_OR_RETURN(ferret::CoefficientTable table,
                      ferret::Project(plan, basis, local.values(), options));

  Payload payload;
  if (projection.upload_format == ferret::CoefficientTableFormat::kSampledInt8 ||
      projection.upload_format == ferret::CoefficientTableFormat::kSampledInt4) {
    FL_ASSIGN_OR_RETURN(payload.bytes, ferret::SerializeSampledCoefficientTable(
                                           table, options.selection_seed, projection.upload_format));
  } else {
    payload.bytes = ferret::SerializeCoefficientTable(table, projection.upload_format);
  }
  UpdateMeta& meta = payload.meta;
  meta.round = task.round;
  meta.base_version = task.model_version;
  meta.weight = static_cast<double>(stats.dataset_size);
  meta.layout_hash = global.layout().hash();
  meta.encoding = Encoding::kFerret;
  SealUpdateSha256(&meta, payload.bytes);
  meta.num_examples = stats.num_examples;
  meta.train_loss = stats.mean_loss;
  return payload;
}

}  // namespace fl::internal
