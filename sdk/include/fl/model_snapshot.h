#ifndef FL_SDK_INCLUDE_FL_MODEL_SNAPSHOT_H_
#define FL_SDK_INCLUDE_FL_MODEL_SNAPSHOT_H_

// A global model version as a client receives it.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fl/param_set.h"

namespace fl {

// A global model as delivered to a client. `params` is shared and immutable, so an
// in-process link hands out the coordinator's copy without copying.
//
// Downlink by replay (ServerLink::FetchModelOrReplay): instead of `params` the server
// may send the replay records that turn the version the client holds into `version`.
// Then params is null and replay_records[i] turns version replay_base_version + i into
// replay_base_version + i + 1; the algorithm's replayer applies them in order.
struct ModelSnapshot {
  uint64_t version = 0;
  std::shared_ptr<const ParamSet> params;
  uint64_t wire_bytes = 0;  // bytes this download costs on the wire
  uint64_t replay_base_version = 0;
  std::vector<std::shared_ptr<const std::string>> replay_records;

  bool is_replay() const { return params == nullptr && !replay_records.empty(); }
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_MODEL_SNAPSHOT_H_
