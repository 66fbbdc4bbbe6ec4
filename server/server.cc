// fl::Server: the aggregator hosted in an app's process (fl/server.h).

#include "fl/server.h"

#include <mutex>
#include <utility>

#include "core/config.h"
#include "server/running_server.h"

namespace fl {
namespace {

RoundInfo ToRoundInfo(const internal::RoundSummary& s) {
  RoundInfo r;
  r.round = s.round;
  r.model_version = s.new_version;
  r.updates = s.num_updates;
  r.rejected = s.num_rejected;
  r.mean_train_loss = s.mean_train_loss;
  r.bytes_up = s.bytes_up;
  r.bytes_down = s.bytes_down;
  r.seconds = s.seconds;
  r.strategy_stats = s.strategy_stats;
  return r;
}

// The typed fields win over the config file and overrides; each is named in errors.
Status ApplyTypedOptions(const ServerOptions& o, internal::Config* config) {
  struct Field {
    const char* key;
    std::string value;
    bool set;
    const char* source;
  };
  const Field fields[] = {
      {"server.listen", o.listen, true, "ServerOptions.listen"},
      {"server.tls.cert", o.tls_cert_file, !o.tls_cert_file.empty(), "ServerOptions.tls_cert_file"},
      {"server.tls.key", o.tls_key_file, !o.tls_key_file.empty(), "ServerOptions.tls_key_file"},
      {"server.tls.ca", o.tls_client_ca_file, !o.tls_client_ca_file.empty(),
       "ServerOptions.tls_client_ca_file"},
      {"server.require_client_cert", "true", o.require_client_cert,
       "ServerOptions.require_client_cert"},
      {"server.insecure", "true", o.insecure, "ServerOptions.insecure"},
      {"coordinator.enrollment_token", o.enrollment_token, !o.enrollment_token.empty(),
       "ServerOptions.enrollment_token"},
      {"run.state_dir", o.state_dir, !o.state_dir.empty(), "ServerOptions.state_dir"},
      {"algorithm.name", o.algorithm, !o.algorithm.empty(), "ServerOptions.algorithm"},
      {"run.rounds", std::to_string(o.rounds), o.rounds > 0, "ServerOptions.rounds"},
      {"coordinator.min_clients", std::to_string(o.min_clients), o.min_clients > 0,
       "ServerOptions.min_clients"},
      {"coordinator.clients_per_round", std::to_string(o.clients_per_round),
       o.clients_per_round > 0, "ServerOptions.clients_per_round"},
  };
  for (const Field& f : fields) {
    if (f.set) FL_RETURN_IF_ERROR(config->Set(f.key, f.value, f.source));
  }
  return Status::Ok();
}

}  // namespace

struct Server::Impl {
  std::unique_ptr<internal::RunningServer> running;
  std::once_flag shutdown_once;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(); }

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  FL_ASSIGN_OR_RETURN(internal::Config config,
                      internal::Config::Build(internal::ServerConfigDefaults(),
                                              options.config_file, options.config_overrides));
  FL_RETURN_IF_ERROR(ApplyTypedOptions(options, &config));
  internal::RunningServer::RoundCallback on_round;
  if (options.on_round) {
    on_round = [cb = options.on_round](const internal::RoundSummary& s, const ModelSnapshot&) {
      cb(ToRoundInfo(s));
    };
  }
  auto impl = std::make_unique<Impl>();
  FL_ASSIGN_OR_RETURN(impl->running,
                      internal::RunningServer::Start(config, options.initial_model, on_round));
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

int Server::port() const { return impl_->running->port(); }

void Server::Wait() {
  while (!WaitFor(std::chrono::hours(1))) {
  }
}

bool Server::WaitFor(std::chrono::milliseconds timeout) {
  return impl_->running->coordinator().WaitUntilFinished(timeout);
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  std::call_once(impl_->shutdown_once, [&] { impl_->running->Shutdown(grace); });
}

ParamSet Server::GlobalModel() const {
  ModelSnapshot current = impl_->running->coordinator().CurrentModel();
  return current.params != nullptr ? *current.params : ParamSet();
}

ServerStatusInfo Server::GetStatus() const { return impl_->running->coordinator().GetStatus(); }

}  // namespace fl
