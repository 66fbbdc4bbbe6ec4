#ifndef FL_SDK_RNG_SPLITMIX64_H_
#define FL_SDK_RNG_SPLITMIX64_H_

// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
// OOPSLA'14): the SDK's one 64-bit mixer, used to derive seeds (client selection order,
// per-round training seeds, synthetic models) from the run seed. Host code only; the
// bases that must match on CUDA come from rng/philox.h.

#include <cstdint>

namespace fl::internal {

// 2^64 / golden ratio, rounded to odd: SplitMix64's Weyl increment.
inline constexpr uint64_t kGoldenGamma64 = 0x9e3779b97f4a7c15ull;

// The generator's first output from state `x`: the finalizer applied to x + kGoldenGamma64.
// A bijection on uint64_t.
constexpr uint64_t SplitMix64(uint64_t x) {
  x += kGoldenGamma64;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace fl::internal

#endif  // FL_SDK_RNG_SPLITMIX64_H_
