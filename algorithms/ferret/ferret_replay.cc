#include "algorithms/ferret/ferret_replay.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace fl::internal {
namespace {

constexpr size_t kHeaderBytes = 4 + 4 + 8 + 4 + 8 + 4 + 4 + 8 + 8 + 4 + 8 + 8;

void PutLE(std::string* out, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// Reads little-endian integers from a buffer whose length was checked up front.
class HeaderReader {
 public:
  explicit HeaderReader(std::string_view bytes) : bytes_(bytes) {}
  uint64_t Get(int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += width;
    return v;
  }
  size_t pos() const { return pos_; }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

}  // namespace

std::string SerializeFerretReplay(const FerretReplay& r) {
  std::string out(kFerretReplayMagic, 4);
  PutLE(&out, kFerretReplayVersion, 4);
  PutLE(&out, r.layout_hash, 8);
  PutLE(&out, static_cast<uint32_t>(r.spec.plan_kind), 4);
  PutLE(&out, r.spec.block_size, 8);
  PutLE(&out, static_cast<uint32_t>(r.spec.distribution), 4);
  PutLE(&out, static_cast<uint32_t>(r.spec.amplitude), 4);
  PutLE(&out, r.spec.pool_seed, 8);
  PutLE(&out, r.spec.epoch, 8);
  PutLE(&out, r.spec.num_bases, 4);
  PutLE(&out, std::bit_cast<uint64_t>(r.multiplier), 8);
  PutLE(&out, std::bit_cast<uint64_t>(r.clip_norm), 8);
  out += ferret::SerializeCoefficientTable(r.table);
  return out;
}

Result<FerretReplay> ParseFerretReplay(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return Status::DataLoss("ferret replay record of " + std::to_string(bytes.size()) +
                            " bytes is shorter than its header");
  }
  if (std::memcmp(bytes.data(), kFerretReplayMagic, 4) != 0) {
    return Status::InvalidArgument("not a ferret replay record (bad magic)");
  }
  HeaderReader in(bytes.substr(4));
  const uint64_t version = in.Get(4);
  if (version != kFerretReplayVersion) {
    return Status::InvalidArgument("unsupported ferret replay record version " +
                                   std::to_string(version));
  }
  FerretReplay r;
  r.layout_hash = in.Get(8);
  r.spec.plan_kind = static_cast<ferret::BlockPlanKind>(in.Get(4));
  r.spec.block_size = in.Get(8);
  r.spec.distribution = static_cast<BasisDistribution>(in.Get(4));
  r.spec.amplitude = static_cast<ferret::BasisAmplitude>(in.Get(4));
  r.spec.pool_seed = in.Get(8);
  r.spec.epoch = in.Get(8);
  r.spec.num_bases = static_cast<uint32_t>(in.Get(4));
  r.multiplier = std::bit_cast<double>(in.Get(8));
  r.clip_norm = std::bit_cast<double>(in.Get(8));
  Status spec = ValidateFerretRoundSpec(r.spec);
  if (!spec.ok()) return spec.WithContext("ferret replay record");
  if (!std::isfinite(r.multiplier)) {
    return Status::InvalidArgument("ferret replay record: multiplier is not finite");
  }
  if (!std::isfinite(r.clip_norm) || r.clip_norm < 0) {
    return Status::InvalidArgument("ferret replay record: clip must be finite and >= 0");
  }
  const std::string_view table_bytes = bytes.substr(4 + in.pos());
  Result<ferret::CoefficientTable> table = ferret::ParseCoefficientTable(table_bytes);
  if (!table.ok()) return table.status().WithContext("ferret replay record");
  // Records hold float32 tables only (SerializeFerretReplay), so each record has one
  // encoding. The table parsed, so its u32 format follows its 4-byte magic.
  uint32_t format = 0;
  for (int i = 0; i < 4; ++i) format |= uint32_t{static_cast<uint8_t>(table_bytes[4 + i])} << (8 * i);
  if (format != static_cast<uint32_t>(ferret::CoefficientTableFormat::kFloat32)) {
    return Status::InvalidArgument(
        "ferret replay record: its coefficient table must be float32 (format 1), not format " +
        std::to_string(format));
  }
  for (const ferret::Coefficient& c : table->entries()) {
    if (!std::isfinite(c.value)) {
      return Status::InvalidArgument("ferret replay record: non-finite coefficient at block " +
                                     std::to_string(c.block) + ", seed " +
                                     std::to_string(c.seed));
    }
  }
  r.table = std::move(table).value();
  return r;
}

Result<ferret::ReconstructStats> ApplyFerretReplay(const FerretReplay& replay,
                                                   const FerretApplyOptions& options,
                                                   ParamSet* model) {
  if (model->layout().hash() != replay.layout_hash) {
    return Status::FailedPrecondition("ferret replay record belongs to layout " +
                                      std::to_string(replay.layout_hash) + ", the model has " +
                                      std::to_string(model->layout().hash()));
  }
  FL_ASSIGN_OR_RETURN(ferret::BlockPlan plan, MakeFerretPlan(replay.spec, model->layout()));
  const ferret::BasisSpec basis = MakeFerretBasis(replay.spec);
  ferret::ReconstructOptions ro;
  ro.multiplier = replay.multiplier;
  ro.clip_norm = replay.clip_norm;
  ro.norm_cache = options.norm_cache;
  ro.num_threads = options.num_threads;
  return ferret::Reconstruct(plan, basis, replay.table, ro, model->values());
}

Status ApplyFerretReplayRecord(std::string_view record, ParamSet* model) {
  FL_ASSIGN_OR_RETURN(FerretReplay replay, ParseFerretReplay(record));
  FerretApplyOptions options;
  options.num_threads = 0;
  return ApplyFerretReplay(replay, options, model).status();
}

}  // namespace fl::internal
