#ifndef FL_SDK_CRYPTO_SHA256_H_
#define FL_SDK_CRYPTO_SHA256_H_

// SHA-256 digests and random tokens (OpenSSL).

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace fl::internal {

inline constexpr size_t kSha256Size = 32;

// The 32 raw bytes of SHA-256(data).
std::string Sha256(std::string_view data);

// Incremental SHA-256 for data that arrives in chunks (uploads, model downloads).
// Not thread-safe. Finish() may be called once; afterwards the hasher is reset and can
// be reused for a new message.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  Sha256Hasher(Sha256Hasher&&) noexcept;
  Sha256Hasher& operator=(Sha256Hasher&&) noexcept;

  void Update(std::string_view data);
  // The 32 raw bytes of the digest of everything passed to Update since construction
  // or the last Finish().
  std::string Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lower-case hexadecimal, two characters per byte.
std::string HexEncode(std::string_view bytes);

// `num_bytes` bytes from OpenSSL's CSPRNG, hex-encoded (2 * num_bytes characters).
// Aborts if the CSPRNG fails: a predictable session token is never acceptable.
std::string RandomHex(size_t num_bytes);

}  // namespace fl::internal

#endif  // FL_SDK_CRYPTO_SHA256_H_
