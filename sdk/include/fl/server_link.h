#ifndef FL_SDK_INCLUDE_FL_SERVER_LINK_H_
#define FL_SDK_INCLUDE_FL_SERVER_LINK_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fl/export.h"
#include "fl/status.h"
#include "fl/model_snapshot.h"
#include "fl/split_session.h"
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
//
// Errors. Both links return the same code for the same refusal: the server's verdict
// crosses gRPC unchanged (fl::StatusCode maps 1:1 onto grpc::StatusCode). Besides the
// codes listed on each call:
//  - Unauthenticated, from every call but Join: the link has no session (Join was not
//    called or failed) or the server does not know it. GrpcLink meets an
//    UNAUTHENTICATED answer to a call made with a session by joining again once, with
//    the token and name of the last Join, and repeating the call; it returns
//    Unauthenticated only when that fails.
//  - Unavailable, DeadlineExceeded (GrpcLink only): the server was unreachable or did
//    not answer within the call's deadline on every one of max_attempts attempts.
//    Other codes that gRPC itself produces for a broken call (Cancelled, Unknown,
//    Internal, ResourceExhausted for a message over gRPC's size limit) come back as
//    they are, without retry.
//  - the server's state store (SQLite) failing under Join, a session check or an
//    upload: Unavailable (I/O error, busy or locked database), ResourceExhausted (disk
//    full), DataLoss (corrupt file), Internal (anything else).
class FL_EXPORT ServerLink {
 public:
  virtual ~ServerLink() = default;
  // Enrolls with `enrollment_token` and remembers the session for later calls.
  // `client_name` is stable per device: re-joining with the same name returns the same
  // client id (and a new session). Errors: Unauthenticated (wrong enrollment token),
  // InvalidArgument (name empty, over 128 bytes, or with control characters);
  // GrpcLink: DataLoss if the server answers without a session token.
  virtual Result<JoinReply> Join(const std::string& enrollment_token,
                                 const std::string& client_name) = 0;
  // Long poll: waits up to `wait` for a task; returns a kWait task on timeout and a
  // kDone task once the federation finished or the server shuts down (not errors).
  // GrpcLink: the server caps the wait (GrpcServerOptions::max_poll_wait); DataLoss if
  // the answer holds no task, InvalidArgument if it names a task kind this client does
  // not know.
  virtual Result<Task> PullTask(std::chrono::milliseconds wait) = 0;
  // Downloads global model `version`. NotFound unless `version` is the server's current
  // version (older ones are not served). GrpcLink: DataLoss if the download is
  // truncated, longer than announced, fails its SHA-256 or layout hash, is not the
  // version asked for, has an unknown format or does not parse; ResourceExhausted if it announces more than
  // GrpcLinkOptions::max_model_bytes.
  virtual Result<ModelSnapshot> FetchModel(uint64_t version) = 0;
  // Like FetchModel, for a client that already holds model `have_version` (<
  // version): the server answers either with the full model or, when that is smaller,
  // with the replay records from have_version to version (ModelSnapshot::is_replay()).
  // The default asks for the full model, for links and servers without replay.
  // Errors as FetchModel; GrpcLink: also DataLoss if the replay records do not start at
  // have_version or their sizes do not add up.
  virtual Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t have_version) {
    return FetchModel(version);
  }
  // Uploads an update; returns once the server made it durable. A repeat of an
  // acknowledged update is acknowledged again with PushAck::duplicate = true. An empty
  // payload.meta.sha256 is filled in by the link (SHA-256 of payload.bytes); the server
  // always checks it. Refusals (each recorded in the server's update ledger; the round
  // goes on):
  //  - InvalidArgument: wrong length, layout hash or encoding, NaN/Inf values or train
  //    loss, non-positive weight, a payload the round's algorithm cannot decode;
  //  - FailedPrecondition: wrong round or base version, client not selected this round,
  //    or it already reported a different update this round;
  //  - PermissionDenied: payload.meta.client_id names another client;
  //  - ResourceExhausted: payload.bytes over the server's size limit;
  //  - DataLoss: payload.meta.sha256 does not match payload.bytes (GrpcLink: also an
  //    upload stream cut short);
  //  - Unavailable: the server could not store the update; nothing was folded, so
  //    retrying is safe (GrpcLink retries it).
  virtual Result<PushAck> PushUpdate(const Payload& payload) = 0;
  // Opens a split-learning session with the server's body for task `options.round`
  // (fl/split_session.h). Unimplemented if the server (or this link) serves no body;
  // FailedPrecondition unless the client is selected for that round and it is open;
  // ResourceExhausted when the server holds its maximum of sessions (or this client
  // already holds one); InvalidArgument for an encoding other than dense f32/f16/bf16.
  // The session may outlive this call but not the link.
  virtual Result<std::unique_ptr<SplitSession>> OpenSplitSession(
      const SplitSessionOptions& /*options*/) {
    return Status::Unimplemented("this link opens no split sessions");
  }
  // Tells the server the client is alive. No errors beyond the common ones.
  virtual Status Heartbeat() = 0;
  // The server's round, model version and counts. No errors beyond the common ones.
  virtual Result<ServerStatusInfo> GetStatus() = 0;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_SERVER_LINK_H_
