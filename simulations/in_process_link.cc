#include "simulations/in_process_link.h"

#include <utility>

#include "codec/encoded_split_session.h"
#include "crypto/update_digest.h"

namespace fl::internal {
namespace {

// A split session's steps as direct calls on the server's session object.
class DirectSplitChannel final : public SplitChannel {
 public:
  explicit DirectSplitChannel(std::unique_ptr<SplitServerSession> session)
      : session_(std::move(session)) {}
  Result<EncodedTokens> Exchange(SplitStepKind kind, const EncodedTokens& tensor) override {
    return kind == SplitStepKind::kForward ? session_->Forward(tensor)
                                           : session_->Backward(tensor);
  }
  Status Close() override { return session_->Finish(); }
  // The server's session, dropped unfinished, records that the client left.
  void Abandon() override { session_.reset(); }

 private:
  std::unique_ptr<SplitServerSession> session_;
};

}  // namespace

Result<JoinReply> InProcessLink::Join(const std::string& enrollment_token,
                                      const std::string& client_name) {
  if (registered_.has_value()) return JoinReply{registered_->client_id, std::string()};
  FL_ASSIGN_OR_RETURN(JoinReply reply, coordinator_->Join(enrollment_token, client_name));
  session_token_ = reply.session_token;
  return reply;
}

Result<Session> InProcessLink::Authenticated() {
  if (registered_.has_value()) return *registered_;
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

Result<std::unique_ptr<SplitSession>> InProcessLink::OpenSplitSession(
    const SplitSessionOptions& options) {
  FL_ASSIGN_OR_RETURN(Session session, Authenticated());
  if (split_ == nullptr) return Status::Unimplemented("this server serves no split body");
  FL_ASSIGN_OR_RETURN(std::unique_ptr<SplitServerSession> opened, split_->Open(session, options));
  const int64_t tokens = opened->tokens();
  const int64_t width = opened->width();
  const SplitTokenRanges ranges = opened->ranges();
  return std::unique_ptr<SplitSession>(
      new EncodedSplitSession(tokens, width, ranges, options.encoding,
                              std::make_unique<DirectSplitChannel>(std::move(opened))));
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
