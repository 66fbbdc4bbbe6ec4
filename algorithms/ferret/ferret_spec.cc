#include "algorithms/ferret/ferret_spec.h"

#include <cmath>

namespace fl::internal {
namespace {

// Every value here is an integer below 2^53, so it survives the trip through a double
// (and through protobuf's double on the wire) exactly.
constexpr char kNumBases[] = "ferret.num_bases";
constexpr char kSeedHi[] = "ferret.pool_seed_hi";
constexpr char kSeedLo[] = "ferret.pool_seed_lo";
constexpr char kEpochHi[] = "ferret.epoch_hi";
constexpr char kEpochLo[] = "ferret.epoch_lo";
constexpr char kDistribution[] = "ferret.distribution";
constexpr char kAmplitude[] = "ferret.amplitude";
constexpr char kPlan[] = "ferret.plan";
constexpr char kBlockSizeHi[] = "ferret.block_size_hi";
constexpr char kBlockSizeLo[] = "ferret.block_size_lo";
constexpr char kScale[] = "ferret.scale";
constexpr char kSelection[] = "ferret.selection";
constexpr char kBudget[] = "ferret.budget";
constexpr char kMinPerBlock[] = "ferret.min_per_block";
// Optional: tasks without it upload float32 values.
constexpr char kUploadFormat[] = "ferret.upload_format";

Result<uint32_t> ReadU32(const std::map<std::string, double>& extra, const char* key) {
  auto it = extra.find(key);
  if (it == extra.end()) {
    return Status::InvalidArgument(std::string("ferret task lacks ") + key +
                                   " (the server did not send Ferret's parameters)");
  }
  const double v = it->second;
  if (!(v >= 0 && v <= 4294967295.0) || std::floor(v) != v) {
    return Status::InvalidArgument(std::string(key) + " must be an integer in [0, 2^32)");
  }
  return static_cast<uint32_t>(v);
}

Result<uint64_t> ReadU64(const std::map<std::string, double>& extra, const char* hi_key,
                         const char* lo_key) {
  FL_ASSIGN_OR_RETURN(uint32_t hi, ReadU32(extra, hi_key));
  FL_ASSIGN_OR_RETURN(uint32_t lo, ReadU32(extra, lo_key));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

void WriteU64(uint64_t v, const char* hi_key, const char* lo_key,
              std::map<std::string, double>* extra) {
  (*extra)[hi_key] = static_cast<double>(v >> 32);
  (*extra)[lo_key] = static_cast<double>(v & 0xffffffffu);
}

}  // namespace

Status ValidateFerretRoundSpec(const FerretRoundSpec& s) {
  if (s.plan_kind != ferret::BlockPlanKind::kReference &&
      s.plan_kind != ferret::BlockPlanKind::kFixedSize) {
    return Status::InvalidArgument("ferret.block_plan: unknown kind " +
                                   std::to_string(static_cast<uint32_t>(s.plan_kind)));
  }
  if (s.plan_kind == ferret::BlockPlanKind::kFixedSize && s.block_size == 0) {
    return Status::InvalidArgument("ferret.block_plan: fixed block size must be > 0");
  }
  if (s.distribution != BasisDistribution::kRademacher &&
      s.distribution != BasisDistribution::kUniform &&
      s.distribution != BasisDistribution::kGaussian) {
    return Status::InvalidArgument("ferret.distribution: unknown value " +
                                   std::to_string(static_cast<uint32_t>(s.distribution)));
  }
  if (s.amplitude != ferret::BasisAmplitude::kUnit &&
      s.amplitude != ferret::BasisAmplitude::kInvSqrtDim) {
    return Status::InvalidArgument("ferret.amplitude: unknown value " +
                                   std::to_string(static_cast<uint32_t>(s.amplitude)));
  }
  if (s.num_bases < 1 || s.num_bases > ferret::kMaxSeeds) {
    return Status::InvalidArgument("ferret.num_bases must be in [1, " +
                                   std::to_string(ferret::kMaxSeeds) + "]");
  }
  return Status::Ok();
}

Result<ferret::BlockPlan> MakeFerretPlan(const FerretRoundSpec& spec, const Layout& layout) {
  FL_RETURN_IF_ERROR(ValidateFerretRoundSpec(spec));
  if (spec.plan_kind == ferret::BlockPlanKind::kFixedSize) {
    return ferret::BlockPlan::FixedSize(layout, spec.block_size);
  }
  return ferret::BlockPlan::Reference(layout);
}

ferret::BasisSpec MakeFerretBasis(const FerretRoundSpec& spec) {
  ferret::BasisSpec basis;
  basis.distribution = spec.distribution;
  basis.amplitude = spec.amplitude;
  basis.seeds = ferret::MakeSeedPool(spec.pool_seed, spec.epoch, spec.num_bases);
  return basis;
}

void WriteFerretExtra(const FerretRoundSpec& spec, const FerretProjection& projection,
                      std::map<std::string, double>* extra) {
  (*extra)[kNumBases] = spec.num_bases;
  WriteU64(spec.pool_seed, kSeedHi, kSeedLo, extra);
  WriteU64(spec.epoch, kEpochHi, kEpochLo, extra);
  (*extra)[kDistribution] = static_cast<uint32_t>(spec.distribution);
  (*extra)[kAmplitude] = static_cast<uint32_t>(spec.amplitude);
  (*extra)[kPlan] = static_cast<uint32_t>(spec.plan_kind);
  WriteU64(spec.block_size, kBlockSizeHi, kBlockSizeLo, extra);
  (*extra)[kScale] = static_cast<uint32_t>(projection.scale);
  (*extra)[kSelection] = static_cast<uint32_t>(projection.selection);
  (*extra)[kBudget] = projection.budget;
  (*extra)[kMinPerBlock] = projection.min_per_block;
  (*extra)[kUploadFormat] = static_cast<uint32_t>(projection.upload_format);
}

Status ReadFerretExtra(const std::map<std::string, double>& extra, FerretRoundSpec* spec,
                       FerretProjection* projection) {
  FerretRoundSpec s;
  FL_ASSIGN_OR_RETURN(s.num_bases, ReadU32(extra, kNumBases));
  FL_ASSIGN_OR_RETURN(s.pool_seed, ReadU64(extra, kSeedHi, kSeedLo));
  FL_ASSIGN_OR_RETURN(s.epoch, ReadU64(extra, kEpochHi, kEpochLo));
  FL_ASSIGN_OR_RETURN(uint32_t dist, ReadU32(extra, kDistribution));
  s.distribution = static_cast<BasisDistribution>(dist);
  FL_ASSIGN_OR_RETURN(uint32_t amplitude, ReadU32(extra, kAmplitude));
  s.amplitude = static_cast<ferret::BasisAmplitude>(amplitude);
  FL_ASSIGN_OR_RETURN(uint32_t plan, ReadU32(extra, kPlan));
  s.plan_kind = static_cast<ferret::BlockPlanKind>(plan);
  FL_ASSIGN_OR_RETURN(s.block_size, ReadU64(extra, kBlockSizeHi, kBlockSizeLo));
  FL_RETURN_IF_ERROR(ValidateFerretRoundSpec(s));

  FerretProjection p;
  FL_ASSIGN_OR_RETURN(uint32_t scale, ReadU32(extra, kScale));
  p.scale = static_cast<ferret::CoefficientScale>(scale);
  if (p.scale != ferret::CoefficientScale::kUnbiased &&
      p.scale != ferret::CoefficientScale::kReference) {
    return Status::InvalidArgument(std::string(kScale) + ": unknown value " +
                                   std::to_string(scale));
  }
  FL_ASSIGN_OR_RETURN(uint32_t selection, ReadU32(extra, kSelection));
  p.selection = static_cast<ferret::SelectionPolicy>(selection);
  if (p.selection != ferret::SelectionPolicy::kFixed &&
      p.selection != ferret::SelectionPolicy::kProportional) {
    return Status::InvalidArgument(std::string(kSelection) + ": unknown value " +
                                   std::to_string(selection));
  }
  FL_ASSIGN_OR_RETURN(p.budget, ReadU32(extra, kBudget));
  FL_ASSIGN_OR_RETURN(p.min_per_block, ReadU32(extra, kMinPerBlock));
  if (extra.count(kUploadFormat) != 0) {
    FL_ASSIGN_OR_RETURN(uint32_t format, ReadU32(extra, kUploadFormat));
    p.upload_format = static_cast<ferret::CoefficientTableFormat>(format);
    if (p.upload_format != ferret::CoefficientTableFormat::kFloat32 &&
        p.upload_format != ferret::CoefficientTableFormat::kBFloat16 &&
        p.upload_format != ferret::CoefficientTableFormat::kSampledInt8 &&
        p.upload_format != ferret::CoefficientTableFormat::kSampledInt4) {
      return Status::InvalidArgument(std::string(kUploadFormat) + ": unknown value " +
                                     std::to_string(format));
    }
  }
  *spec = s;
  *projection = p;
  return Status::Ok();
}

}  // namespace fl::internal
