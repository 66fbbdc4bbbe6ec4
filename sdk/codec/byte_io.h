#ifndef FL_SDK_CODEC_BYTE_IO_H_
#define FL_SDK_CODEC_BYTE_IO_H_

// Little-endian fields for the project's binary formats (model files, coefficient
// tables, spooled updates, strategy state). Reads are bounds-checked because these
// formats arrive from the network and from disk.

#include <bit>
#include <cstdint>
#include <string>
#include <string_view>

namespace fl::internal {

inline void PutU16(std::string* out, uint16_t v) {
  const char b[2] = {static_cast<char>(v), static_cast<char>(v >> 8)};
  out->append(b, 2);
}

inline void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 4);
}

inline void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 8);
}

inline void PutF64(std::string* out, double v) { PutU64(out, std::bit_cast<uint64_t>(v)); }

// A length (u64) followed by the bytes.
inline void PutLengthPrefixed(std::string* out, std::string_view s) {
  PutU64(out, s.size());
  out->append(s);
}

// Consumes fields from the front of a byte range. Every read returns false, and
// consumes nothing, when too few bytes remain.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : rest_(bytes) {}
  size_t remaining() const { return rest_.size(); }

  bool U16(uint16_t* v) {
    uint64_t wide = 0;
    if (!Little(2, &wide)) return false;
    *v = static_cast<uint16_t>(wide);
    return true;
  }
  bool U32(uint32_t* v) {
    uint64_t wide = 0;
    if (!Little(4, &wide)) return false;
    *v = static_cast<uint32_t>(wide);
    return true;
  }
  bool U64(uint64_t* v) { return Little(8, v); }
  bool F64(double* v) {
    uint64_t bits = 0;
    if (!Little(8, &bits)) return false;
    *v = std::bit_cast<double>(bits);
    return true;
  }
  bool Bytes(size_t n, std::string_view* v) {
    if (rest_.size() < n) return false;
    *v = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  bool LengthPrefixed(std::string* s) {
    std::string_view saved = rest_;
    uint64_t n = 0;
    std::string_view bytes;
    if (!U64(&n) || n > rest_.size() || !Bytes(n, &bytes)) {
      rest_ = saved;
      return false;
    }
    s->assign(bytes);
    return true;
  }

 private:
  bool Little(int width, uint64_t* v) {
    if (rest_.size() < static_cast<size_t>(width)) return false;
    uint64_t x = 0;
    for (int i = 0; i < width; ++i) {
      x |= static_cast<uint64_t>(static_cast<unsigned char>(rest_[i])) << (8 * i);
    }
    rest_.remove_prefix(width);
    *v = x;
    return true;
  }

  std::string_view rest_;
};

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_BYTE_IO_H_
