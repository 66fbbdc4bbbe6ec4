#ifndef FL_SDK_CRYPTO_UPDATE_DIGEST_H_
#define FL_SDK_CRYPTO_UPDATE_DIGEST_H_

// The one SHA-256 rule for uploads, the same on every transport (GrpcLink, InProcessLink):
//  - the sender fills UpdateMeta::sha256 with SHA-256(Payload::bytes) when it is empty
//    (SealUpdateSha256: learners and both links call it; a digest already set is sent
//    as it is, so a wrong one reaches the coordinator);
//  - the coordinator always verifies it (CheckUpdateSha256) before anything else looks
//    at the bytes, and refuses a missing or wrong digest with DataLoss.

#include <string>
#include <string_view>

#include "crypto/sha256.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// Sets meta->sha256 = SHA-256(bytes) if meta->sha256 is empty; otherwise leaves it.
inline void SealUpdateSha256(UpdateMeta* meta, std::string_view bytes) {
  if (meta->sha256.empty()) meta->sha256 = Sha256(bytes);
}

// OK iff meta.sha256 is the 32-byte SHA-256 of `bytes`; DataLoss otherwise.
inline Status CheckUpdateSha256(const UpdateMeta& meta, std::string_view bytes) {
  if (meta.sha256.size() != kSha256Size) {
    return Status::DataLoss("update SHA-256 has " + std::to_string(meta.sha256.size()) +
                            " bytes, not " + std::to_string(kSha256Size));
  }
  if (Sha256(bytes) != meta.sha256) return Status::DataLoss("update bytes do not match their SHA-256");
  return Status::Ok();
}

}  // namespace fl::internal

#endif  // FL_SDK_CRYPTO_UPDATE_DIGEST_H_
