#include "agg/weighted_accumulator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "codec/dense_codec.h"

namespace fl::internal {

WeightedAccumulator::WeightedAccumulator(std::shared_ptr<const Layout> layout)
    : layout_(std::move(layout)), sums_(layout_->total_numel(), 0.0) {}

Status WeightedAccumulator::CheckWeight(double weight) {
  if (!std::isfinite(weight) || !(weight > 0)) {
    return Status::InvalidArgument("weight must be finite and > 0, got " + std::to_string(weight));
  }
  return Status::Ok();
}

Status WeightedAccumulator::Accumulate(std::string_view bytes, Encoding encoding, double weight) {
  FL_RETURN_IF_ERROR(CheckWeight(weight));
  FL_RETURN_IF_ERROR(AccumulateDense(bytes, encoding, weight, sums_));
  ++count_;
  total_weight_ += weight;
  return Status::Ok();
}

void WeightedAccumulator::AccumulateBatch(std::span<const DenseTerm> terms,
                                          std::span<Status> results) {
  // Weights are checked first so that a refused weight never reaches the sums.
  std::vector<DenseTerm> valid;
  std::vector<size_t> index;
  for (size_t t = 0; t < terms.size(); ++t) {
    results[t] = CheckWeight(terms[t].weight);
    if (results[t].ok()) {
      valid.push_back(terms[t]);
      index.push_back(t);
    }
  }
  std::vector<Status> folded(valid.size());
  AccumulateDenseBatch(valid, sums_, folded);
  for (size_t v = 0; v < valid.size(); ++v) {
    results[index[v]] = folded[v];
    if (!folded[v].ok()) continue;
    ++count_;
    total_weight_ += valid[v].weight;
  }
}

Status WeightedAccumulator::AccumulateValues(std::span<const float> values, double weight) {
  FL_RETURN_IF_ERROR(CheckWeight(weight));
  if (values.size() != sums_.size()) {
    return Status::InvalidArgument("AccumulateValues: " + std::to_string(values.size()) +
                                   " values, expected " + std::to_string(sums_.size()));
  }
  const size_t bad = FindNonFinite(values);
  if (bad != values.size()) {
    return Status::InvalidArgument("AccumulateValues: non-finite value at index " +
                                   std::to_string(bad));
  }
  double* a = sums_.data();
  const float* v = values.data();
  for (size_t i = 0; i < sums_.size(); ++i) a[i] += weight * static_cast<double>(v[i]);
  ++count_;
  total_weight_ += weight;
  return Status::Ok();
}

Status WeightedAccumulator::MergeWith(WeightedAccumulator&& other) {
  if (other.layout_->hash() != layout_->hash() || other.sums_.size() != sums_.size()) {
    return Status::InvalidArgument("WeightedAccumulator::MergeWith: layouts differ");
  }
  FL_RETURN_IF_ERROR(MergeSums(other.sums_, other.count_, other.total_weight_));
  other.Reset();
  return Status::Ok();
}

Status WeightedAccumulator::MergeSums(std::span<const double> sums, uint64_t count,
                                      double total_weight) {
  if (sums.size() != sums_.size()) {
    return Status::InvalidArgument(
        "WeightedAccumulator::MergeSums: " + std::to_string(sums.size()) + " sums, expected " +
        std::to_string(sums_.size()));
  }
  double* a = sums_.data();
  for (size_t i = 0; i < sums_.size(); ++i) a[i] += sums[i];
  count_ += count;
  total_weight_ += total_weight;
  return Status::Ok();
}

Result<ParamSet> WeightedAccumulator::Mean() const {
  if (count_ == 0 || !(total_weight_ > 0)) {
    return Status::FailedPrecondition("WeightedAccumulator::Mean: nothing accumulated");
  }
  ParamSet out(*layout_);
  float* dst = out.data();
  const double* src = sums_.data();
  // Division rather than multiplication by 1/W: one rounding instead of two keeps the
  // mean of identical inputs exactly equal to the input.
  // The mean of finite float32 values is within float32 range up to fp64 rounding;
  // saturating the cast keeps that rounding from turning it into inf.
  const double w = total_weight_;
  constexpr double kMax = std::numeric_limits<float>::max();
  for (size_t i = 0; i < sums_.size(); ++i) {
    dst[i] = static_cast<float>(std::clamp(src[i] / w, -kMax, kMax));
  }
  return out;
}

void WeightedAccumulator::Reset() {
  std::fill(sums_.begin(), sums_.end(), 0.0);
  count_ = 0;
  total_weight_ = 0;
}

}  // namespace fl::internal
