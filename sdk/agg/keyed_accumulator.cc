#include "agg/keyed_accumulator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "codec/dense_codec.h"

namespace fl::internal {

Result<KeyedRule> ParseKeyedRule(std::string_view name) {
  if (name == "selected") return KeyedRule::kSelected;
  if (name == "uniform") return KeyedRule::kUniform;
  return Status::InvalidArgument("unknown keyed aggregation rule '" + std::string(name) +
                                 "' (expected selected or uniform)");
}

std::string_view KeyedRuleName(KeyedRule rule) {
  return rule == KeyedRule::kUniform ? "uniform" : "selected";
}

KeyedAccumulator::KeyedAccumulator(std::shared_ptr<const Layout> layout, KeyedRule rule)
    : layout_(std::move(layout)),
      rule_(rule),
      sums_(layout_->total_numel(), 0.0),
      tensor_weights_(layout_->num_tensors(), 0.0) {}

Status KeyedAccumulator::Check(const NamedSubset& update, double weight) const {
  if (!std::isfinite(weight) || !(weight > 0)) {
    return Status::InvalidArgument("update weight must be finite and > 0, got " +
                                   std::to_string(weight));
  }
  if (update.tensors.empty()) return Status::InvalidArgument("keyed update has no tensors");
  std::vector<bool> seen(layout_->num_tensors(), false);
  for (const NamedTensor& t : update.tensors) {
    if (t.index >= layout_->num_tensors()) {
      return Status::InvalidArgument("keyed update names tensor " + std::to_string(t.index) +
                                     " of a layout with " + std::to_string(layout_->num_tensors()));
    }
    const TensorSpec& spec = layout_->tensors()[t.index];
    if (seen[t.index]) return Status::InvalidArgument(spec.name + " appears twice");
    seen[t.index] = true;
    if (t.values.size() != spec.numel) {
      return Status::InvalidArgument(spec.name + " has " + std::to_string(t.values.size()) +
                                     " values, the layout's has " + std::to_string(spec.numel));
    }
    if (!std::isfinite(t.fraction) || t.fraction < 0 || t.fraction > 1) {
      return Status::InvalidArgument(spec.name + " has weight fraction " +
                                     std::to_string(t.fraction) + ", expected [0, 1]");
    }
    if (FindNonFinite(t.values) != t.values.size()) {
      return Status::InvalidArgument(spec.name + " holds a non-finite value");
    }
  }
  return Status::Ok();
}

Status KeyedAccumulator::Accumulate(const NamedSubset& update, double weight) {
  FL_RETURN_IF_ERROR(Check(update, weight));
  const bool uniform = rule_ == KeyedRule::kUniform;
  for (const NamedTensor& t : update.tensors) {
    const double w = uniform ? 1.0 : weight * t.fraction;
    double* dst = sums_.data() + layout_->tensors()[t.index].offset;
    const float* src = t.values.data();
    for (size_t i = 0; i < t.values.size(); ++i) dst[i] += w * static_cast<double>(src[i]);
    tensor_weights_[t.index] += w;
  }
  ++count_;
  total_weight_ += weight;
  return Status::Ok();
}

Status KeyedAccumulator::MergeWith(KeyedAccumulator&& other) {
  if (other.layout_->hash() != layout_->hash() || other.sums_.size() != sums_.size() ||
      other.tensor_weights_.size() != tensor_weights_.size()) {
    return Status::InvalidArgument("KeyedAccumulator::MergeWith: layouts differ");
  }
  if (other.rule_ != rule_) {
    return Status::InvalidArgument("KeyedAccumulator::MergeWith: rules differ");
  }
  for (size_t i = 0; i < sums_.size(); ++i) sums_[i] += other.sums_[i];
  for (size_t t = 0; t < tensor_weights_.size(); ++t) {
    tensor_weights_[t] += other.tensor_weights_[t];
  }
  count_ += other.count_;
  total_weight_ += other.total_weight_;
  other.Reset();
  return Status::Ok();
}

Result<ParamSet> KeyedAccumulator::Mean() const {
  if (count_ == 0) return Status::FailedPrecondition("KeyedAccumulator::Mean: nothing accumulated");
  ParamSet out(*layout_);  // zero: the delta of every tensor nobody weighed in on
  constexpr double kMax = std::numeric_limits<float>::max();
  const double clients = static_cast<double>(count_);
  for (size_t t = 0; t < layout_->num_tensors(); ++t) {
    const double w = rule_ == KeyedRule::kUniform ? clients : tensor_weights_[t];
    if (!(w > 0)) continue;
    const TensorSpec& spec = layout_->tensors()[t];
    float* dst = out.data() + spec.offset;
    const double* src = sums_.data() + spec.offset;
    // Division, not a multiply by 1/w, and a saturating cast: as WeightedAccumulator.
    for (size_t i = 0; i < spec.numel; ++i) {
      dst[i] = static_cast<float>(std::clamp(src[i] / w, -kMax, kMax));
    }
  }
  return out;
}

void KeyedAccumulator::Reset() {
  std::fill(sums_.begin(), sums_.end(), 0.0);
  std::fill(tensor_weights_.begin(), tensor_weights_.end(), 0.0);
  count_ = 0;
  total_weight_ = 0;
}

}  // namespace fl::internal
