#ifndef FL_SERVER_GRPC_SERVICE_H_
#define FL_SERVER_GRPC_SERVICE_H_

// The gRPC face of a Coordinator: a thin adapter that converts fl.v1 messages to
// domain types and back, checks the session token in one place, streams models and
// updates in chunks, and runs the coordinator's deadline ticker. All federation logic
// stays in the Coordinator.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fl/env.h"
#include "fl/status.h"
#include "server/coordinator.h"
#include "server/split_service.h"

namespace fl::internal {

struct GrpcServerOptions {
  // "host:port" to listen on. Port 0 picks a free port (see GrpcServer::port()).
  std::string listen_address = "0.0.0.0:50051";
  // PEM server certificate chain and private key. Both are required unless `insecure`.
  std::string tls_cert_path;
  std::string tls_key_path;
  // PEM CA bundle that client certificates must chain to. Required with
  // require_client_cert.
  std::string tls_ca_path;
  // Mutual TLS: refuse clients that do not present a certificate signed by tls_ca_path.
  bool require_client_cert = false;
  // Serve plaintext. Explicit opt-in only (local experiments behind a trusted network);
  // setting it together with TLS files is an error, so a config is never ambiguous.
  bool insecure = false;
  // Upper bound on one PullTask long poll, whatever the client asks for, so idle calls
  // never outlive proxies' timeouts.
  std::chrono::milliseconds max_poll_wait{std::chrono::seconds(30)};
  // Uploads beyond this size are cut off while streaming, before they are buffered.
  // Should equal CoordinatorOptions::max_update_bytes (which the Coordinator enforces
  // again on the reassembled payload).
  uint64_t max_update_bytes = 1ull << 30;
  // Period of the ticker that calls Coordinator::Poll() (round deadlines) and cancels
  // idle streams.
  std::chrono::milliseconds poll_interval{200};
  // A FetchModel or PushUpdate stream that moves no message for this long is cancelled;
  // a stalled upload gets a DEADLINE_EXCEEDED ledger row. Checked every poll_interval,
  // so a stream is cancelled between this and this + poll_interval.
  std::chrono::milliseconds stream_idle_timeout{std::chrono::seconds(60)};
  // Upload bytes that PushUpdate streams may hold at once. After its header an upload
  // is admitted with its declared size counted against this budget (so an admitted
  // upload can always complete); one that does not fit waits, in arrival order, without
  // reading, so HTTP/2 flow control holds its client back, and is admitted when others
  // end. Buffers still grow only as bytes arrive. So uploads in flight never hold more
  // memory than this, however many there are. The idle timeout (stream_idle_timeout) does not
  // run while an upload waits for room or for its fold. Must be >= max_update_bytes.
  uint64_t max_inflight_upload_bytes = 2ull << 30;
  // Threads that run the blocking part of uploads (Coordinator::PushUpdate, which
  // waits for fsync, and the ledger rows of refused uploads), off gRPC's callback
  // threads. At least 1.
  int upload_threads = 4;
  // Cap on the threads gRPC's synchronous server runs SplitStep calls on (grpc::
  // ResourceQuota::SetMaxThreads; every other call runs on the callback API and holds
  // no thread while it waits); a call arriving when all are busy is answered
  // RESOURCE_EXHAUSTED by gRPC. 0: no cap.
  int max_threads = 1024;
  // PullTask, FetchModel and PushUpdate calls one client may have in flight at once;
  // more are answered RESOURCE_EXHAUSTED (a refused upload gets a ledger row), so one
  // client cannot hold the call state and upload budget that all share. 0: no cap.
  int max_calls_per_client = 8;
  // Model versions kept serialized for downloads. Synchronous rounds serve one version
  // at a time; in asynchronous mode clients fetch any version of the servable window, so
  // more are kept (the newest ones) instead of serializing them again on each switch.
  int serialized_versions = 1;
  // Optional, not owned: the clock for stream idle timeouts. Default Env::Default().
  Env* env = nullptr;
  // Optional, not owned, must outlive the server: the body SplitStep serves. Null:
  // SplitStep answers UNIMPLEMENTED.
  SplitService* split = nullptr;
};

// What the server holds right now, for logs, load checks and tests.
struct GrpcServerStats {
  uint64_t inflight_upload_bytes = 0;  // upload budget taken by admitted uploads
  uint64_t uploads_waiting = 0;        // uploads waiting for room in the budget
  uint64_t parked_polls = 0;           // long polls waiting for a task (no thread each)
  uint64_t open_streams = 0;           // FetchModel and PushUpdate calls running
  uint64_t idle_streams_cancelled = 0; // since start, by stream_idle_timeout
  uint64_t calls_in_flight = 0;        // handlers running, of every method
  uint64_t calls_refused_per_client = 0;  // since start, by max_calls_per_client
};

// A running server. Thread-safe.
class GrpcServer {
 public:
  virtual ~GrpcServer() = default;
  // The TCP port actually bound (the chosen one when the address asked for port 0).
  virtual int port() const = 0;
  virtual GrpcServerStats Stats() const = 0;
  // Stops accepting calls, reports NOT_SERVING to health checks, answers pending long
  // polls with a "wait" task, lets running calls finish until `deadline` has passed and
  // cancels the rest, then stops the ticker. Idempotent. Does not shut the Coordinator
  // down (clients of a restarted server must not be told the federation is done).
  virtual void Shutdown(std::chrono::milliseconds deadline) = 0;
  // Blocks until Shutdown() has completed (from another thread).
  virtual void Wait() = 0;
};

// Checks the options for consistency without touching files: InvalidArgument for an
// empty address, non-positive intervals or idle timeout, an upload budget below
// max_update_bytes, upload_threads < 1, a negative max_threads or max_calls_per_client,
// no cert/key without `insecure`, TLS settings
// together with `insecure`, or require_client_cert without a CA. StartGrpcServer calls
// it too; binaries call it early to refuse a bad config before doing any work.
Status ValidateGrpcServerOptions(const GrpcServerOptions& options);

// Builds and starts a server for `coordinator` (not owned; must outlive the server).
// InvalidArgument as ValidateGrpcServerOptions; NotFound or Unavailable if a PEM file
// cannot be read; Unavailable if the address cannot be bound.
Result<std::unique_ptr<GrpcServer>> StartGrpcServer(const GrpcServerOptions& options,
                                                    Coordinator* coordinator);

}  // namespace fl::internal

#endif  // FL_SERVER_GRPC_SERVICE_H_
