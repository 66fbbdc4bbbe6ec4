#include "server/staleness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/config.h"

namespace fl::internal {
namespace {

// Large enough for any real schedule, small enough that versions and norms stay exact.
constexpr double kMaxKnob = 1e6;

}  // namespace

Result<StalenessWeight> ParseStalenessWeight(std::string_view name) {
  if (name == "constant") return StalenessWeight::kConstant;
  if (name == "polynomial") return StalenessWeight::kPolynomial;
  if (name == "hinge") return StalenessWeight::kHinge;
  return Status::InvalidArgument("unknown staleness weight '" + std::string(name) +
                                 "' (expected constant, polynomial or hinge)");
}

std::string_view StalenessWeightName(StalenessWeight weight) {
  switch (weight) {
    case StalenessWeight::kConstant: return "constant";
    case StalenessWeight::kPolynomial: return "polynomial";
    case StalenessWeight::kHinge: return "hinge";
  }
  return "?";
}

Status ValidateAsyncOptions(const AsyncOptions& o) {
  if (o.concurrency < 1) {
    return ConfigValueError("async.concurrency", ">= 1", std::to_string(o.concurrency));
  }
  if (o.task_timeout.count() < 0) {
    return ConfigValueError("async.task_timeout_s", ">= 0 (0: never)",
                      std::to_string(o.task_timeout.count() / 1000.0));
  }
  if (o.buffer_size < 1) {
    return ConfigValueError("async.buffer_size", ">= 1", std::to_string(o.buffer_size));
  }
  if (o.max_staleness > 100000) {
    // Every version in the window is kept in memory and on disk.
    return ConfigValueError("async.max_staleness", "<= 100000", std::to_string(o.max_staleness));
  }
  auto knob = [](const char* key, double v) -> Status {
    if (!(std::isfinite(v) && v >= 0 && v <= kMaxKnob)) {
      return ConfigValueError(key, "in [0, " + FormatConfigNumber(kMaxKnob) + "]", FormatConfigNumber(v));
    }
    return Status::Ok();
  };
  FL_RETURN_IF_ERROR(knob("async.staleness_exponent", o.staleness_exponent));
  FL_RETURN_IF_ERROR(knob("async.hinge_a", o.hinge_a));
  FL_RETURN_IF_ERROR(knob("async.gap_penalty", o.gap_penalty));
  return Status::Ok();
}

double StalenessFactor(const AsyncOptions& o, uint64_t staleness) {
  const double tau = static_cast<double>(staleness);
  switch (o.staleness_weight) {
    case StalenessWeight::kConstant:
      return 1.0;
    case StalenessWeight::kPolynomial:
      return std::pow(1.0 + tau, -o.staleness_exponent);
    case StalenessWeight::kHinge:
      if (staleness <= o.hinge_b) return 1.0;
      return 1.0 / (o.hinge_a * (tau - static_cast<double>(o.hinge_b)) + 1.0);
  }
  return 1.0;
}

void StepNormHistory::Add(uint64_t version, std::vector<double> norms) {
  steps_[version] = std::move(norms);
  while (steps_.size() > capacity_) steps_.erase(steps_.begin());
}

std::vector<double> StepNormHistory::GapPenalty(double rho, uint64_t base, uint64_t current,
                                                size_t num_tensors) const {
  std::vector<double> penalty(num_tensors, 1.0);
  if (rho <= 0 || base >= current || steps_.empty()) return penalty;
  std::vector<double> gap(num_tensors, 0.0), mean(num_tensors, 0.0);
  for (const auto& [version, norms] : steps_) {
    const bool in_gap = version > base && version <= current;
    for (size_t l = 0; l < num_tensors && l < norms.size(); ++l) {
      mean[l] += norms[l];
      if (in_gap) gap[l] += norms[l];
    }
  }
  for (size_t l = 0; l < num_tensors; ++l) {
    mean[l] /= static_cast<double>(steps_.size());
    if (mean[l] > 0) penalty[l] = std::max(1.0, gap[l] / (rho * mean[l]));
  }
  return penalty;
}

std::string StalenessHistogramJson(const std::map<uint64_t, uint64_t>& counts) {
  std::string out = "{";
  for (const auto& [staleness, n] : counts) {
    if (out.size() > 1) out += ",";
    out += "\"" + std::to_string(staleness) + "\":" + std::to_string(n);
  }
  return out + "}";
}

}  // namespace fl::internal
