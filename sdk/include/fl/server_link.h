#ifndef FL_SDK_INCLUDE_FL_SERVER_LINK_H_
#define FL_SDK_INCLUDE_FL_SERVER_LINK_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "fl/export.h"
#include "fl/status.h"
#include "fl/model_snapshot.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl {

struct JoinReply {
  uint64_t client_id = 0;
  std::string session_token;
};

struct PushAck {
  uint64_t round = 0;
  bool duplicate = false;  // the update had already been acknowledged before
};

struct ServerStatusInfo {
  uint64_t round = 0;
  uint64_t model_version = 0;
  uint64_t updates_in_round = 0;
  uint64_t clients_selected = 0;
  uint64_t clients_known = 0;
  bool finished = false;
};

// The client's view of the server. A GrpcLink speaks to fl-server over the network;
// an InProcessLink calls a Coordinator directly (fl-sim, tests). The client runtime
// and every Learner see only this interface. One link serves one client identity;
// not thread-safe.
class FL_EXPORT ServerLink {
 public:
  virtual ~ServerLink() = default;
  // Enrolls with `enrollment_token` (Unauthenticated if wrong) and remembers the
  // session for later calls. `client_name` is stable per device: re-joining with the
  // same name returns the same client id.
  virtual Result<JoinReply> Join(const std::string& enrollment_token,
                                 const std::string& client_name) = 0;
  // Long poll: waits up to `wait` for a task; returns a kWait task on timeout.
  virtual Result<Task> PullTask(std::chrono::milliseconds wait) = 0;
  // Downloads global model `version`. NotFound if the server no longer has it.
  virtual Result<ModelSnapshot> FetchModel(uint64_t version) = 0;
  // Like FetchModel, for a client that already holds model `have_version` (<
  // version): the server answers either with the full model or, when that is smaller,
  // with the replay records from have_version to version (ModelSnapshot::is_replay()).
  // The default asks for the full model, for links and servers without replay.
  virtual Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t have_version) {
    return FetchModel(version);
  }
  // Uploads an update; returns once the server made it durable.
  virtual Result<PushAck> PushUpdate(const Payload& payload) = 0;
  virtual Status Heartbeat() = 0;
  virtual Result<ServerStatusInfo> GetStatus() = 0;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_SERVER_LINK_H_
