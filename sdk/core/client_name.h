#ifndef FL_SDK_CORE_CLIENT_NAME_H_
#define FL_SDK_CORE_CLIENT_NAME_H_

#include <cstddef>
#include <string>

#include "fl/status.h"

namespace fl::internal {

inline constexpr size_t kMaxClientNameLength = 128;

// Client names are 1-128 characters of [A-Za-z0-9._-]: safe in logs, file names and SQL
// text, and never invalid UTF-8. The server refuses other names at Join; fl::Client
// refuses them before connecting. InvalidArgument saying which rule the name breaks.
Status ValidateClientName(const std::string& name);

}  // namespace fl::internal

#endif  // FL_SDK_CORE_CLIENT_NAME_H_
