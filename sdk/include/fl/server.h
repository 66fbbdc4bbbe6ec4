#ifndef FL_SDK_INCLUDE_FL_SERVER_H_
#define FL_SDK_INCLUDE_FL_SERVER_H_

// Hosting the aggregator inside a process: the same service as the fl-server binary
// (gRPC, TLS, SQLite state with crash recovery), driven from code.
//
//   fl::ServerOptions options;
//   options.listen = "0.0.0.0:50051";
//   options.tls_cert_file = "server.pem";
//   options.tls_key_file = "server.key";
//   options.enrollment_token = "s3cret";
//   options.state_dir = "/var/lib/my-federation";
//   options.initial_model = MyModelLayoutWithInitialValues();
//   options.config_overrides = {"run.rounds=20", "coordinator.min_clients=3"};
//   options.on_round = [](const fl::RoundInfo& r) { ... };
//   auto server = fl::Server::Start(options);
//   (*server)->Wait();                    // until the last round closed
//   fl::ParamSet result = (*server)->GlobalModel();
//
// Every key of the fl-server configuration (`fl-server --print-config`) can be set with
// config_file and config_overrides; the fields below are the common ones and win over both.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fl/export.h"
#include "fl/param_set.h"
#include "fl/server_link.h"
#include "fl/status.h"

namespace fl {

// One closed round, as reported to ServerOptions::on_round.
struct RoundInfo {
  uint64_t round = 0;
  uint64_t model_version = 0;    // the version the round produced
  uint64_t updates = 0;          // folded into the round
  uint64_t rejected = 0;         // refused (each has a ledger row)
  double mean_train_loss = 0;    // weighted mean of the clients' reported loss
  uint64_t bytes_up = 0;         // accepted upload bytes
  uint64_t bytes_down = 0;       // model bytes served
  double seconds = 0;            // from open to close
  std::map<std::string, double> strategy_stats;  // the algorithm's own counters
};

struct ServerOptions {
  // "host:port" to listen on; port 0 picks a free one (see Server::port()).
  std::string listen = "0.0.0.0:50051";
  // PEM certificate chain and private key. Required unless `insecure`.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Mutual TLS: clients must present a certificate chaining to this PEM bundle.
  std::string tls_client_ca_file;
  bool require_client_cert = false;
  // Serve plaintext; explicit opt-in, an error together with TLS files.
  bool insecure = false;
  // Clients must present this token to join. Empty: anyone may join.
  std::string enrollment_token;
  // Directory for the SQLite store, model versions and the update spool; empty keeps the
  // config's run.state_dir. A server started again on the same directory resumes where
  // the last one stopped.
  std::string state_dir;
  // The model the federation starts from (version 0). Ignored when the state directory
  // already holds a model; otherwise required unless the config names one
  // (model.init_file or model.name).
  std::optional<ParamSet> initial_model;
  // Algorithm by registered name (fl/algorithm.h); empty keeps the config's (fedavg).
  std::string algorithm;
  // Rounds to run and clients per round; 0 keeps the config's value.
  uint64_t rounds = 0;
  uint64_t min_clients = 0;
  uint64_t clients_per_round = 0;
  // Further configuration, as for fl-server: a YAML/JSON file, then "key=value" overrides.
  std::string config_file;
  std::vector<std::string> config_overrides;
  // Called after every closed round, on a server thread; keep it short. May be empty.
  std::function<void(const RoundInfo&)> on_round;
};

// A running aggregator. Thread-safe.
class FL_EXPORT Server {
 public:
  // Validates the options (InvalidArgument naming the field or config key), opens or
  // resumes the state directory and starts serving. Unavailable if the address cannot be
  // bound; NotFound if a certificate file is missing.
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& options);
  // Shuts down if still running.
  ~Server();

  // The TCP port bound.
  int port() const;
  // Blocks until the federation has run all its rounds.
  void Wait();
  // As Wait, for at most `timeout`; true if the federation finished.
  bool WaitFor(std::chrono::milliseconds timeout);
  // Stops serving: calls in flight get `grace` to complete, then are cancelled. What was
  // acknowledged is durable; a later Start on the same state_dir resumes. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));

  // The current global model and its version.
  ParamSet GlobalModel() const;
  ServerStatusInfo GetStatus() const;

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_SERVER_H_
