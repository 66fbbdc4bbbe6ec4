// fl-server: runs a federation behind gRPC.
//
//   fl-server --init-model model.flps --tls-cert server.pem --tls-key server.key ...
//   fl-server certs --out DIR          (development CA, server and client certificates)
//
// Exit status: 0 when the federation finished (or was stopped by SIGINT/SIGTERM),
// 2 for a bad command line or config, 1 for any other failure.

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/logging.h"
#include "server/dev_certs.h"
#include "server/running_server.h"
#ifdef FL_SERVER_WITH_SPLIT
#include "server/split_config.h"
#endif

namespace fl::internal {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int signal) { g_stop_signal = signal; }

// The first SIGINT/SIGTERM asks for a graceful stop; SA_RESETHAND restores the default
// action, so a second one terminates at once if the graceful stop hangs.
void InstallStopHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool StopRequested() { return g_stop_signal != 0; }

std::vector<FlagAlias> ServerAliases() {
  std::vector<FlagAlias> aliases = {
      {"--listen", "server.listen", "address to listen on (host:port)"},
      {"--tls-cert", "server.tls.cert", "PEM server certificate chain"},
      {"--tls-key", "server.tls.key", "PEM server private key"},
      {"--tls-ca", "server.tls.ca", "PEM CA bundle for client certificates"},
      {"--require-client-cert", "server.require_client_cert", "mutual TLS"},
      {"--insecure", "server.insecure", "serve plaintext (no TLS); explicit opt-in"},
      {"--init-model", "model.init_file", "initial model (SerializeParamSet file)"},
      {"--model", "model.name", "model name; random:<n> for a synthetic model"},
      {"--rounds", "run.rounds", "rounds to run"},
      {"--seed", "run.seed", "run seed"},
      {"--state-dir", "run.state_dir", "directory for the store, models and spool"},
      {"--enrollment-token", "coordinator.enrollment_token", "token clients must present"},
      {"--min-clients", "coordinator.min_clients", "clients needed to open a round"},
      {"--clients-per-round", "coordinator.clients_per_round", "clients selected per round"},
      {"--mode", "coordinator.mode", "sync (rounds) | async (buffered, staleness-weighted)"},
  };
#ifdef FL_SERVER_WITH_SPLIT
  for (FlagAlias& a : SplitFlagAliases()) aliases.push_back(std::move(a));
#endif
  return aliases;
}

// Every key fl-server accepts: fl::Server's, plus the split body's where LibTorch is built.
nlohmann::json Defaults() {
  nlohmann::json defaults = ServerConfigDefaults();
#ifdef FL_SERVER_WITH_SPLIT
  defaults.update(SplitConfigDefaults());
#endif
  return defaults;
}

int RunCerts(int argc, char** argv) {
  CLI::App app{"Writes a development CA, a server certificate and a client certificate",
               "fl-server certs"};
  std::string out;
  std::vector<std::string> names = DevCertOptions().server_names;
  int days = DevCertOptions().valid_days;
  app.add_option("--out", out, "output directory")->required();
  app.add_option("--names", names, "server certificate names (DNS names or IP addresses)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--days", days, "validity in days")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  DevCertOptions options;
  options.server_names = names;
  options.valid_days = days;
  Result<DevCertPaths> paths = MakeDevCerts(out, options);
  if (!paths.ok()) {
    std::fprintf(stderr, "fl-server certs: %s\n", paths.status().ToString().c_str());
    return paths.status().code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  std::printf("CA:     %s (key %s)\nserver: %s (key %s)\nclient: %s (key %s)\n",
              paths->ca_cert.c_str(), paths->ca_key.c_str(), paths->server_cert.c_str(),
              paths->server_key.c_str(), paths->client_cert.c_str(), paths->client_key.c_str());
  return 0;
}

int ExitCodeFor(const Status& status) {
  return status.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
}

int Fail(const char* what, const Status& status) {
  std::fprintf(stderr, "fl-server: %s: %s\n", what, status.ToString().c_str());
  return ExitCodeFor(status);
}

int RunServer(int argc, char** argv) {
  Result<CommandLine> command_line = ParseCommandLine(
      "fl-server",
      "Federated learning aggregator over gRPC (TLS by default): synchronous rounds, or an\n"
      "asynchronous buffer with coordinator.mode=async.\n"
      "Subcommand: fl-server certs --out DIR writes development certificates.",
      Defaults(), ServerAliases(), argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "fl-server: %s\n", command_line.status().message().c_str());
    return kExitUsage;
  }
  if (command_line->exit_now) return command_line->exit_code;
  const Config& config = command_line->config;

  const double drain_s = config.GetDouble("server.drain_s");
  if (!(drain_s >= 0 && drain_s <= 3600)) {
    return Fail("config",
                Status::InvalidArgument("config key server.drain_s must be in [0, 3600]"));
  }
  auto log_round = [](const RoundSummary& s, const ModelSnapshot&) {
    FL_LOG(INFO) << "round " << s.round << ": " << s.num_updates << " updates, " << s.num_rejected
                 << " rejected, " << s.seconds << " s, train loss " << s.mean_train_loss << ", "
                 << s.bytes_up / 1e6 << " MB up, " << s.bytes_down / 1e6 << " MB down -> version "
                 << s.new_version;
  };
  RunningServer::SplitFactory make_split;
#ifdef FL_SERVER_WITH_SPLIT
  Result<RunningServer::SplitFactory> split = SplitFactoryFromConfig(config);
  if (!split.ok()) return Fail("config", split.status());
  make_split = std::move(split).value();
#endif
  InstallStopHandlers();
  Result<std::unique_ptr<RunningServer>> server =
      RunningServer::Start(config, std::nullopt, log_round, std::move(make_split));
  if (!server.ok()) return Fail("server", server.status());
  Coordinator& coordinator = (*server)->coordinator();
  const CoordinatorOptions& coordinator_options = (*server)->coordinator_options();
  FL_LOG(INFO) << "fl-server ready on port " << (*server)->port() << ", "
               << coordinator_options.num_rounds << " rounds, state in "
               << coordinator_options.state_dir;

  using std::chrono::milliseconds;
  bool finished = false;
  while (!StopRequested()) {
    if (coordinator.WaitUntilFinished(milliseconds(200))) {
      finished = true;
      break;
    }
  }
  if (finished) {
    const ServerStatusInfo info = coordinator.GetStatus();
    FL_LOG(INFO) << "federation finished: model version " << info.model_version << " in "
                 << coordinator_options.state_dir << "/models; draining for " << drain_s << " s";
    const auto drain_end =
        std::chrono::steady_clock::now() + milliseconds(static_cast<int64_t>(drain_s * 1000));
    while (!StopRequested() && std::chrono::steady_clock::now() < drain_end) {
      std::this_thread::sleep_for(milliseconds(100));
    }
  } else {
    FL_LOG(INFO) << "signal " << static_cast<int>(g_stop_signal) << ": shutting down";
  }
  (*server)->Shutdown(std::chrono::seconds(5));
  server->reset();
  FL_LOG(INFO) << "fl-server stopped";
  return 0;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "certs") {
    return fl::internal::RunCerts(argc - 1, argv + 1);
  }
  return fl::internal::RunServer(argc, argv);
}
