#include "server/update_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "codec/dense_codec.h"
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

Result<std::optional<double>> DenseUpdateNorm(const Payload& payload) {
  const Encoding encoding = payload.meta.encoding;
  const size_t width = ValueBytes(encoding);
  if (width == 0) return std::optional<double>();
  const std::string& bytes = payload.bytes;
  if (bytes.size() % width != 0) {
    return Status::InvalidArgument("update of " + std::to_string(bytes.size()) +
                                   " bytes is not a whole number of values");
  }
  const size_t n = bytes.size() / width;
  float block[kBlockValues];
  double sum = 0;
  for (size_t start = 0; start < n; start += kBlockValues) {
    const size_t count = std::min(kBlockValues, n - start);
    std::string_view part(bytes.data() + start * width, count * width);
    FL_RETURN_IF_ERROR(DecodeDense(part, encoding, std::span<float>(block, count)));
    for (size_t i = 0; i < count; ++i) {
      const double v = block[i];
      sum += v * v;  // |v| <= FLT_MAX, so v*v and the sum stay far below DBL_MAX
    }
  }
  return std::optional<double>(std::sqrt(sum));
}

namespace {

// Multiplies values [begin, end) of a dense encoding in place, in blocks: the one scaling
// loop behind the norm bound and the asynchronous gap penalty.
Status ScaleDenseValues(size_t begin, size_t end, double factor, Encoding encoding,
                        std::string* bytes) {
  const size_t width = ValueBytes(encoding);
  float block[kBlockValues];
  std::string encoded;
  for (size_t start = begin; start < end; start += kBlockValues) {
    const size_t count = std::min(kBlockValues, end - start);
    std::span<float> values(block, count);
    FL_RETURN_IF_ERROR(DecodeDense(
        std::string_view(bytes->data() + start * width, count * width), encoding, values));
    for (float& v : values) v = static_cast<float>(static_cast<double>(v) * factor);
    FL_RETURN_IF_ERROR(EncodeDense(values, encoding, &encoded));
    std::memcpy(bytes->data() + start * width, encoded.data(), encoded.size());
  }
  return Status::Ok();
}

}  // namespace

Status ScaleDenseUpdate(double factor, Payload* payload) {
  const Encoding encoding = payload->meta.encoding;
  const size_t width = ValueBytes(encoding);
  if (width == 0 || payload->bytes.size() % width != 0) {
    return Status::InvalidArgument("ScaleDenseUpdate: not a dense update");
  }
  return ScaleDenseValues(0, payload->bytes.size() / width, factor, encoding, &payload->bytes);
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
        ScaleDenseValues(t.offset, t.offset + t.numel, factors[l], encoding, &payload->bytes));
  }
  return Status::Ok();
}

}  // namespace fl::internal
