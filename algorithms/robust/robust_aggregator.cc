#include "algorithms/robust/robust_aggregator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "algorithms/fedavg/dense_delta.h"
#include "algorithms/fedavg/dense_round_aggregator.h"
#include "algorithms/option_checks.h"

namespace fl::internal {

Result<AggregationRule> ParseAggregationRule(std::string_view name) {
  if (name == "mean") return AggregationRule::kMean;
  if (name == "median") return AggregationRule::kMedian;
  if (name == "trimmed_mean") return AggregationRule::kTrimmedMean;
  if (name == "multi_krum") return AggregationRule::kMultiKrum;
  return Status::InvalidArgument("unknown aggregator '" + std::string(name) +
                                 "' (expected mean, median, trimmed_mean or multi_krum)");
}

std::string_view AggregationRuleName(AggregationRule rule) {
  switch (rule) {
    case AggregationRule::kMean: return "mean";
    case AggregationRule::kMedian: return "median";
    case AggregationRule::kTrimmedMean: return "trimmed_mean";
    case AggregationRule::kMultiKrum: return "multi_krum";
  }
  return "?";
}

Status ValidateAggregationOptions(const AggregationOptions& o) {
  switch (o.rule) {
    case AggregationRule::kMean:
    case AggregationRule::kMedian:
    case AggregationRule::kTrimmedMean:
    case AggregationRule::kMultiKrum:
      break;
    default:
      return BadOption("algorithm.aggregator", "is not a known rule");
  }
  if (!(std::isfinite(o.trim_beta) && o.trim_beta >= 0 && o.trim_beta < 0.5)) {
    return BadOption("algorithm.trim_beta", "must be in [0, 0.5)");
  }
  if (o.krum_f < 0) return BadOption("algorithm.krum_f", "must be >= 0");
  if (o.max_updates < 1) return BadOption("algorithm.robust_max_updates", "must be >= 1");
  return Status::Ok();
}

size_t TrimCount(double beta, size_t n) {
  return static_cast<size_t>(std::floor(beta * static_cast<double>(n) + 1e-9));
}

void CoordinateMedian(std::span<const float* const> updates, size_t d, float* out) {
  const size_t n = updates.size();
  std::vector<float> column(n);
  const size_t mid = n / 2;
  for (size_t j = 0; j < d; ++j) {
    for (size_t i = 0; i < n; ++i) column[i] = updates[i][j];
    std::nth_element(column.begin(), column.begin() + mid, column.end());
    const double upper = column[mid];
    if (n % 2 == 1) {
      out[j] = static_cast<float>(upper);
    } else {
      const double lower = *std::max_element(column.begin(), column.begin() + mid);
      out[j] = static_cast<float>((lower + upper) / 2);
    }
  }
}

void CoordinateTrimmedMean(std::span<const float* const> updates, size_t d, size_t trim,
                           float* out) {
  const size_t n = updates.size();
  const size_t kept = n - 2 * trim;
  std::vector<float> column(n);
  for (size_t j = 0; j < d; ++j) {
    for (size_t i = 0; i < n; ++i) column[i] = updates[i][j];
    if (trim > 0) std::sort(column.begin(), column.end());
    double sum = 0;
    for (size_t i = trim; i < n - trim; ++i) sum += column[i];
    out[j] = static_cast<float>(sum / static_cast<double>(kept));
  }
}

std::vector<size_t> MultiKrumSelect(std::span<const float* const> updates, size_t d, size_t f) {
  const size_t n = updates.size();
  if (n <= 1) return std::vector<size_t>(n, 0);
  std::vector<double> dist(n * n, 0.0);
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a + 1; b < n; ++b) {
      double s = 0;
      const float* x = updates[a];
      const float* y = updates[b];
      for (size_t j = 0; j < d; ++j) {
        const double diff = static_cast<double>(x[j]) - y[j];
        s += diff * diff;
      }
      dist[a * n + b] = dist[b * n + a] = s;
    }
  }
  const size_t k = n > f + 2 ? std::min(n - f - 2, n - 1) : 1;
  std::vector<double> scores(n);
  std::vector<double> row;
  for (size_t a = 0; a < n; ++a) {
    row.clear();
    for (size_t b = 0; b < n; ++b) {
      if (b != a) row.push_back(dist[a * n + b]);
    }
    std::partial_sort(row.begin(), row.begin() + k, row.end());
    scores[a] = std::accumulate(row.begin(), row.begin() + k, 0.0);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  order.resize(n > f ? n - f : 1);
  return order;
}

RobustRoundAggregator::RobustRoundAggregator(AggregationOptions options,
                                             std::shared_ptr<const Layout> layout, uint64_t round,
                                             std::shared_ptr<HeldCount> held)
    : options_(options),
      layout_(std::move(layout)),
      round_(round),
      held_(held != nullptr ? std::move(held) : std::make_shared<HeldCount>(0)) {}

RobustRoundAggregator::~RobustRoundAggregator() { ReleaseDeltas(); }

void RobustRoundAggregator::ReleaseDeltas() {
  held_->fetch_sub(deltas_.size());
  deltas_.clear();
}

Status RobustRoundAggregator::CheckUsable(const char* op) const {
  if (consumed_) {
    return Status::FailedPrecondition(std::string("RobustRoundAggregator::") + op +
                                      ": aggregator already consumed by Report()");
  }
  return Status::Ok();
}

Status RobustRoundAggregator::Accumulate(const Payload& payload) {
  FL_RETURN_IF_ERROR(CheckUsable("Accumulate"));
  const UpdateMeta& meta = payload.meta;
  if (meta.round != round_) {
    return Status::FailedPrecondition("update for round " + std::to_string(meta.round) +
                                      " offered to the aggregator of round " + std::to_string(round_));
  }
  // The cheap checks first, so a refused update never costs a model-sized decode.
  FL_RETURN_IF_ERROR(CheckDenseUpdateMeta(meta, *layout_));
  // Reserve a place under the round's cap before the model-sized decode.
  const uint64_t max = static_cast<uint64_t>(options_.max_updates);
  const uint64_t before = held_->fetch_add(1);
  if (before >= max) {
    held_->fetch_sub(1);
    return Status::ResourceExhausted(
        "aggregator " + std::string(AggregationRuleName(options_.rule)) + " already holds " +
        std::to_string(before) + " updates of " + std::to_string(layout_->total_numel()) +
        " values (algorithm.robust_max_updates); update refused");
  }
  Result<ParamSet> delta = DecodeDenseDelta(payload, *layout_);
  if (!delta.ok()) {
    held_->fetch_sub(1);
    return delta.status();
  }
  deltas_.push_back(std::move(delta).value());
  weight_sum_ += meta.weight;
  loss_sum_ += meta.train_loss;
  return Status::Ok();
}

Status RobustRoundAggregator::MergeWith(RoundAggregator&& other) {
  FL_RETURN_IF_ERROR(CheckUsable("MergeWith"));
  auto* o = dynamic_cast<RobustRoundAggregator*>(&other);
  if (o == nullptr) return Status::InvalidArgument("MergeWith: not a RobustRoundAggregator");
  if (o == this) return Status::InvalidArgument("MergeWith: cannot merge an aggregator into itself");
  if (o->consumed_) return Status::FailedPrecondition("MergeWith: the other aggregator is consumed");
  if (o->round_ != round_ || o->options_.rule != options_.rule ||
      o->layout_->hash() != layout_->hash()) {
    return Status::InvalidArgument("MergeWith: round, rule or layout differ");
  }
  if (o->held_ != held_ &&
      deltas_.size() + o->deltas_.size() > static_cast<uint64_t>(options_.max_updates)) {
    return Status::ResourceExhausted("MergeWith: together the aggregators hold more than "
                                     "algorithm.robust_max_updates = " +
                                     std::to_string(options_.max_updates) + " updates");
  }
  const uint64_t moved = o->deltas_.size();
  for (ParamSet& d : o->deltas_) deltas_.push_back(std::move(d));
  weight_sum_ += o->weight_sum_;
  loss_sum_ += o->loss_sum_;
  o->deltas_.clear();
  if (o->held_ != held_) {  // the count moves with the updates
    held_->fetch_add(moved);
    o->held_->fetch_sub(moved);
  }
  o->weight_sum_ = 0;
  o->loss_sum_ = 0;
  o->consumed_ = true;
  return Status::Ok();
}

Result<AggregateReport> RobustRoundAggregator::Report() && {
  FL_RETURN_IF_ERROR(CheckUsable("Report"));
  if (deltas_.empty()) return Status::FailedPrecondition("RobustRoundAggregator::Report: no updates");
  const size_t n = deltas_.size();
  const size_t d = layout_->total_numel();
  std::vector<const float*> ptrs(n);
  for (size_t i = 0; i < n; ++i) ptrs[i] = deltas_[i].data();
  ParamSet out(*layout_);
  switch (options_.rule) {
    case AggregationRule::kMedian:
      CoordinateMedian(ptrs, d, out.data());
      break;
    case AggregationRule::kTrimmedMean:
      CoordinateTrimmedMean(ptrs, d, TrimCount(options_.trim_beta, n), out.data());
      break;
    case AggregationRule::kMultiKrum: {
      const std::vector<size_t> chosen =
          MultiKrumSelect(ptrs, d, static_cast<size_t>(options_.krum_f));
      std::vector<const float*> selected;
      for (size_t i : chosen) selected.push_back(ptrs[i]);
      CoordinateTrimmedMean(selected, d, 0, out.data());
      break;
    }
    case AggregationRule::kMean:
      return Status::Internal("RobustRoundAggregator does not aggregate by mean");
  }
  AggregateReport report;
  report.mean_delta = std::move(out);
  report.total_weight = weight_sum_;
  report.count = n;
  report.mean_train_loss = loss_sum_ / static_cast<double>(n);
  ReleaseDeltas();
  consumed_ = true;
  return report;
}

}  // namespace fl::internal

namespace fl {

Result<AggregationOptions> AggregationOptionsFromConfig(const AlgorithmConfig& config) {
  AggregationOptions o;
  Result<AggregationRule> rule = internal::ParseAggregationRule(config.GetString("algorithm.aggregator"));
  if (!rule.ok()) return rule.status().WithContext("algorithm.aggregator");
  o.rule = *rule;
  o.trim_beta = config.GetDouble("algorithm.trim_beta");
  o.krum_f = config.GetInt("algorithm.krum_f");
  o.max_updates = config.GetInt("algorithm.robust_max_updates");
  FL_RETURN_IF_ERROR(internal::ValidateAggregationOptions(o));
  return o;
}

Result<std::unique_ptr<RoundAggregator>> NewDenseRoundAggregator(
    const AggregationOptions& options, std::shared_ptr<const Layout> layout, uint64_t round) {
  FL_RETURN_IF_ERROR(internal::ValidateAggregationOptions(options));
  if (layout == nullptr) return Status::InvalidArgument("NewDenseRoundAggregator: no layout");
  if (options.rule == AggregationRule::kMean) {
    return std::unique_ptr<RoundAggregator>(
        std::make_unique<internal::DenseRoundAggregator>(std::move(layout), round));
  }
  return std::unique_ptr<RoundAggregator>(
      std::make_unique<internal::RobustRoundAggregator>(options, std::move(layout), round));
}

}  // namespace fl
