// fl-example-server: hosts the aggregator inside an app's own process with the public
// fl::Server (fl/server.h): the same service as the fl-server binary (gRPC, TLS, SQLite
// state that survives a restart), driven from code, with a callback per closed round.
//
//   fl-server certs --out certs
//   fl-example-linear-client --export-model linear.flps
//   fl-example-server --tls-cert certs/server.pem --tls-key certs/server.key
//       --init-model linear.flps --state-dir state --enrollment-token T --rounds 5
//       --min-clients 2 --out final.flps [--linger-s 5] [--set key=value ...]
//
// Exit status: 0 when the federation finished, 2 for a bad command line or option, 1 for
// any other failure.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fl/param_set.h"
#include "fl/server.h"

namespace {

constexpr char kProgram[] = "fl-example-server";

int Fail(const char* what, const fl::Status& status) {
  std::fprintf(stderr, "%s: %s: %s\n", kProgram, what, status.ToString().c_str());
  return status.code() == fl::StatusCode::kInvalidArgument ? 2 : 1;
}

// "--flag value" pairs; repeated --set flags collect into `overrides`.
bool ParseFlags(int argc, char** argv, std::map<std::string, std::string>* flags,
                std::vector<std::string>* overrides) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag.rfind("--", 0) != 0) return false;
    if (flag == "--set") {
      overrides->push_back(argv[i + 1]);
    } else {
      (*flags)[flag] = argv[i + 1];
    }
  }
  return argc % 2 == 1;
}

uint64_t Count(const std::map<std::string, std::string>& flags, const std::string& name) {
  auto it = flags.find(name);
  return it == flags.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

int Run(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  fl::ServerOptions options;
  if (!ParseFlags(argc, argv, &flags, &options.config_overrides)) {
    std::fprintf(stderr, "usage: %s --FLAG VALUE ... (see the comment at the top)\n", kProgram);
    return 2;
  }
  options.listen = flags.count("--listen") ? flags["--listen"] : "0.0.0.0:50051";
  options.tls_cert_file = flags["--tls-cert"];
  options.tls_key_file = flags["--tls-key"];
  options.enrollment_token = flags["--enrollment-token"];
  options.state_dir = flags["--state-dir"];
  options.algorithm = flags["--algorithm"];
  options.rounds = Count(flags, "--rounds");
  options.min_clients = Count(flags, "--min-clients");
  if (!flags.count("--linger-s")) flags["--linger-s"] = "5";
  if (!flags["--init-model"].empty()) {
    fl::Result<fl::ParamSet> initial = fl::ReadModelFile(flags["--init-model"]);
    if (!initial.ok()) return Fail("initial model", initial.status());
    options.initial_model = std::move(initial).value();
  }
  options.on_round = [](const fl::RoundInfo& r) {
    std::printf("round %llu closed: %llu updates, %llu rejected, train loss %.4f -> version %llu\n",
                static_cast<unsigned long long>(r.round),
                static_cast<unsigned long long>(r.updates),
                static_cast<unsigned long long>(r.rejected), r.mean_train_loss,
                static_cast<unsigned long long>(r.model_version));
    std::fflush(stdout);
  };

  fl::Result<std::unique_ptr<fl::Server>> server = fl::Server::Start(options);
  if (!server.ok()) return Fail("start", server.status());
  std::printf("serving on port %d\n", (*server)->port());
  std::fflush(stdout);
  (*server)->Wait();
  // Keep answering for a while, as fl-server's server.drain_s does, so that clients can
  // learn the federation is done and download the final model.
  std::this_thread::sleep_for(std::chrono::seconds(Count(flags, "--linger-s")));
  const fl::ParamSet model = (*server)->GlobalModel();
  std::printf("federation finished at version %llu\n",
              static_cast<unsigned long long>((*server)->GetStatus().model_version));
  (*server)->Shutdown();
  if (!flags["--out"].empty()) {
    fl::Status written = fl::WriteModelFile(flags["--out"], model);
    if (!written.ok()) return Fail("write", written);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
