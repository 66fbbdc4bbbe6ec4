#include "algorithms/fedavg/fedavg_strategy.h"

#include <cmath>
#include <cstring>

#include "algorithms/fedavg/dense_round_aggregator.h"
#include "algorithms/option_checks.h"
#include "algorithms/robust/robust_aggregator.h"
#include "codec/byte_io.h"
#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

constexpr char kStateMagic[4] = {'F', 'A', 'O', 'S'};  // FedAvg optimizer state
// Version 2 appends the running means of the momentum clip; without them version 1 is
// written, byte for byte as before.
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kStateVersionWithNormMeans = 2;

}  // namespace

Result<ServerOptimizer> ParseServerOptimizer(std::string_view name) {
  if (name == "sgd") return ServerOptimizer::kSgd;
  if (name == "adam") return ServerOptimizer::kAdam;
  if (name == "yogi") return ServerOptimizer::kYogi;
  return Status::InvalidArgument("unknown server optimizer '" + std::string(name) +
                                 "' (expected sgd, adam or yogi)");
}

std::string_view ServerOptimizerName(ServerOptimizer optimizer) {
  switch (optimizer) {
    case ServerOptimizer::kSgd: return "sgd";
    case ServerOptimizer::kAdam: return "adam";
    case ServerOptimizer::kYogi: return "yogi";
  }
  return "?";
}

Status ValidateFedAvgOptions(const FedAvgOptions& o) {
  if (!(std::isfinite(o.server_lr) && o.server_lr > 0)) return BadOption("algorithm.server_lr", "must be > 0");
  if (!InUnitInterval(o.server_momentum)) return BadOption("algorithm.server_momentum", "must be in [0, 1)");
  if (!InUnitInterval(o.beta1)) return BadOption("algorithm.beta1", "must be in [0, 1)");
  if (!InUnitInterval(o.beta2)) return BadOption("algorithm.beta2", "must be in [0, 1)");
  if (!(std::isfinite(o.tau) && o.tau > 0)) return BadOption("algorithm.tau", "must be > 0");
  if (!(std::isfinite(o.momentum_clip) && o.momentum_clip >= 0)) {
    return BadOption("algorithm.momentum_clip", "must be >= 0 (0: off)");
  }
  if (!(std::isfinite(o.momentum_clip_adaptive) && o.momentum_clip_adaptive >= 0)) {
    return BadOption("algorithm.momentum_clip_adaptive", "must be >= 0 (0: off)");
  }
  FL_RETURN_IF_ERROR(ValidateAggregationOptions(o.aggregation));
  FL_RETURN_IF_ERROR(ValidateLocalTraining(o.train));
  if (!IsDenseEncoding(o.train.upload_encoding)) return BadOption("train.upload_encoding", "must be f32, f16 or bf16");
  return Status::Ok();
}

FedAvgStrategy::FedAvgStrategy(FedAvgOptions options) : options_(std::move(options)) {}

TrainConfig FedAvgStrategy::ConfigureRound(uint64_t round) const {
  TrainConfig config = options_.train;
  config.seed = 0;
  return config;
}

std::unique_ptr<RoundAggregator> FedAvgStrategy::NewRoundAggregator(const ParamSet& global,
                                                                    uint64_t round) {
  if (options_.aggregation.rule == AggregationRule::kMean) {
    return std::make_unique<DenseRoundAggregator>(global.shared_layout(), round);
  }
  // The options were validated with the strategy's (ValidateFedAvgOptions). The round's
  // leaf aggregators share one count of held updates, so max_updates caps the round.
  if (robust_held_ == nullptr || robust_round_ != round) {
    robust_round_ = round;
    robust_held_ = std::make_shared<RobustRoundAggregator::HeldCount>(0);
  }
  return std::make_unique<RobustRoundAggregator>(options_.aggregation, global.shared_layout(),
                                                 round, robust_held_);
}

bool FedAvgStrategy::HasMoments() const {
  return options_.server_optimizer != ServerOptimizer::kSgd || options_.server_momentum > 0 ||
         ClipsMomentum();
}

bool FedAvgStrategy::ClipsMomentum() const {
  return options_.momentum_clip > 0 || options_.momentum_clip_adaptive > 0;
}

uint64_t FedAvgStrategy::ClipMomentum(const Layout& layout, std::vector<float>* m,
                                      std::vector<double>* means) const {
  if (means->size() != layout.num_tensors()) means->assign(layout.num_tensors(), 0.0);
  uint64_t clipped = 0;
  for (size_t l = 0; l < layout.num_tensors(); ++l) {
    const TensorSpec& t = layout.tensors()[l];
    double sum = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) sum += double{(*m)[i]} * (*m)[i];
    const double norm = std::sqrt(sum);
    double phi = options_.momentum_clip > 0 ? options_.momentum_clip : 0;
    // The running mean exists only after a first step.
    if (options_.momentum_clip_adaptive > 0 && steps_ > 0 && (*means)[l] > 0) {
      const double adaptive = options_.momentum_clip_adaptive * (*means)[l];
      phi = phi > 0 ? std::min(phi, adaptive) : adaptive;
    }
    (*means)[l] += (norm - (*means)[l]) / static_cast<double>(steps_ + 1);
    if (phi <= 0 || !(norm > phi)) continue;
    const double scale = phi / norm;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      (*m)[i] = static_cast<float>((*m)[i] * scale);
    }
    ++clipped;
  }
  return clipped;
}

std::map<std::string, double> FedAvgStrategy::LastRoundStats() const {
  if (!ClipsMomentum()) return {};
  return {{"momentum.clipped_tensors", static_cast<double>(last_clipped_)}};
}

Status FedAvgStrategy::ApplyRound(AggregateReport report, ParamSet* global) {
  const ParamSet& delta = report.mean_delta;
  if (delta.layout().hash() != global->layout().hash() || delta.size() != global->size()) {
    return Status::InvalidArgument("ApplyRound: aggregate layout differs from the global model");
  }
  if (!delta.AllFinite()) return Status::InvalidArgument("ApplyRound: mean delta is not finite");
  const size_t n = global->size();
  if ((!m_.empty() && m_.size() != n) || (!v_.empty() && v_.size() != n)) {
    return Status::FailedPrecondition("ApplyRound: optimizer state has " + std::to_string(m_.size()) +
                                      " values, the model " + std::to_string(n));
  }
  const double lr = options_.server_lr;
  const float* d = delta.data();
  ParamSet next = *global;
  float* w = next.data();

  if (!HasMoments()) {
    for (size_t i = 0; i < n; ++i) w[i] = static_cast<float>(w[i] + lr * d[i]);
    if (!next.AllFinite()) return Status::InvalidArgument("ApplyRound: step makes the model non-finite");
    *global = std::move(next);
    ++steps_;
    return Status::Ok();
  }

  // Compute the new moments aside and commit only if the step is finite.
  std::vector<float> m = m_.empty() ? std::vector<float>(n, 0.0f) : m_;
  std::vector<float> v;
  std::vector<double> means = m_norm_means_;
  uint64_t clipped = 0;
  if (ClipsMomentum()) {
    // Moments first, then the clip, then the step with the clipped m.
    const bool sgd = options_.server_optimizer == ServerOptimizer::kSgd;
    const double b1 = sgd ? options_.server_momentum : options_.beta1;
    const double b2 = options_.beta2;
    const double tau = options_.tau;
    if (!sgd) v = v_.empty() ? std::vector<float>(n, static_cast<float>(tau * tau)) : v_;
    const bool yogi = options_.server_optimizer == ServerOptimizer::kYogi;
    for (size_t i = 0; i < n; ++i) {
      const double di = d[i];
      m[i] = static_cast<float>(sgd ? b1 * m[i] + di : b1 * m[i] + (1 - b1) * di);
      if (sgd) continue;
      const double d2 = di * di;
      if (yogi) {
        const double diff = static_cast<double>(v[i]) - d2;
        v[i] = static_cast<float>(v[i] - (1 - b2) * d2 * static_cast<double>((diff > 0) - (diff < 0)));
      } else {
        v[i] = static_cast<float>(b2 * v[i] + (1 - b2) * d2);
      }
    }
    clipped = ClipMomentum(global->layout(), &m, &means);
    for (size_t i = 0; i < n; ++i) {
      const double step = sgd ? double{m[i]} : m[i] / (std::sqrt(double{v[i]}) + tau);
      w[i] = static_cast<float>(w[i] + lr * step);
    }
  } else if (options_.server_optimizer == ServerOptimizer::kSgd) {
    const double mu = options_.server_momentum;
    for (size_t i = 0; i < n; ++i) {
      m[i] = static_cast<float>(mu * m[i] + d[i]);
      w[i] = static_cast<float>(w[i] + lr * m[i]);
    }
  } else {
    const double b1 = options_.beta1;
    const double b2 = options_.beta2;
    const double tau = options_.tau;
    v = v_.empty() ? std::vector<float>(n, static_cast<float>(tau * tau)) : v_;
    const bool yogi = options_.server_optimizer == ServerOptimizer::kYogi;
    for (size_t i = 0; i < n; ++i) {
      const double di = d[i];
      const double d2 = di * di;
      const double mi = b1 * m[i] + (1 - b1) * di;
      double vi;
      if (yogi) {
        const double diff = static_cast<double>(v[i]) - d2;
        vi = v[i] - (1 - b2) * d2 * static_cast<double>((diff > 0) - (diff < 0));
      } else {
        vi = b2 * v[i] + (1 - b2) * d2;
      }
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      w[i] = static_cast<float>(w[i] + lr * mi / (std::sqrt(vi) + tau));
    }
  }
  if (!next.AllFinite() || FindNonFinite(m) != n || FindNonFinite(v) != v.size()) {
    return Status::InvalidArgument("ApplyRound: step makes the model or optimizer state non-finite");
  }
  *global = std::move(next);
  m_ = std::move(m);
  v_ = std::move(v);
  m_norm_means_ = std::move(means);
  last_clipped_ = clipped;
  ++steps_;
  return Status::Ok();
}

// Layout: "FAOS", u32 version, u32 optimizer, u64 steps, u64 n_m, u64 n_v, then n_m and
// n_v little-endian float32 values.
std::string FedAvgStrategy::SaveState() const {
  if (m_.empty() && v_.empty()) return {};
  std::string out(kStateMagic, 4);
  PutU32(&out, m_norm_means_.empty() ? kStateVersion : kStateVersionWithNormMeans);
  PutU32(&out, static_cast<uint32_t>(options_.server_optimizer));
  PutU64(&out, steps_);
  PutU64(&out, m_.size());
  PutU64(&out, v_.size());
  std::string values;
  (void)EncodeDense(m_, Encoding::kDenseF32, &values);
  out += values;
  (void)EncodeDense(v_, Encoding::kDenseF32, &values);
  out += values;
  if (!m_norm_means_.empty()) {
    PutU64(&out, m_norm_means_.size());
    for (double mean : m_norm_means_) PutF64(&out, mean);
  }
  return out;
}

Status FedAvgStrategy::LoadState(std::string_view state) {
  if (state.empty()) {
    m_.clear();
    v_.clear();
    m_norm_means_.clear();
    steps_ = 0;
    return Status::Ok();
  }
  constexpr size_t kHeader = 4 + 4 + 4 + 8 + 8 + 8;
  if (state.size() < kHeader || std::memcmp(state.data(), kStateMagic, 4) != 0) {
    return Status::DataLoss("FedAvg optimizer state: bad header");
  }
  ByteReader header(state.substr(4, kHeader - 4));
  uint32_t version = 0, optimizer_id = 0;
  uint64_t steps = 0, n_m = 0, n_v = 0;
  header.U32(&version);
  header.U32(&optimizer_id);
  header.U64(&steps);
  header.U64(&n_m);
  header.U64(&n_v);
  if (version != kStateVersion && version != kStateVersionWithNormMeans) {
    return Status::DataLoss("FedAvg optimizer state: unsupported version");
  }
  const auto optimizer = static_cast<ServerOptimizer>(optimizer_id);
  if (optimizer != options_.server_optimizer) {
    return Status::InvalidArgument("FedAvg optimizer state was saved by server optimizer " +
                                   std::to_string(static_cast<int>(optimizer)) + ", this run uses " +
                                   std::string(ServerOptimizerName(options_.server_optimizer)));
  }
  uint64_t body = state.size() - kHeader;
  // Bound the counts before multiplying, so forged values cannot overflow.
  if (n_m > body / 4 || n_v > body / 4 || (n_m + n_v) * 4 > body) {
    return Status::DataLoss("FedAvg optimizer state: length does not match its counts");
  }
  std::vector<double> means;
  if (version == kStateVersionWithNormMeans) {
    ByteReader tail(state.substr(kHeader + (n_m + n_v) * 4));
    uint64_t n_means = 0;
    if (!tail.U64(&n_means) || n_means != (body - (n_m + n_v) * 4 - 8) / 8 ||
        (body - (n_m + n_v) * 4 - 8) % 8 != 0) {
      return Status::DataLoss("FedAvg optimizer state: bad momentum norm means");
    }
    means.resize(n_means);
    for (double& mean : means) {
      if (!tail.F64(&mean) || !std::isfinite(mean)) {
        return Status::DataLoss("FedAvg optimizer state: bad momentum norm means");
      }
    }
    body = (n_m + n_v) * 4;
  }
  if ((n_m + n_v) * 4 != body) {
    return Status::DataLoss("FedAvg optimizer state: length does not match its counts");
  }
  std::vector<float> m(n_m), v(n_v);
  FL_RETURN_IF_ERROR(DecodeDense(state.substr(kHeader, n_m * 4), Encoding::kDenseF32, m));
  FL_RETURN_IF_ERROR(DecodeDense(state.substr(kHeader + n_m * 4, n_v * 4), Encoding::kDenseF32, v));
  if (FindNonFinite(m) != m.size() || FindNonFinite(v) != v.size()) {
    return Status::DataLoss("FedAvg optimizer state: non-finite values");
  }
  m_ = std::move(m);
  v_ = std::move(v);
  m_norm_means_ = std::move(means);
  steps_ = steps;
  return Status::Ok();
}

}  // namespace fl::internal
