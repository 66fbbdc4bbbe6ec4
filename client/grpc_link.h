#ifndef FL_CLIENT_GRPC_LINK_H_
#define FL_CLIENT_GRPC_LINK_H_

// ServerLink over gRPC to fl-server: one channel for the link's lifetime, TLS by
// default, a deadline on every call, and retries with jittered exponential backoff for
// transient failures. The retried calls are all safe to repeat: Join with the same name
// returns the same client id, and the server acknowledges a repeated update as a
// duplicate without folding it twice.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/model_snapshot.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl::internal {

struct GrpcLinkOptions {
  // "host:port" of fl-server. Required.
  std::string target;
  // PEM CA bundle the server certificate must chain to. Empty: the system's roots.
  std::string root_ca_path;
  // PEM client certificate and key for servers that require mutual TLS. Both or neither.
  std::string client_cert_path;
  std::string client_key_path;
  // Plaintext channel. Explicit opt-in only; TLS settings together with it are an error.
  bool insecure = false;

  // Deadline of each unary call (Join, Heartbeat, GetStatus). A PullTask call gets its
  // long-poll wait plus this.
  std::chrono::milliseconds call_timeout{std::chrono::seconds(30)};
  // Deadline of one model download or update upload (whole stream).
  std::chrono::milliseconds transfer_timeout{std::chrono::minutes(10)};
  // Deadline of one split session (its whole SplitStep stream).
  std::chrono::milliseconds split_session_timeout{std::chrono::hours(2)};

  // Attempts per call (1 = no retry) for UNAVAILABLE and DEADLINE_EXCEEDED.
  int max_attempts = 6;
  // Backoff before retry k (k = 1, 2, ...): initial_backoff * multiplier^(k-1), capped at
  // max_backoff, then scaled by a uniform factor in [1 - jitter, 1] so clients that lost
  // the server together do not come back together.
  std::chrono::milliseconds initial_backoff{std::chrono::milliseconds(250)};
  std::chrono::milliseconds max_backoff{std::chrono::seconds(15)};
  double backoff_multiplier = 2.0;
  double jitter = 0.5;
  // Seed of the jitter; 0 draws one from std::random_device.
  uint64_t jitter_seed = 0;

  // Largest model download accepted, in bytes (a header claiming more is refused
  // before anything is allocated).
  uint64_t max_model_bytes = 8ull << 30;
};

// One link per client identity. Not thread-safe (as ServerLink).
class GrpcLink : public ServerLink {
 public:
  // Creates the channel (connection happens lazily on the first call).
  // InvalidArgument for inconsistent options; NotFound/Unavailable if a PEM file cannot
  // be read.
  static Result<std::unique_ptr<GrpcLink>> Create(const GrpcLinkOptions& options);
  ~GrpcLink() override;

  // Unauthenticated on a wrong token. Remembers the token and name, so that a later
  // call answered UNAUTHENTICATED (e.g. the server lost its sessions) joins again once
  // and is retried.
  Result<JoinReply> Join(const std::string& enrollment_token,
                         const std::string& client_name) override;
  Result<Task> PullTask(std::chrono::milliseconds wait) override;
  // DataLoss if the stream is truncated, longer than announced, fails its SHA-256 or
  // layout hash check, or does not parse.
  Result<ModelSnapshot> FetchModel(uint64_t version) override;
  // Sends have_version; a MODEL_FORMAT_REPLAY answer comes back as replay records
  // (checked: total size, SHA-256, one record per version from have_version on), a
  // full model as FetchModel. DataLoss for a stream that fails those checks.
  Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t have_version) override;
  // Streams payload.bytes in chunks of at most 1 MiB. payload.meta.sha256 is sent as
  // given; when empty it is computed here.
  Result<PushAck> PushUpdate(const Payload& payload) override;
  // One SplitStep stream per session, on the link's channel; the session may step while
  // the link makes other calls, and must not outlive the link. traffic() counts the
  // encoded tensor bytes plus kSplitFramingBytes per message (codec/token_codec.h), as
  // InProcessLink does. Opening is retried like the other calls (and re-joins once on
  // UNAUTHENTICATED); steps are not. DataLoss for an answer that is not the one asked for.
  Result<std::unique_ptr<SplitSession>> OpenSplitSession(
      const SplitSessionOptions& options) override;
  Status Heartbeat() override;
  Result<ServerStatusInfo> GetStatus() override;

  // The client id from the last successful Join (0 before).
  uint64_t client_id() const;

 private:
  struct Impl;
  explicit GrpcLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl::internal

#endif  // FL_CLIENT_GRPC_LINK_H_
