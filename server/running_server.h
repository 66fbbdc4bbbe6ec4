#ifndef FL_SERVER_RUNNING_SERVER_H_
#define FL_SERVER_RUNNING_SERVER_H_

// An aggregator assembled from an fl-server configuration: Strategy, Coordinator (state in
// SQLite) and the gRPC service. fl-server's main and fl::Server (fl/server.h) both start
// their server here, so the binary and an embedding app run the same thing.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "server/coordinator.h"
#include "server/grpc_service.h"
#include "server/split_service.h"

namespace fl::internal {

// Every key fl-server accepts, with its default: the registered algorithms' sections,
// "coordinator", "run", "model" and "server" (listen, tls, require_client_cert,
// insecure, max_poll_wait_s, stream_idle_timeout_s, max_inflight_upload_mb,
// upload_threads, max_threads, max_calls_per_client, drain_s).
nlohmann::json ServerConfigDefaults();

// Reads the "server" section. InvalidArgument naming the key for an out-of-range value.
Result<GrpcServerOptions> GrpcServerOptionsFromConfig(const Config& config,
                                                      const CoordinatorOptions& coordinator);

class RunningServer {
 public:
  using RoundCallback = std::function<void(const RoundSummary&, const ModelSnapshot&)>;
  // Builds the split body the server hosts, once the coordinator exists (SplitStep answers
  // UNIMPLEMENTED without one); server/split_config.h makes it from the config.
  using SplitFactory =
      std::function<Result<std::unique_ptr<SplitService>>(Coordinator* coordinator)>;

  // Validates `config` (ServerConfigDefaults() schema), creates the strategy, opens or
  // resumes the coordinator's state and starts serving. `initial` is the model version 0
  // when given; otherwise the config's model section provides it. `on_round` (may be
  // empty) observes every closed round. `make_split` (may be empty) builds the split
  // body served by SplitStep.
  static Result<std::unique_ptr<RunningServer>> Start(const Config& config,
                                                      std::optional<ParamSet> initial,
                                                      RoundCallback on_round,
                                                      SplitFactory make_split = {});
  ~RunningServer();

  Coordinator& coordinator() { return *coordinator_; }
  int port() const { return grpc_->port(); }
  const CoordinatorOptions& coordinator_options() const { return coordinator_options_; }
  // Stops the gRPC service (calls in flight get `grace`), then the split body. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  RunningServer() = default;
  CoordinatorOptions coordinator_options_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<SplitService> split_;  // after the coordinator, before the gRPC server
  std::unique_ptr<GrpcServer> grpc_;
};

}  // namespace fl::internal

#endif  // FL_SERVER_RUNNING_SERVER_H_
