#ifndef FL_SIMULATIONS_DEFERRED_PUSH_LINK_H_
#define FL_SIMULATIONS_DEFERRED_PUSH_LINK_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "fl/model_snapshot.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

// A client's link in asynchronous mode. The simulation hands the client each task's base
// model when the task is handed out, so training may run later on any worker whatever
// versions the coordinator has moved on to, and holds the client's update until the
// task's simulated completion, when Deliver() pushes it: updates reach the coordinator
// in simulated-time order, whatever order the workers finish in. A client holds at most
// two tasks (client overlap: one uploading while the next trains), each by its number.
// Not thread-safe: one client's tasks train one after another.
class DeferredPushLink : public ServerLink {
 public:
  // `inner` is not owned and must outlive the link.
  explicit DeferredPushLink(ServerLink* inner) : inner_(inner) {}

  Result<JoinReply> Join(const std::string& enrollment_token,
                         const std::string& client_name) override;
  Result<Task> PullTask(std::chrono::milliseconds wait) override;
  // The base held for the task being trained when its version matches, else the inner
  // link's model.
  Result<ModelSnapshot> FetchModel(uint64_t version) override;
  Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t) override;
  // Keeps the update of the task being trained for Deliver(); the acknowledgement is the
  // simulation's promise that it will be pushed at the task's simulated completion.
  Result<PushAck> PushUpdate(const Payload& payload) override;
  Status Heartbeat() override;
  Result<ServerStatusInfo> GetStatus() override;

  // The base model of task `task`, just handed out.
  void Hold(uint64_t task, ModelSnapshot base);
  // The task whose training runs next on this client (FetchModel and PushUpdate refer to
  // it). Training does not say which task an update belongs to, so the caller does.
  void BeginTraining(uint64_t task) { training_ = task; }
  // Pushes the update held for `task` to the coordinator and forgets the task; Internal
  // if there is none, else the inner link's answer.
  Result<PushAck> Deliver(uint64_t task);

 private:
  ServerLink* inner_;
  uint64_t training_ = 0;
  std::map<uint64_t, ModelSnapshot> bases_;  // by task number
  std::map<uint64_t, Payload> held_;         // by task number
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_DEFERRED_PUSH_LINK_H_
