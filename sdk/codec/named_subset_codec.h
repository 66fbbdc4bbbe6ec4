#ifndef FL_SDK_CODEC_NAMED_SUBSET_CODEC_H_
#define FL_SDK_CODEC_NAMED_SUBSET_CODEC_H_

// The kNamedSubset payload: a keyed, partial update. A client that trained only some
// tensors of the model (e.g. the pool entries its samples selected) sends those, each
// by name and with the fraction of the update's weight it carries.
//
// Layout, little-endian:
//   "FLNS"  u32 version (1)  u32 value encoding (f32 | f16 | bf16)  u64 entry count
//   per entry: u64 name length, name bytes, f64 weight fraction, u64 numel,
//              numel values in the value encoding
// The value encoding lives in the payload (UpdateMeta::encoding says kNamedSubset), so
// one upload is self-describing.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// One tensor to encode. `values` must stay valid for the EncodeNamedSubset call.
struct NamedTensorView {
  std::string_view name;
  double fraction = 1.0;  // the share of the update's weight this tensor carries, [0, 1]
  std::span<const float> values;
};

// One decoded tensor, matched to the layout it was decoded against.
struct NamedTensor {
  size_t index = 0;  // in Layout::tensors()
  double fraction = 0;
  std::vector<float> values;  // Layout::tensors()[index].numel values, all finite
};

struct NamedSubset {
  Encoding value_encoding = Encoding::kDenseF32;
  std::vector<NamedTensor> tensors;  // in payload order, no name twice
};

// Replaces *out with the payload of `tensors`, whose values are written in
// `value_encoding`. InvalidArgument (*out unchanged) if the encoding is not dense.
// Names, fractions and values are written as they are: the decoder is the one that
// checks them.
Status EncodeNamedSubset(std::span<const NamedTensorView> tensors, Encoding value_encoding,
                         std::string* out);

// Decodes and validates a payload against `layout`. InvalidArgument naming the tensor
// (or the header field) at fault for: bad magic or version, a value encoding that is
// not dense, zero entries or more than the layout has tensors, a name the layout lacks,
// a name given twice, a fraction that is negative, above 1 or not finite, a value count
// other than the layout tensor's, a non-finite value, truncation, or trailing bytes.
// Nothing is allocated for a size before the bytes behind it are known to be there.
Result<NamedSubset> DecodeNamedSubset(std::string_view bytes, const Layout& layout);

// Where a payload's values lie, found without a layout: the coordinator's norm bound
// reads and scales them before the aggregator checks names against the model.
struct NamedSubsetValues {
  Encoding value_encoding = Encoding::kDenseF32;
  struct Span {
    size_t offset = 0;  // byte offset of the entry's first value
    size_t count = 0;   // values
  };
  std::vector<Span> spans;  // one per entry, in payload order
};

// InvalidArgument for bad magic or version, a value encoding that is not dense, or an
// entry that runs past the end; names, fractions and values are not checked. The span
// list is bounded by the bytes present (an entry takes at least 24 bytes).
Result<NamedSubsetValues> LocateNamedSubsetValues(std::string_view bytes);

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_NAMED_SUBSET_CODEC_H_
