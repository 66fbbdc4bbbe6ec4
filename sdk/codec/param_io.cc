#include "codec/param_io.h"

#include <cstring>

#include "codec/byte_io.h"
#include "codec/dense_codec.h"
#include "fl/env.h"

namespace fl::internal {
namespace {

constexpr uint32_t kMaxRank = 16;
constexpr uint32_t kMaxNameLength = 4096;
// No real model comes near 2^40 parameters; the cap keeps products from overflowing.
constexpr uint64_t kMaxNumel = 1ull << 40;

Status Truncated(const char* what) {
  return Status::DataLoss(std::string("truncated ") + what);
}

}  // namespace

std::string SerializeLayout(const Layout& layout) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(layout.num_tensors()));
  for (const TensorSpec& t : layout.tensors()) {
    PutU32(&out, static_cast<uint32_t>(t.name.size()));
    out.append(t.name);
    PutU32(&out, static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) PutU64(&out, static_cast<uint64_t>(d));
  }
  PutU64(&out, layout.hash());
  return out;
}

Result<Layout> ParseLayout(std::string_view bytes) {
  ByteReader r(bytes);
  uint32_t num_tensors = 0;
  if (!r.U32(&num_tensors)) return Truncated("layout header");
  // Each tensor takes at least 8 bytes: reject absurd counts before looping.
  if (num_tensors > r.remaining() / 8) return Status::DataLoss("layout: tensor count exceeds data");
  Layout layout;
  uint64_t total = 0;
  for (uint32_t i = 0; i < num_tensors; ++i) {
    uint32_t name_len = 0;
    std::string_view name;
    uint32_t rank = 0;
    if (!r.U32(&name_len)) return Truncated("layout tensor name length");
    if (name_len > kMaxNameLength) {
      return Status::InvalidArgument("layout: tensor name of " + std::to_string(name_len) + " bytes");
    }
    if (!r.Bytes(name_len, &name)) return Truncated("layout tensor name");
    if (!r.U32(&rank)) return Truncated("layout tensor rank");
    if (rank > kMaxRank) return Status::InvalidArgument("layout: rank " + std::to_string(rank));
    std::vector<int64_t> shape(rank);
    uint64_t numel = 1;
    for (uint32_t k = 0; k < rank; ++k) {
      uint64_t d = 0;
      if (!r.U64(&d)) return Truncated("layout tensor shape");
      if (d > kMaxNumel) {
        return Status::InvalidArgument("layout: dimension out of range in tensor '" +
                                       std::string(name) + "'");
      }
      shape[k] = static_cast<int64_t>(d);
      numel = d == 0 ? 0 : (numel > kMaxNumel / d ? kMaxNumel + 1 : numel * d);
    }
    total += numel;
    if (numel > kMaxNumel || total > kMaxNumel) {
      return Status::InvalidArgument("layout: too many parameters");
    }
    layout.Add(std::string(name), std::move(shape));
  }
  uint64_t hash = 0;
  if (!r.U64(&hash)) return Truncated("layout hash");
  if (r.remaining() != 0) return Status::DataLoss("layout: trailing bytes");
  if (hash != layout.hash()) return Status::DataLoss("layout: hash does not match content");
  return layout;
}

std::string SerializeParamSet(const ParamSet& params) {
  std::string layout = SerializeLayout(params.layout());
  std::string out;
  out.reserve(4 + 4 + 8 + layout.size() + 8 + params.size() * 4);
  out.append(kParamSetMagic, 4);
  PutU32(&out, kParamSetFormatVersion);
  PutU64(&out, layout.size());
  out.append(layout);
  PutU64(&out, params.size());
  std::string values;
  Status st = EncodeDense(params.values(), Encoding::kDenseF32, &values);
  (void)st;  // f32 is dense: cannot fail
  out.append(values);
  return out;
}

Result<ParamSet> ParseParamSet(std::string_view bytes) {
  ByteReader r(bytes);
  std::string_view magic;
  if (!r.Bytes(4, &magic) || std::memcmp(magic.data(), kParamSetMagic, 4) != 0) {
    return Status::InvalidArgument("not a serialized ParamSet (bad magic)");
  }
  uint32_t version = 0;
  if (!r.U32(&version)) return Truncated("ParamSet header");
  if (version != kParamSetFormatVersion) {
    return Status::InvalidArgument("unsupported ParamSet format version " + std::to_string(version));
  }
  uint64_t layout_len = 0;
  std::string_view layout_bytes;
  if (!r.U64(&layout_len)) return Truncated("ParamSet header");
  if (layout_len > r.remaining() || !r.Bytes(static_cast<size_t>(layout_len), &layout_bytes)) {
    return Truncated("ParamSet layout");
  }
  Result<Layout> layout = ParseLayout(layout_bytes);
  if (!layout.ok()) return layout.status().WithContext("ParamSet");
  uint64_t num_values = 0;
  if (!r.U64(&num_values)) return Truncated("ParamSet value count");
  if (num_values != layout->total_numel()) {
    return Status::DataLoss("ParamSet: value count " + std::to_string(num_values) +
                            " does not match layout (" + std::to_string(layout->total_numel()) + ")");
  }
  // Check the length before allocating, so a forged count cannot trigger a huge buffer.
  if (r.remaining() != num_values * 4) {
    return Status::DataLoss("ParamSet: " + std::to_string(r.remaining()) + " value bytes, expected " +
                            std::to_string(num_values * 4));
  }
  std::string_view values;
  r.Bytes(r.remaining(), &values);
  ParamSet params(std::move(layout).value());
  FL_RETURN_IF_ERROR(DecodeDense(values, Encoding::kDenseF32, params.values()));
  return params;
}

}  // namespace fl::internal

namespace fl {

Status WriteModelFile(const std::string& path, const ParamSet& params) {
  return Env::Default()->WriteFileAtomic(path, internal::SerializeParamSet(params), /*sync=*/true);
}

Result<ParamSet> ReadModelFile(const std::string& path) {
  FL_ASSIGN_OR_RETURN(std::string data, Env::Default()->ReadFile(path));
  Result<ParamSet> params = internal::ParseParamSet(data);
  if (!params.ok()) return params.status().WithContext(path);
  return params;
}

}  // namespace fl
