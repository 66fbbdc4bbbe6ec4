#ifndef FL_SDK_CODEC_DENSE_CODEC_H_
#define FL_SDK_CODEC_DENSE_CODEC_H_

// Dense payload codecs: one value per parameter as little-endian float32, IEEE half
// or bfloat16. Narrowing rounds to nearest, ties to even; half keeps subnormals, and
// every codec maps inf to inf and NaN to a (quiet) NaN. The loops are branch-free so
// the compiler vectorizes them.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// True for kDenseF32, kDenseF16 and kDenseBF16.
bool IsDenseEncoding(Encoding encoding);

// Bytes that `n` values take in `encoding`; 0 if the encoding is not dense.
size_t DenseEncodedSize(size_t n, Encoding encoding);

// Replaces *out with the encoding of `values`. InvalidArgument if `encoding` is not
// dense (and *out is left unchanged).
Status EncodeDense(std::span<const float> values, Encoding encoding, std::string* out);

// Decodes exactly out.size() values. InvalidArgument if `encoding` is not dense or
// bytes.size() != DenseEncodedSize(out.size(), encoding). Non-finite values are decoded
// as they are; callers that need finite input use AccumulateDense or FindNonFinite.
Status DecodeDense(std::string_view bytes, Encoding encoding, std::span<float> out);

// Validate-then-fold: acc[i] += weight * value[i] for the acc.size() values in `bytes`.
// InvalidArgument (and acc untouched) if the encoding is not dense, the length does not
// match, or any value is not finite ("non-finite value at index i"). `weight` itself is
// the caller's to validate.
Status AccumulateDense(std::string_view bytes, Encoding encoding, double weight,
                       std::span<double> acc);

// One update of a batch for AccumulateDenseBatch: its encoded values and weight.
struct DenseTerm {
  std::string_view bytes;
  Encoding encoding = Encoding::kDenseF32;
  double weight = 0;
};

// AccumulateDense for several updates in one sweep over acc: each term is validated
// first (results[t] says why one is refused; a refused term changes nothing), then for
// each chunk of acc (16 values in registers for float32 terms, an L1-sized block
// otherwise) every valid term's values are added in term order, so acc is read and
// written once per batch instead of once per update. Per element the additions
// happen in the same order as AccumulateDense of each term in turn: the result is
// bitwise the same. REQUIRES: results.size() == terms.size().
void AccumulateDenseBatch(std::span<const DenseTerm> terms, std::span<double> acc,
                          std::span<Status> results);

// Index of the first inf or NaN in `values`, or values.size() if all are finite.
size_t FindNonFinite(std::span<const float> values);

// Scalar conversions (exposed for tests and for other codecs).
inline uint16_t FloatToHalf(float f) {
  // Scaling by 2^112 then 2^-110 lets the FPU do the round-to-nearest-even of the
  // mantissa, including into the subnormal range and overflow to inf.
  const float scale_to_inf = std::bit_cast<float>(0x77800000u);   // 2^112
  const float scale_to_zero = std::bit_cast<float>(0x08800000u);  // 2^-110
  const uint32_t w = std::bit_cast<uint32_t>(f);
  const uint32_t abs_bits = w & 0x7fffffffu;
  float base = (std::bit_cast<float>(abs_bits) * scale_to_inf) * scale_to_zero;
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xff000000u;
  bias = std::max(bias, 0x71000000u);
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = std::bit_cast<uint32_t>(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
  const uint32_t mantissa_bits = bits & 0x00000fffu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  // Selects by mask, not by branch, so loops over this function vectorize.
  const uint32_t nan_mask = 0u - static_cast<uint32_t>(shl1_w > 0xff000000u);
  return static_cast<uint16_t>((sign >> 16) | (0x7e00u & nan_mask) | (nonsign & ~nan_mask));
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal numbers: shift the exponent/mantissa into place and rescale the exponent
  // bias with one multiply (which also turns half inf/NaN into float inf/NaN).
  const uint32_t exp_offset = 0xe0u << 23;
  const float exp_scale = std::bit_cast<float>(0x07800000u);  // 2^-112
  const float normalized = std::bit_cast<float>((two_w >> 4) + exp_offset) * exp_scale;
  // Subnormals: place the mantissa under a fixed exponent and subtract the bias 0.5.
  const uint32_t magic_mask = 126u << 23;
  const float denormalized = std::bit_cast<float>((two_w >> 17) | magic_mask) - 0.5f;
  const uint32_t denormalized_cutoff = 1u << 27;
  const uint32_t sub_mask = 0u - static_cast<uint32_t>(two_w < denormalized_cutoff);
  const uint32_t result = sign | (std::bit_cast<uint32_t>(denormalized) & sub_mask) |
                          (std::bit_cast<uint32_t>(normalized) & ~sub_mask);
  return std::bit_cast<float>(result);
}

inline uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan_mask = 0u - static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u);
  // Truncating a NaN could clear every mantissa bit and make it inf: force it quiet.
  return static_cast<uint16_t>((((bits >> 16) | 0x0040u) & nan_mask) | (rounded & ~nan_mask));
}

inline float BFloat16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_DENSE_CODEC_H_
