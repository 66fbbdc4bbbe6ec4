#include "fl/update.h"

namespace fl {

Result<Encoding> ParseDenseEncoding(const std::string& name) {
  if (name == "f32") return Encoding::kDenseF32;
  if (name == "f16") return Encoding::kDenseF16;
  if (name == "bf16") return Encoding::kDenseBF16;
  return Status::InvalidArgument("unknown dense encoding '" + name + "' (expected f32, f16 or bf16)");
}

std::string EncodingName(Encoding e) {
  switch (e) {
    case Encoding::kDenseF32: return "f32";
    case Encoding::kDenseF16: return "f16";
    case Encoding::kDenseBF16: return "bf16";
    case Encoding::kFerret: return "ferret";
    case Encoding::kNamedSubset: return "named_subset";
  }
  return "encoding(" + std::to_string(static_cast<int>(e)) + ")";
}

}  // namespace fl
