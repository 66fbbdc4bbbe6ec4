#include "algorithms/ferret/ferret_spec.h"

#include <cmath>

namespace fl::internal {
namespace {

// Every value here is an integer (TrainValue::Type::kInt): 64-bit ones travel exactly.
constexpr char kNumBases[] = "ferret.num_bases";
constexpr char kPoolSeed[] = "ferret.pool_seed";
constexpr char kEpoch[] = "ferret.epoch";
constexpr char kDistribution[] = "ferret.distribution";
constexpr char kAmplitude[] = "ferret.amplitude";
constexpr char kPlan[] = "ferret.plan";
constexpr char kBlockSize[] = "ferret.block_size";
constexpr char kScale[] = "ferret.scale";
constexpr char kSelection[] = "ferret.selection";
constexpr char kBudget[] = "ferret.budget";
constexpr char kMinPerBlock[] = "ferret.min_per_block";
// Optional: tasks without it upload float32 values.
constexpr char kUploadFormat[] = "ferret.upload_format";

Result<const TrainValue*> Find(const std::map<std::string, TrainValue>& extra, const char* key) {
  auto it = extra.find(key);
  if (it == extra.end()) {
    return Status::InvalidArgument(std::string("ferret task lacks ") + key +
                                   " (the server did not send Ferret's parameters)");
  }
  return &it->second;
}

Result<uint64_t> ReadU64(const std::map<std::string, TrainValue>& extra, const char* key) {
  FL_ASSIGN_OR_RETURN(const TrainValue* value, Find(extra, key));
  Result<uint64_t> v = value->AsUint64();
  if (!v.ok()) return v.status().WithContext(key);
  return v;
}

Result<uint32_t> ReadU32(const std::map<std::string, TrainValue>& extra, const char* key) {
  FL_ASSIGN_OR_RETURN(const TrainValue* value, Find(extra, key));
  Result<int64_t> v = value->AsInt64();
  if (!v.ok() || *v < 0 || *v > 0xffffffffll) {
    return Status::InvalidArgument(std::string(key) + " must be an integer in [0, 2^32), got " +
                                   value->ToString());
  }
  return static_cast<uint32_t>(*v);
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
                      std::map<std::string, TrainValue>* extra) {
  (*extra)[kNumBases] = spec.num_bases;
  (*extra)[kPoolSeed] = spec.pool_seed;
  (*extra)[kEpoch] = spec.epoch;
  (*extra)[kDistribution] = static_cast<uint32_t>(spec.distribution);
  (*extra)[kAmplitude] = static_cast<uint32_t>(spec.amplitude);
  (*extra)[kPlan] = static_cast<uint32_t>(spec.plan_kind);
  (*extra)[kBlockSize] = spec.block_size;
  (*extra)[kScale] = static_cast<uint32_t>(projection.scale);
  (*extra)[kSelection] = static_cast<uint32_t>(projection.selection);
  (*extra)[kBudget] = projection.budget;
  (*extra)[kMinPerBlock] = projection.min_per_block;
  (*extra)[kUploadFormat] = static_cast<uint32_t>(projection.upload_format);
}

Status ReadFerretExtra(const std::map<std::string, TrainValue>& extra, FerretRoundSpec* spec,
                       FerretProjection* projection) {
  FerretRoundSpec s;
  FL_ASSIGN_OR_RETURN(s.num_bases, ReadU32(extra, kNumBases));
  FL_ASSIGN_OR_RETURN(s.pool_seed, ReadU64(extra, kPoolSeed));
  FL_ASSIGN_OR_RETURN(s.epoch, ReadU64(extra, kEpoch));
  FL_ASSIGN_OR_RETURN(uint32_t dist, ReadU32(extra, kDistribution));
  s.distribution = static_cast<BasisDistribution>(dist);
  FL_ASSIGN_OR_RETURN(uint32_t amplitude, ReadU32(extra, kAmplitude));
  s.amplitude = static_cast<ferret::BasisAmplitude>(amplitude);
  FL_ASSIGN_OR_RETURN(uint32_t plan, ReadU32(extra, kPlan));
  s.plan_kind = static_cast<ferret::BlockPlanKind>(plan);
  FL_ASSIGN_OR_RETURN(s.block_size, ReadU64(extra, kBlockSize));
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
