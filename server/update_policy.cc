#include "server/update_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "codec/dense_codec.h"
#include "codec/named_subset_codec.h"
#include "core/config.h"

namespace fl::internal {
namespace {

constexpr size_t kBlockValues = 4096;

// Bytes per value of a dense encoding (0 if not dense).
size_t ValueBytes(Encoding encoding) { return DenseEncodedSize(1, encoding); }

}  // namespace

Result<WeightPolicy> ParseWeightPolicy(std::string_view name) {
  if (name == "examples") return WeightPolicy::kExamples;
  if (name == "uniform") return WeightPolicy::kUniform;
  return Status::InvalidArgument("unknown weight policy '" + std::string(name) +
                                 "' (expected examples or uniform)");
}

std::string_view WeightPolicyName(WeightPolicy policy) {
  return policy == WeightPolicy::kUniform ? "uniform" : "examples";
}

Result<WeightOverCap> ParseWeightOverCap(std::string_view name) {
  if (name == "clip") return WeightOverCap::kClip;
  if (name == "refuse") return WeightOverCap::kRefuse;
  return Status::InvalidArgument("unknown over-cap action '" + std::string(name) +
                                 "' (expected clip or refuse)");
}

std::string_view WeightOverCapName(WeightOverCap action) {
  return action == WeightOverCap::kRefuse ? "refuse" : "clip";
}

Status ValidateUpdatePolicy(const UpdatePolicy& policy) {
  if (!(policy.max_weight > 0 && policy.max_weight <= kMaxWeightLimit)) {
    return Status::InvalidArgument("coordinator.max_weight must be in (0, " +
                                   FormatConfigNumber(kMaxWeightLimit) + "] (got " +
                                   FormatConfigNumber(policy.max_weight) + ")");
  }
  return Status::Ok();
}

Result<double> PolicyWeight(const UpdatePolicy& policy, double claimed, bool* clipped) {
  *clipped = false;
  if (policy.weight_policy == WeightPolicy::kUniform) return 1.0;
  if (!std::isfinite(claimed) || !(claimed > 0)) return claimed;
  if (claimed <= policy.max_weight) return claimed;
  if (policy.over_cap == WeightOverCap::kRefuse) {
    return Status::InvalidArgument("update weight " + FormatConfigNumber(claimed) +
                                   " exceeds coordinator.max_weight " +
                                   FormatConfigNumber(policy.max_weight));
  }
  *clipped = true;
  return policy.max_weight;
}

namespace {

// The value runs of a dense or keyed payload (one run for dense); empty for other
// encodings. InvalidArgument if the bytes do not fit.
Result<NamedSubsetValues> ValueRuns(const Payload& payload) {
  if (payload.meta.encoding == Encoding::kNamedSubset) return LocateNamedSubsetValues(payload.bytes);
  NamedSubsetValues runs;
  runs.value_encoding = payload.meta.encoding;
  const size_t width = ValueBytes(payload.meta.encoding);
  if (width == 0) return runs;
  if (payload.bytes.size() % width != 0) {
    return Status::InvalidArgument("update of " + std::to_string(payload.bytes.size()) +
                                   " bytes is not a whole number of values");
  }
  runs.spans.push_back({0, payload.bytes.size() / width});
  return runs;
}

// Visits `count` values encoded at `data` in blocks: fn(span<float>) may change them,
// and with `write` they are re-encoded in place. The one loop behind the norm bound and
// the asynchronous gap penalty.
template <typename Fn>
Status ForEachBlock(char* data, size_t count, Encoding encoding, bool write, Fn fn) {
  const size_t width = ValueBytes(encoding);
  float block[kBlockValues];
  std::string encoded;
  for (size_t start = 0; start < count; start += kBlockValues) {
    const size_t n = std::min(kBlockValues, count - start);
    std::span<float> values(block, n);
    char* at = data + start * width;
    FL_RETURN_IF_ERROR(DecodeDense(std::string_view(at, n * width), encoding, values));
    fn(values);
    if (!write) continue;
    FL_RETURN_IF_ERROR(EncodeDense(values, encoding, &encoded));
    std::memcpy(at, encoded.data(), encoded.size());
  }
  return Status::Ok();
}

Status ScaleValues(char* data, size_t count, double factor, Encoding encoding) {
  return ForEachBlock(data, count, encoding, /*write=*/true, [&](std::span<float> values) {
    for (float& v : values) v = static_cast<float>(static_cast<double>(v) * factor);
  });
}

}  // namespace

Result<std::optional<double>> UpdateNorm(const Payload& payload) {
  FL_ASSIGN_OR_RETURN(NamedSubsetValues runs, ValueRuns(payload));
  if (runs.spans.empty() && payload.meta.encoding != Encoding::kNamedSubset) {
    return std::optional<double>();
  }
  double sum = 0;
  char* base = const_cast<char*>(payload.bytes.data());  // read only: write is false
  for (const NamedSubsetValues::Span& run : runs.spans) {
    FL_RETURN_IF_ERROR(ForEachBlock(base + run.offset, run.count, runs.value_encoding,
                                    /*write=*/false, [&](std::span<float> values) {
      // |v| <= FLT_MAX, so v*v and the sum stay far below DBL_MAX
      for (float v : values) sum += static_cast<double>(v) * v;
    }));
  }
  return std::optional<double>(std::sqrt(sum));
}

Status ScaleUpdate(double factor, Payload* payload) {
  FL_ASSIGN_OR_RETURN(NamedSubsetValues runs, ValueRuns(*payload));
  if (runs.spans.empty() && payload->meta.encoding != Encoding::kNamedSubset) {
    return Status::InvalidArgument("ScaleUpdate: not a dense or keyed update");
  }
  for (const NamedSubsetValues::Span& run : runs.spans) {
    FL_RETURN_IF_ERROR(
        ScaleValues(payload->bytes.data() + run.offset, run.count, factor, runs.value_encoding));
  }
  return Status::Ok();
}

Status ScaleDenseUpdateTensors(const Layout& layout, const std::vector<double>& factors,
                               Payload* payload) {
  const Encoding encoding = payload->meta.encoding;
  const size_t width = ValueBytes(encoding);
  if (width == 0 || payload->bytes.size() != layout.total_numel() * width ||
      factors.size() != layout.num_tensors()) {
    return Status::InvalidArgument("ScaleDenseUpdateTensors: not a dense update of the layout");
  }
  for (size_t l = 0; l < factors.size(); ++l) {
    if (factors[l] == 1.0) continue;
    const TensorSpec& t = layout.tensors()[l];
    FL_RETURN_IF_ERROR(
        ScaleValues(payload->bytes.data() + t.offset * width, t.numel, factors[l], encoding));
  }
  return Status::Ok();
}

}  // namespace fl::internal
