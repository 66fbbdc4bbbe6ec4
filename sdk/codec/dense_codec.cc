#include "codec/dense_codec.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace fl::internal {
namespace {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

// Values are processed in blocks that fit in L1, so the validate and fold passes of
// AccumulateDense need no buffer proportional to the model.
constexpr size_t kBlock = 2048;

inline uint32_t LoadU32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}

inline uint16_t LoadU16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap16(v);
  return v;
}

inline void StoreU32(unsigned char* p, uint32_t v) {
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}

inline void StoreU16(unsigned char* p, uint16_t v) {
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap16(v);
  std::memcpy(p, &v, 2);
}

size_t BytesPerValue(Encoding encoding) {
  switch (encoding) {
    case Encoding::kDenseF32: return 4;
    case Encoding::kDenseF16:
    case Encoding::kDenseBF16: return 2;
    default: return 0;
  }
}

// Decodes n values starting at `in`. REQUIRES: encoding is dense.
void DecodeBlock(const unsigned char* in, size_t n, Encoding encoding, float* out) {
  switch (encoding) {
    case Encoding::kDenseF32:
      if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(out, in, n * 4);
      } else {
        for (size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(LoadU32(in + 4 * i));
      }
      break;
    case Encoding::kDenseF16:
      for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadU16(in + 2 * i));
      break;
    case Encoding::kDenseBF16:
      for (size_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(LoadU16(in + 2 * i));
      break;
    default:
      break;
  }
}

Status CheckDense(std::string_view bytes, Encoding encoding, size_t n, const char* caller) {
  if (!IsDenseEncoding(encoding)) {
    return Status::InvalidArgument(std::string(caller) + ": encoding " + EncodingName(encoding) +
                                   " is not dense");
  }
  const size_t expected = DenseEncodedSize(n, encoding);
  if (bytes.size() != expected) {
    return Status::InvalidArgument(std::string(caller) + ": " + std::to_string(bytes.size()) +
                                   " bytes, expected " + std::to_string(expected) + " for " +
                                   std::to_string(n) + " " + EncodingName(encoding) + " values");
  }
  return Status::Ok();
}

}  // namespace

bool IsDenseEncoding(Encoding encoding) { return BytesPerValue(encoding) != 0; }

size_t DenseEncodedSize(size_t n, Encoding encoding) { return n * BytesPerValue(encoding); }

Status EncodeDense(std::span<const float> values, Encoding encoding, std::string* out) {
  if (!IsDenseEncoding(encoding)) {
    return Status::InvalidArgument("EncodeDense: encoding " + EncodingName(encoding) +
                                   " is not dense");
  }
  const size_t n = values.size();
  out->resize(DenseEncodedSize(n, encoding));
  auto* p = reinterpret_cast<unsigned char*>(out->data());
  const float* v = values.data();
  switch (encoding) {
    case Encoding::kDenseF32:
      if constexpr (std::endian::native == std::endian::little) {
        if (n > 0) std::memcpy(p, v, n * 4);
      } else {
        for (size_t i = 0; i < n; ++i) StoreU32(p + 4 * i, std::bit_cast<uint32_t>(v[i]));
      }
      break;
    case Encoding::kDenseF16:
      for (size_t i = 0; i < n; ++i) StoreU16(p + 2 * i, FloatToHalf(v[i]));
      break;
    case Encoding::kDenseBF16:
      for (size_t i = 0; i < n; ++i) StoreU16(p + 2 * i, FloatToBFloat16(v[i]));
      break;
    default:
      break;
  }
  return Status::Ok();
}

Status DecodeDense(std::string_view bytes, Encoding encoding, std::span<float> out) {
  FL_RETURN_IF_ERROR(CheckDense(bytes, encoding, out.size(), "DecodeDense"));
  if (!out.empty()) {
    DecodeBlock(reinterpret_cast<const unsigned char*>(bytes.data()), out.size(), encoding,
                out.data());
  }
  return Status::Ok();
}

size_t FindNonFinite(std::span<const float> values) {
  const float* v = values.data();
  const size_t n = values.size();
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = std::min(n, start + kBlock);
    // OR-reduction over the exponent test vectorizes; the exact index is searched only
    // in the (rare) block that has a bad value.
    uint32_t bad = 0;
    for (size_t i = start; i < end; ++i) {
      bad |= static_cast<uint32_t>((std::bit_cast<uint32_t>(v[i]) & 0x7f800000u) == 0x7f800000u);
    }
    if (bad != 0) {
      for (size_t i = start; i < end; ++i) {
        if ((std::bit_cast<uint32_t>(v[i]) & 0x7f800000u) == 0x7f800000u) return i;
      }
    }
  }
  return n;
}

namespace {

// The AVX2 clones are chosen by an ifunc resolver that runs while the dynamic loader
// relocates the program, before a sanitizer's runtime is initialised; an instrumented
// resolver crashes there, so sanitized builds keep the default version only.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FL_SANITIZED_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(FL_SANITIZED_BUILD)
#define FL_WITH_AVX2_CLONE
#else
#define FL_WITH_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#endif

// The float32 hot loops of the fold, reading the received bytes in place (no decode
// copy). Also compiled for AVX2, picked at load time where the CPU has it; the build's
// -ffp-contract=off keeps a multiply and an add as two roundings in every version, so
// the sums are bitwise the same whichever runs.
FL_WITH_AVX2_CLONE
bool AllFiniteF32(const unsigned char* in, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t v;
    std::memcpy(&v, in + 4 * i, 4);
    bad |= static_cast<uint32_t>((v & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

FL_WITH_AVX2_CLONE
void FoldF32(const unsigned char* in, size_t n, double weight, double* acc) {
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, in + 4 * i, 4);
    acc[i] += weight * static_cast<double>(v);
  }
}

// FoldF32 of k updates at once, chunk by chunk of acc: a chunk of 16 sums (one cache line
// of each update) stays in registers while the k products are added in term order, the same additions
// in the same order as k calls of FoldF32, so the sums are bitwise the same; acc comes
// from memory once per batch, and the k updates stream from memory side by side.
FL_WITH_AVX2_CLONE
void FoldF32Terms(const unsigned char* const* in, const double* weight, size_t k, size_t n,
                  double* __restrict acc) {
  constexpr size_t kChunk = 16;
  size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    double* __restrict sum = acc + i;
    for (size_t t = 0; t < k; ++t) {
      const unsigned char* __restrict p = in[t] + 4 * i;
      const double w = weight[t];
      for (size_t j = 0; j < kChunk; ++j) {
        float v;
        std::memcpy(&v, p + 4 * j, 4);
        sum[j] += w * static_cast<double>(v);
      }
    }
  }
  for (size_t t = 0; t < k; ++t) FoldF32(in[t] + 4 * i, n - i, weight[t], acc + i);
}

constexpr bool kLittleEndian = std::endian::native == std::endian::little;

// Length and finiteness of every value of a dense update of n values, block by block
// (no buffer proportional to the model).
Status ValidateDense(std::string_view bytes, Encoding encoding, size_t n, const char* caller) {
  FL_RETURN_IF_ERROR(CheckDense(bytes, encoding, n, caller));
  const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t width = BytesPerValue(encoding);
  alignas(64) float block[kBlock];
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t len = std::min(kBlock, n - start);
    if (kLittleEndian && encoding == Encoding::kDenseF32 && AllFiniteF32(in + start * 4, len)) {
      continue;
    }
    DecodeBlock(in + start * width, len, encoding, block);
    const size_t bad = FindNonFinite({block, len});
    if (bad != len) {
      return Status::InvalidArgument(std::string(caller) + ": non-finite value at index " +
                                     std::to_string(start + bad));
    }
  }
  return Status::Ok();
}

// For each term, whether it is float32 of n values, all finite. The terms are scanned
// side by side, block by block, so that they stream from memory together as in the
// fold; a term found wanting is validated alone by the caller, for its message.
std::vector<char> AllFiniteF32Terms(std::span<const DenseTerm> terms, size_t n) {
  std::vector<char> ok(terms.size());
  for (size_t t = 0; t < terms.size(); ++t) {
    ok[t] = kLittleEndian && terms[t].encoding == Encoding::kDenseF32 &&
            terms[t].bytes.size() == DenseEncodedSize(n, Encoding::kDenseF32);
  }
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t len = std::min(kBlock, n - start);
    for (size_t t = 0; t < terms.size(); ++t) {
      const auto* in = reinterpret_cast<const unsigned char*>(terms[t].bytes.data());
      if (ok[t]) ok[t] = AllFiniteF32(in + start * 4, len);
    }
  }
  return ok;
}

// acc[start, start + len) += weight * values of `bytes` there; the block stays in L1
// between decode and fold. REQUIRES: validated, len <= kBlock.
inline void FoldBlock(std::string_view bytes, Encoding encoding, double weight, size_t start,
                      size_t len, double* acc) {
  const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
  if (kLittleEndian && encoding == Encoding::kDenseF32) {
    FoldF32(in + start * 4, len, weight, acc + start);
    return;
  }
  alignas(64) float block[kBlock];
  DecodeBlock(in + start * BytesPerValue(encoding), len, encoding, block);
  double* dst = acc + start;
  for (size_t i = 0; i < len; ++i) dst[i] += weight * static_cast<double>(block[i]);
}

}  // namespace

Status AccumulateDense(std::string_view bytes, Encoding encoding, double weight,
                       std::span<double> acc) {
  // Validate everything first so that a bad value anywhere leaves acc untouched.
  FL_RETURN_IF_ERROR(ValidateDense(bytes, encoding, acc.size(), "AccumulateDense"));
  const size_t n = acc.size();
  for (size_t start = 0; start < n; start += kBlock) {
    FoldBlock(bytes, encoding, weight, start, std::min(kBlock, n - start), acc.data());
  }
  return Status::Ok();
}

void AccumulateDenseBatch(std::span<const DenseTerm> terms, std::span<double> acc,
                          std::span<Status> results) {
  const size_t n = acc.size();
  const std::vector<char> finite_f32 = AllFiniteF32Terms(terms, n);
  std::vector<const DenseTerm*> valid;
  for (size_t t = 0; t < terms.size(); ++t) {
    results[t] = finite_f32[t] ? Status::Ok()
                               : ValidateDense(terms[t].bytes, terms[t].encoding, n,
                                               "AccumulateDense");
    if (results[t].ok()) valid.push_back(&terms[t]);
  }
  const bool all_f32 = std::all_of(valid.begin(), valid.end(), [](const DenseTerm* t) {
    return t->encoding == Encoding::kDenseF32;
  });
  if (kLittleEndian && all_f32) {
    std::vector<const unsigned char*> in;
    std::vector<double> weight;
    for (const DenseTerm* t : valid) {
      in.push_back(reinterpret_cast<const unsigned char*>(t->bytes.data()));
      weight.push_back(t->weight);
    }
    FoldF32Terms(in.data(), weight.data(), valid.size(), n, acc.data());
    return;
  }
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t len = std::min(kBlock, n - start);
    for (const DenseTerm* t : valid) FoldBlock(t->bytes, t->encoding, t->weight, start, len, acc.data());
  }
}

}  // namespace fl::internal
