#ifndef FL_SERVER_UPDATE_SPOOL_H_
#define FL_SERVER_UPDATE_SPOOL_H_

// The on-disk form of an acknowledged update, kept until its round closes so a
// restarted coordinator can fold it again.

#include <string>
#include <string_view>

#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// `meta` and `bytes` of one update (taken apart, so the caller need not copy the bytes
// to set the meta it spools).
std::string EncodeSpooledUpdate(const UpdateMeta& meta, std::string_view bytes);
// DataLoss if `data` is not a complete spooled update.
Result<Payload> DecodeSpooledUpdate(std::string_view data);

}  // namespace fl::internal

#endif  // FL_SERVER_UPDATE_SPOOL_H_
