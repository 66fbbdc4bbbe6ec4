#include "simulations/in_process_link.h"

#include "crypto/update_digest.h"

namespace fl::internal {

Result<JoinReply> InProcessLink::Join(const std::string& enrollment_token,
                                      const std::string& client_name) {
  FL_ASSIGN_OR_RETURN(JoinReply reply, coordinator_->Join(enrollment_token, client_name));
  session_token_ = reply.session_token;
  return reply;
}

Result<Session> InProcessLink::Authenticated() {
  return coordinator_->Authenticate(session_token_);
}

Result<Task> InProcessLink::PullTask(std::chrono::milliseconds wait) {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  return coordinator_->PullTask(session, wait);
}

Result<ModelSnapshot> InProcessLink::FetchModel(uint64_t version) {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  return coordinator_->FetchModel(session, version);
}

Result<ModelSnapshot> InProcessLink::FetchModelOrReplay(uint64_t version, uint64_t have_version) {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  return coordinator_->FetchModel(session, version, have_version);
}

Result<PushAck> InProcessLink::PushUpdate(const Payload& payload) {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  if (!payload.meta.sha256.empty()) return coordinator_->PushUpdate(session, payload);
  // The sender's half of the SHA-256 rule (crypto/update_digest.h), as GrpcLink applies
  // it. Learners always fill the digest, so only hand-made payloads pay for this copy.
  Payload sealed = payload;
  SealUpdateSha256(&sealed.meta, sealed.bytes);
  return coordinator_->PushUpdate(session, sealed);
}

Status InProcessLink::Heartbeat() {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  return coordinator_->Heartbeat(session);
}

Result<ServerStatusInfo> InProcessLink::GetStatus() {
  FL_RETURN_IF_ERROR(Authenticated().status());
  return coordinator_->GetStatus();
}

}  // namespace fl::internal
