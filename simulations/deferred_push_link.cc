#include "simulations/deferred_push_link.h"

#include <utility>

namespace fl::internal {

Result<JoinReply> DeferredPushLink::Join(const std::string& enrollment_token,
                                         const std::string& client_name) {
  return inner_->Join(enrollment_token, client_name);
}

Result<Task> DeferredPushLink::PullTask(std::chrono::milliseconds wait) {
  return inner_->PullTask(wait);
}

Result<ModelSnapshot> DeferredPushLink::FetchModel(uint64_t version) {
  auto it = bases_.find(training_);
  if (it != bases_.end() && it->second.version == version) return it->second;
  return inner_->FetchModel(version);
}

Result<ModelSnapshot> DeferredPushLink::FetchModelOrReplay(uint64_t version, uint64_t) {
  return FetchModel(version);
}

Result<PushAck> DeferredPushLink::PushUpdate(const Payload& payload) {
  held_[training_] = payload;
  PushAck ack;
  ack.round = payload.meta.round;
  return ack;
}

Status DeferredPushLink::Heartbeat() { return inner_->Heartbeat(); }

Result<ServerStatusInfo> DeferredPushLink::GetStatus() { return inner_->GetStatus(); }

void DeferredPushLink::Hold(uint64_t task, ModelSnapshot base) { bases_[task] = std::move(base); }

Result<PushAck> DeferredPushLink::Deliver(uint64_t task) {
  auto it = held_.find(task);
  if (it == held_.end()) return Status::Internal("no update held for delivery");
  Payload payload = std::move(it->second);
  held_.erase(it);
  bases_.erase(task);
  return inner_->PushUpdate(payload);
}

}  // namespace fl::internal
