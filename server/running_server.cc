#include "server/running_server.h"

#include <algorithm>
#include <string>

#include "algorithms/registry.h"
#include "core/logging.h"
#include "server/coordinator_config.h"

namespace fl::internal {

nlohmann::json ServerConfigDefaults() {
  const GrpcServerOptions d;
  nlohmann::json defaults = AlgorithmConfigDefaults();
  defaults.update(CoordinatorConfigDefaults());
  defaults.update(ModelConfigDefaults("cnn"));
  defaults["server"] = {
      {"listen", d.listen_address},
      {"tls", {{"cert", ""}, {"key", ""}, {"ca", ""}}},
      {"require_client_cert", d.require_client_cert},
      {"insecure", d.insecure},
      {"max_poll_wait_s", static_cast<double>(d.max_poll_wait.count()) / 1000.0},
      {"stream_idle_timeout_s", static_cast<double>(d.stream_idle_timeout.count()) / 1000.0},
      {"max_inflight_upload_mb", d.max_inflight_upload_bytes >> 20},
      {"upload_threads", d.upload_threads},
      {"max_threads", d.max_threads},
      {"max_calls_per_client", d.max_calls_per_client},
      // After the last round, keep answering for this long so polling clients learn
      // that the federation is done instead of finding the server gone.
      {"drain_s", 5.0},
  };
  return defaults;
}

Result<GrpcServerOptions> GrpcServerOptionsFromConfig(const Config& config,
                                                      const CoordinatorOptions& coordinator) {
  GrpcServerOptions o;
  o.listen_address = config.GetString("server.listen");
  if (o.listen_address.empty()) {
    return Status::InvalidArgument("config key server.listen must be host:port (got \"\")");
  }
  o.tls_cert_path = config.GetString("server.tls.cert");
  o.tls_key_path = config.GetString("server.tls.key");
  o.tls_ca_path = config.GetString("server.tls.ca");
  o.require_client_cert = config.GetBool("server.require_client_cert");
  o.insecure = config.GetBool("server.insecure");
  const double wait_s = config.GetDouble("server.max_poll_wait_s");
  if (!(wait_s >= 0 && wait_s <= 3600)) {
    return Status::InvalidArgument("config key server.max_poll_wait_s must be in [0, 3600] (got " +
                                   std::to_string(wait_s) + ")");
  }
  o.max_poll_wait = std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000));
  o.max_update_bytes = coordinator.max_update_bytes;
  const double idle_s = config.GetDouble("server.stream_idle_timeout_s");
  if (!(idle_s > 0 && idle_s <= 86400)) {
    return Status::InvalidArgument(
        "config key server.stream_idle_timeout_s must be in (0, 86400] (got " +
        std::to_string(idle_s) + ")");
  }
  o.stream_idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(idle_s * 1000));
  const int64_t inflight_mb = config.GetInt("server.max_inflight_upload_mb");
  if (inflight_mb < 1 || inflight_mb > (1ll << 40) ||
      (static_cast<uint64_t>(inflight_mb) << 20) < o.max_update_bytes) {
    return Status::InvalidArgument(
        "config key server.max_inflight_upload_mb must be >= coordinator.max_update_mb (got " +
        std::to_string(inflight_mb) + ")");
  }
  o.max_inflight_upload_bytes = static_cast<uint64_t>(inflight_mb) << 20;
  const int64_t upload_threads = config.GetInt("server.upload_threads");
  if (upload_threads < 1 || upload_threads > 1024) {
    return Status::InvalidArgument("config key server.upload_threads must be in [1, 1024] (got " +
                                   std::to_string(upload_threads) + ")");
  }
  o.upload_threads = static_cast<int>(upload_threads);
  const int64_t threads = config.GetInt("server.max_threads");
  if (threads < 0 || threads > 1000000) {
    return Status::InvalidArgument("config key server.max_threads must be in [0, 1000000] (got " +
                                   std::to_string(threads) + ")");
  }
  o.max_threads = static_cast<int>(threads);
  const int64_t per_client = config.GetInt("server.max_calls_per_client");
  if (per_client < 0 || per_client > 1000000) {
    return Status::InvalidArgument(
        "config key server.max_calls_per_client must be in [0, 1000000] (got " +
        std::to_string(per_client) + ")");
  }
  o.max_calls_per_client = static_cast<int>(per_client);
  if (coordinator.mode == CoordinatorMode::kAsync) {
    o.serialized_versions = static_cast<int>(std::min<uint64_t>(4, coordinator.async.max_staleness + 1));
  }
  FL_RETURN_IF_ERROR(ValidateGrpcServerOptions(o));
  return o;
}

Result<std::unique_ptr<RunningServer>> RunningServer::Start(const Config& config,
                                                            std::optional<ParamSet> initial,
                                                            RoundCallback on_round,
                                                            SplitFactory make_split) {
  std::unique_ptr<RunningServer> server(new RunningServer());
  FL_ASSIGN_OR_RETURN(server->coordinator_options_, CoordinatorOptionsFromConfig(config));
  FL_ASSIGN_OR_RETURN(GrpcServerOptions grpc_options,
                      GrpcServerOptionsFromConfig(config, server->coordinator_options_));
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, CreateStrategy(config));
  if (!initial.has_value()) {
    FL_ASSIGN_OR_RETURN(ParamSet from_config, InitialModelFromConfig(config));
    initial = std::move(from_config);
  }
  // The coordinator keeps its own copy of the initial model.
  FL_ASSIGN_OR_RETURN(server->coordinator_,
                      Coordinator::Create(server->coordinator_options_, std::move(strategy),
                                          *initial));
  initial.reset();
  if (on_round) server->coordinator_->SetRoundCallback(std::move(on_round));
  if (make_split) {
    FL_ASSIGN_OR_RETURN(server->split_, make_split(server->coordinator_.get()));
    grpc_options.split = server->split_.get();
  }
  FL_ASSIGN_OR_RETURN(server->grpc_, StartGrpcServer(grpc_options, server->coordinator_.get()));
  return server;
}

void RunningServer::Shutdown(std::chrono::milliseconds grace) {
  if (grpc_ != nullptr) {
    grpc_->Shutdown(grace);
    grpc_.reset();
  }
  split_.reset();
}

RunningServer::~RunningServer() { Shutdown(std::chrono::seconds(5)); }

}  // namespace fl::internal
