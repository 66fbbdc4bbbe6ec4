#include "core/client_name.h"

namespace fl::internal {

Status ValidateClientName(const std::string& name) {
  if (name.empty()) return Status::InvalidArgument("client name is empty");
  if (name.size() > kMaxClientNameLength) {
    return Status::InvalidArgument("client name longer than 128 characters");
  }
  for (unsigned char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("client name '" + name.substr(0, kMaxClientNameLength) +
                                     "' may only hold the characters [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

}  // namespace fl::internal
