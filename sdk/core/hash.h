#ifndef FL_SDK_CORE_HASH_H_
#define FL_SDK_CORE_HASH_H_

// 64-bit FNV-1a (Fowler, Noll, Vo), the SDK's one identity hash: layout hashes, Ferret
// block plans and basis specs, client names in selection and training seeds. Integers
// are folded as fixed-width little-endian bytes, so every value is the same on every
// platform and in every run. Not a cryptographic hash (see crypto/sha256.h).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fl::internal {

inline constexpr uint64_t kFnv1a64OffsetBasis = 14695981039346656037ull;
inline constexpr uint64_t kFnv1a64Prime = 1099511628211ull;

// Folds `n` bytes at `data` into the FNV-1a state `h`.
inline uint64_t Fnv1a64Bytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1a64Prime;
  }
  return h;
}

// Folds `v` into `h` as 8 little-endian bytes, whatever the host's byte order.
inline uint64_t Fnv1a64U64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= static_cast<unsigned char>(v >> (8 * i));
    h *= kFnv1a64Prime;
  }
  return h;
}

// FNV-1a of the bytes of `s`, from the offset basis.
inline uint64_t Fnv1a64(std::string_view s) {
  return Fnv1a64Bytes(kFnv1a64OffsetBasis, s.data(), s.size());
}

}  // namespace fl::internal

#endif  // FL_SDK_CORE_HASH_H_
