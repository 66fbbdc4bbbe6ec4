// One process with libfl_client and libfl_server loaded. Both libraries contain the
// algorithm registry and the wire protocol's code; the process must behave as if there
// were one of each. Loading them at all checks the wire protocol (two registrations of
// fl/v1/fl.proto with protobuf's descriptor pool would abort). For the registry, an
// algorithm registered by the application must be found by the server's code inside
// libfl_server, whichever library the application's call bound to.
#include <dlfcn.h>

#include <cstdio>
#include <memory>
#include <string>

#include "fl/algorithm.h"
#include "fl/client.h"
#include "fl/param_set.h"
#include "fl/server.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// The file name of the library that defines the function at `address`.
std::string DefiningLibrary(void* address) {
  Dl_info info{};
  return dladdr(address, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "?";
}

bool strategy_factory_called = false;

}  // namespace

int main() {
  // Both libraries are direct dependencies; make sure the linker kept both.
  fl::ClientOptions client_options;
  Check(!fl::Client::Connect(client_options).ok(), "fl::Client::Connect refuses empty options");
  fl::ServerOptions refused;
  refused.listen = "";
  Check(!fl::Server::Start(refused).ok(), "fl::Server::Start refuses an empty address");

  std::printf("fl::RegisterAlgorithm bound to %s\n",
              DefiningLibrary(reinterpret_cast<void*>(&fl::RegisterAlgorithm)).c_str());
  fl::AlgorithmDefinition d;
  d.name = "consumer-algo";
  d.summary = "registered by the consumer test";
  d.create_strategy = [](const fl::AlgorithmConfig&) -> fl::Result<std::unique_ptr<fl::Strategy>> {
    strategy_factory_called = true;
    return fl::Status::Unimplemented("consumer-algo builds no strategy");
  };
  d.create_learner = [] { return fl::NewDenseDeltaLearner(); };
  Check(fl::RegisterAlgorithm(std::move(d)).ok(), "the application registers consumer-algo");
  Check(fl::FindAlgorithm("consumer-algo") != nullptr, "fl::FindAlgorithm finds it");
  Check(fl::FindAlgorithm("fedavg") != nullptr, "the built-in algorithms are registered");

  // The server's code in libfl_server looks the algorithm up and calls its factory.
  fl::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.insecure = true;
  options.state_dir = "/nonexistent/consumer-test-state";  // refused before it is used
  options.algorithm = "consumer-algo";
  fl::Layout layout;
  layout.Add("w", {4});
  options.initial_model = fl::ParamSet(layout);
  fl::Status started = fl::Server::Start(options).status();
  std::printf("fl::Server::Start: %s\n", started.ToString().c_str());
  Check(strategy_factory_called && started.code() == fl::StatusCode::kUnimplemented,
        "libfl_server found the application's algorithm and called its factory");

  std::printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
