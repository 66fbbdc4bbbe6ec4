#include "algorithms/ferret/ferret_strategy.h"

#include <cmath>
#include <cstring>

#include "algorithms/ferret/ferret_replay.h"
#include "algorithms/ferret/ferret_round_aggregator.h"
#include "algorithms/option_checks.h"
#include "core/logging.h"

namespace fl::internal {
namespace {

constexpr char kStateMagic[4] = {'F', 'R', 'S', 'T'};  // Ferret strategy state
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateHeader = 4 + 4 + 8;

// The round spec the options describe, for the seed pool of `epoch`.
FerretRoundSpec RoundSpecOf(const FerretOptions& o, uint64_t epoch) {
  FerretRoundSpec spec;
  spec.plan_kind = o.plan_kind;
  spec.block_size = o.block_size;
  spec.distribution = o.distribution;
  spec.amplitude = o.amplitude;
  spec.pool_seed = o.pool_seed;
  spec.epoch = epoch;
  spec.num_bases = o.num_bases;
  return spec;
}

}  // namespace

Status ValidateFerretOptions(const FerretOptions& o) {
  FL_RETURN_IF_ERROR(ValidateFerretRoundSpec(RoundSpecOf(o, /*epoch=*/0)));
  if (o.seed_policy != FerretSeedPolicy::kFixed && o.seed_policy != FerretSeedPolicy::kFresh) {
    return BadOption("ferret.seed_policy", "must be fixed or fresh");
  }
  if (o.projection.budget > o.num_bases) {
    return BadOption("ferret.bases_per_block", "must be <= ferret.num_bases (0 means all)");
  }
  if (o.projection.min_per_block < 1) return BadOption("ferret.min_per_block", "must be >= 1");
  if (!(std::isfinite(o.clip) && o.clip >= 0)) return BadOption("ferret.clip", "must be >= 0");
  if (!(std::isfinite(o.server_lr) && o.server_lr > 0)) return BadOption("ferret.server_lr", "must be > 0");
  if (!InUnitInterval(o.server_momentum)) return BadOption("ferret.server_momentum", "must be in [0, 1)");
  if (o.server_momentum > 0 && o.seed_policy != FerretSeedPolicy::kFixed) {
    return BadOption("ferret.server_momentum",
               "needs ferret.seed_policy=fixed (momentum adds tables of the same bases)");
  }
  if (o.threads < 0) return BadOption("ferret.threads", "must be >= 0");
  FL_RETURN_IF_ERROR(ValidateLocalTraining(o.train));
  return Status::Ok();
}

FerretStrategy::FerretStrategy(FerretOptions options) : options_(std::move(options)) {
  options_.train.upload_encoding = Encoding::kFerret;
}

double FerretStrategy::ServerLrForRound(uint64_t round) const {
  const double t = options_.server_lr_decay_rounds;
  if (t == 0 || round <= 1) return options_.server_lr;
  return options_.server_lr * t / (t + static_cast<double>(round - 1));
}

FerretRoundSpec FerretStrategy::SpecForRound(uint64_t round) const {
  return RoundSpecOf(options_, options_.seed_policy == FerretSeedPolicy::kFresh ? round : 0);
}

TrainConfig FerretStrategy::ConfigureRound(uint64_t round) const {
  TrainConfig config = options_.train;
  config.seed = 0;
  WriteFerretExtra(SpecForRound(round), options_.projection, &config.extra);
  return config;
}

std::unique_ptr<RoundAggregator> FerretStrategy::NewRoundAggregator(const ParamSet& global,
                                                                    uint64_t round) {
  const FerretRoundSpec spec = SpecForRound(round);
  if (!(round_.has_value() && spec == spec_ && plan_.has_value() &&
        plan_->layout_hash() == global.layout().hash())) {
    if (!(spec.pool_seed == spec_.pool_seed && spec.epoch == spec_.epoch &&
          spec.num_bases == spec_.num_bases)) {
      norm_cache_.Clear();  // other seeds: the cached norms would never be hit again
    }
    spec_ = spec;
    basis_ = MakeFerretBasis(spec);
    Result<ferret::BlockPlan> plan = MakeFerretPlan(spec, global.layout());
    if (plan.ok()) {
      plan_ = std::move(plan).value();
    } else {
      FL_LOG(ERROR) << "ferret: no block plan for the model: " << plan.status().ToString();
      plan_.reset();
    }
  }
  round_ = round;
  FerretRoundKey key;
  key.round = round;
  key.layout_hash = global.layout().hash();
  key.basis_hash = basis_.Hash();
  key.num_seeds = basis_.num_seeds();
  if (plan_.has_value()) {
    key.plan_hash = plan_->hash();
    key.num_blocks = plan_->num_blocks();
  }
  return std::make_unique<FerretRoundAggregator>(key);
}

Status FerretStrategy::ApplyRound(AggregateReport report, ParamSet* global) {
  if (report.aggregate_encoding != Encoding::kFerret || report.encoded_aggregate.empty()) {
    return Status::InvalidArgument("FerretStrategy::ApplyRound: the aggregate is not a ferret "
                                   "coefficient table");
  }
  if (!round_.has_value() || !plan_.has_value()) {
    return Status::FailedPrecondition("FerretStrategy::ApplyRound: no round was started");
  }
  if (plan_->layout_hash() != global->layout().hash()) {
    return Status::FailedPrecondition("FerretStrategy::ApplyRound: the model's layout differs "
                                      "from the round's");
  }
  Result<ferret::CoefficientTable> mean = ferret::ParseCoefficientTable(report.encoded_aggregate);
  if (!mean.ok()) return mean.status().WithContext("FerretStrategy::ApplyRound");
  FL_RETURN_IF_ERROR(ferret::ValidateCoefficientTable(*mean, plan_->hash(), basis_.Hash(),
                                                      basis_.num_seeds(), plan_->num_blocks()));

  // Server momentum in coefficient space: C = momentum * C_prev + mean.
  ferret::CoefficientTable table = std::move(mean).value();
  if (options_.server_momentum > 0 && momentum_.has_value()) {
    ferret::CoefficientAccumulator acc(table.plan_hash(), table.basis_hash(), table.num_seeds(),
                                       table.num_blocks());
    FL_RETURN_IF_ERROR(acc.Add(table, 1.0));
    Status prev = acc.Add(*momentum_, options_.server_momentum);
    if (prev.code() == StatusCode::kFailedPrecondition) {
      return Status::FailedPrecondition("FerretStrategy::ApplyRound: the momentum table belongs "
                                        "to other bases or another model: " + prev.message());
    }
    FL_RETURN_IF_ERROR(prev);
    FL_ASSIGN_OR_RETURN(table, acc.ToTable(1.0));
  }

  FerretReplay replay;
  replay.layout_hash = global->layout().hash();
  replay.spec = spec_;
  replay.multiplier = -ServerLrForRound(*round_);
  replay.clip_norm = options_.clip;
  replay.table = table;
  std::string record = SerializeFerretReplay(replay);
  // Apply what was serialized, through the clients' code path: what the server stores
  // and sends is then by construction what it applied.
  FL_ASSIGN_OR_RETURN(FerretReplay parsed, ParseFerretReplay(record));
  FerretApplyOptions apply;
  apply.num_threads = options_.threads;
  apply.norm_cache = &norm_cache_;
  ParamSet next = *global;
  FL_ASSIGN_OR_RETURN(ferret::ReconstructStats stats, ApplyFerretReplay(parsed, apply, &next));
  if (!next.AllFinite()) {
    return Status::InvalidArgument("FerretStrategy::ApplyRound: the step makes the model "
                                   "non-finite");
  }

  *global = std::move(next);
  if (options_.server_momentum > 0) momentum_ = std::move(table);
  ++steps_;
  last_stats_ = {
      {"ferret.terms_applied", static_cast<double>(stats.terms_applied)},
      {"ferret.terms_clipped", static_cast<double>(stats.terms_clipped)},
      {"ferret.terms_skipped_nonfinite", static_cast<double>(stats.terms_skipped_nonfinite)},
      {"ferret.server_lr", -parsed.multiplier},
      {"ferret.coefficients", static_cast<double>(parsed.table.size())},
      {"ferret.replay_bytes", static_cast<double>(record.size())},
  };
  FL_LOG(INFO) << "ferret round " << *round_ << ": " << report.count << " tables, "
               << parsed.table.size() << " coefficients, " << stats.terms_applied
               << " terms applied, " << stats.terms_clipped << " clipped to "
               << options_.clip << ", " << stats.terms_skipped_nonfinite
               << " skipped (non-finite); replay record " << record.size() << " bytes";
  pending_replay_ = std::move(record);
  return Status::Ok();
}

std::string FerretStrategy::TakeReplayRecord() {
  std::string out = std::move(pending_replay_);
  pending_replay_.clear();
  return out;
}

// Layout: "FRST", u32 version, u64 steps, then the momentum table's wire format (absent
// when there is no momentum table).
std::string FerretStrategy::SaveState() const {
  if (!momentum_.has_value()) return {};
  std::string out(kStateMagic, 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(kStateVersion >> (8 * i)));
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(steps_ >> (8 * i)));
  out += ferret::SerializeCoefficientTable(*momentum_);
  return out;
}

Status FerretStrategy::LoadState(std::string_view state) {
  if (state.empty()) {
    momentum_.reset();
    steps_ = 0;
    return Status::Ok();
  }
  if (state.size() < kStateHeader || std::memcmp(state.data(), kStateMagic, 4) != 0) {
    return Status::DataLoss("ferret strategy state: bad header");
  }
  auto le = [&](size_t pos, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(state[pos + i])) << (8 * i);
    }
    return v;
  };
  if (le(4, 4) != kStateVersion) return Status::DataLoss("ferret strategy state: unsupported version");
  Result<ferret::CoefficientTable> table = ferret::ParseCoefficientTable(state.substr(kStateHeader));
  if (!table.ok()) return Status::DataLoss("ferret strategy state: " + table.status().message());
  for (const ferret::Coefficient& c : table->entries()) {
    if (!std::isfinite(c.value)) return Status::DataLoss("ferret strategy state: non-finite momentum");
  }
  steps_ = le(8, 8);
  momentum_ = std::move(table).value();
  return Status::Ok();
}

}  // namespace fl::internal
