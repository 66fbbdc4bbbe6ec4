#ifndef FL_SDK_CODEC_PARAM_IO_H_
#define FL_SDK_CODEC_PARAM_IO_H_

// Binary serialization of Layouts and ParamSets: model files on disk and the model
// download stream. Parsing is bounds-checked throughout because its input comes from
// the network and from disk; garbage yields an error, never a crash or a huge
// allocation.
//
// Layout bytes (all integers little-endian):
//   u32 num_tensors; per tensor: u32 name_len, name, u32 rank, i64 dims[rank];
//   u64 layout hash (checked against the hash recomputed on parse).
// ParamSet bytes:
//   "FLPS", u32 format version (1), u64 layout_bytes, layout bytes, u64 num_values,
//   num_values little-endian float32.

#include <string>
#include <string_view>

#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

inline constexpr char kParamSetMagic[4] = {'F', 'L', 'P', 'S'};
inline constexpr uint32_t kParamSetFormatVersion = 1;

std::string SerializeLayout(const Layout& layout);

// DataLoss if truncated, oversized or its hash does not match its content;
// InvalidArgument if a field is out of range (negative dimension, absurd rank).
Result<Layout> ParseLayout(std::string_view bytes);

std::string SerializeParamSet(const ParamSet& params);

// InvalidArgument if the magic or version is wrong; DataLoss if truncated, followed
// by trailing bytes, or internally inconsistent. Non-finite values are accepted (a
// model file stores what it was given); callers check AllFinite() where it matters.
Result<ParamSet> ParseParamSet(std::string_view bytes);

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_PARAM_IO_H_
