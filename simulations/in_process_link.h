#ifndef FL_SIMULATIONS_IN_PROCESS_LINK_H_
#define FL_SIMULATIONS_IN_PROCESS_LINK_H_

// A ServerLink that calls a Coordinator in the same process: fl-sim's transport and the
// tests' fake network. Same validation path as gRPC (the Coordinator does it all), so
// the same codes (fl/server_link.h); every call but Join needs the session of a Join,
// as over gRPC, except on a link made for a registered client (fl-sim's virtual
// clients, Coordinator::RegisterClients), which holds its session from the start. It
// never retries a call.

#include <optional>
#include <string>

#include "fl/server_link.h"
#include "server/coordinator.h"
#include "server/split_service.h"

namespace fl::internal {

class InProcessLink : public ServerLink {
 public:
  // `coordinator` and `split` (may be null: no split sessions) are not owned and must
  // outlive the link and its sessions.
  explicit InProcessLink(Coordinator* coordinator, SplitService* split = nullptr)
      : coordinator_(coordinator), split_(split) {}
  // A link for a client registered with Coordinator::RegisterClients (fl-sim's virtual
  // clients): it holds `registered` from the start, so Join answers with its client id
  // without calling the coordinator, and calls skip the session token check.
  InProcessLink(Coordinator* coordinator, SplitService* split, Session registered)
      : coordinator_(coordinator), split_(split), registered_(registered) {}

  Result<JoinReply> Join(const std::string& enrollment_token,
                         const std::string& client_name) override;
  Result<Task> PullTask(std::chrono::milliseconds wait) override;
  Result<ModelSnapshot> FetchModel(uint64_t version) override;
  // Replay records are handed out as the coordinator's shared copies; wire_bytes counts
  // what they would cost on the wire.
  Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t have_version) override;
  Result<PushAck> PushUpdate(const Payload& payload) override;
  // Opens through SplitService::Open; each tensor is encoded, checked and decoded as it
  // would be over gRPC, and traffic() counts what GrpcLink's session would. Unimplemented
  // without a SplitService.
  Result<std::unique_ptr<SplitSession>> OpenSplitSession(
      const SplitSessionOptions& options) override;
  Status Heartbeat() override;
  Result<ServerStatusInfo> GetStatus() override;

 private:
  // Resolves the session exactly as the gRPC service does.
  Result<Session> Authenticated();

  Coordinator* coordinator_;
  SplitService* split_;
  std::string session_token_;
  std::optional<Session> registered_;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_IN_PROCESS_LINK_H_
