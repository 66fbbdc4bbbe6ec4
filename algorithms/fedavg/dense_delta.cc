#include "algorithms/fedavg/dense_delta.h"

#include <cmath>
#include <memory>
#include <string>

#include "algorithms/fedavg/fedavg_learner.h"
#include "codec/dense_codec.h"
#include "fl/algorithm.h"

namespace fl::internal {

Status CheckUpdateWeight(double weight) {
  if (!std::isfinite(weight) || !(weight > 0)) {
    return Status::InvalidArgument("update weight must be finite and > 0, got " +
                                   std::to_string(weight));
  }
  return Status::Ok();
}

Status CheckDenseUpdateMeta(const UpdateMeta& meta, const Layout& layout) {
  if (meta.layout_hash != layout.hash()) {
    return Status::InvalidArgument("update layout hash " + std::to_string(meta.layout_hash) +
                                   " does not match the model's " + std::to_string(layout.hash()));
  }
  if (!std::isfinite(meta.train_loss)) {
    return Status::InvalidArgument("update reports a non-finite train loss");
  }
  return CheckUpdateWeight(meta.weight);
}

}  // namespace fl::internal

namespace fl {

std::unique_ptr<Learner> NewDenseDeltaLearner() {
  return std::make_unique<internal::FedAvgLearner>();
}

Result<ParamSet> DecodeDenseDelta(const Payload& payload, const Layout& layout) {
  FL_RETURN_IF_ERROR(internal::CheckDenseUpdateMeta(payload.meta, layout));
  ParamSet delta(layout);
  FL_RETURN_IF_ERROR(internal::DecodeDense(payload.bytes, payload.meta.encoding, delta.values()));
  const size_t bad = internal::FindNonFinite(delta.values());
  if (bad != delta.size()) {
    return Status::InvalidArgument("update holds a non-finite value at index " +
                                   std::to_string(bad));
  }
  return delta;
}

}  // namespace fl
