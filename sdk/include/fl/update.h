#ifndef FL_SDK_INCLUDE_FL_UPDATE_H_
#define FL_SDK_INCLUDE_FL_UPDATE_H_

#include <cstdint>
#include <string>

#include "fl/export.h"
#include "fl/param_set.h"

namespace fl {

// How a payload's bytes encode values. Persisted and sent on the wire:
// never change the value of an existing entry.
enum class Encoding : int {
  kDenseF32 = 1,   // little-endian float32, one per parameter
  kDenseF16 = 2,   // IEEE half, round-to-nearest-even
  kDenseBF16 = 3,  // bfloat16, round-to-nearest-even
  kFerret = 4,     // Ferret coefficient table (algorithms/ferret)
  kNamedSubset = 5 // a subset of tensors by name (prompts, SSF pools, heads)
};

// Parses "f32" | "f16" | "bf16" (also used by configs). InvalidArgument otherwise.
FL_EXPORT Result<Encoding> ParseDenseEncoding(const std::string& name);
FL_EXPORT std::string EncodingName(Encoding e);

// What a client states about an upload. Validated by the server before use.
struct UpdateMeta {
  uint64_t client_id = 0;
  uint64_t round = 0;
  uint64_t base_version = 0;   // global model version the update was computed against
  double weight = 0;           // aggregation weight, normally the number of examples
  uint64_t layout_hash = 0;    // Layout::hash() of the model the update belongs to
  Encoding encoding = Encoding::kDenseF32;
  std::string sha256;          // 32 raw bytes: SHA-256 of `Payload::bytes`
  uint64_t num_examples = 0;
  double train_loss = 0;
};

// An upload: metadata plus encoded bytes (std::string, as protobuf uses, so the
// transport moves rather than copies).
struct Payload {
  UpdateMeta meta;
  std::string bytes;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_UPDATE_H_
