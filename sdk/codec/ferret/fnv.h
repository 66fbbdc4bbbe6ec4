#ifndef FL_SDK_CODEC_FERRET_FNV_H_
#define FL_SDK_CODEC_FERRET_FNV_H_

// 64-bit FNV-1a over little-endian integers: the identity hashes of block plans and
// basis specs, which client and server compare. Stable across platforms and runs.

#include <cstdint>

namespace fl::internal::ferret {

inline constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;

inline uint64_t FnvMixU64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= static_cast<unsigned char>(v >> (8 * i));
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_FNV_H_
