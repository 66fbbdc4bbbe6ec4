// One process with libfl_client and libfl_server loaded. Both libraries contain the
// algorithm registry and the wire protocol's generated code; both must bind to one copy.
// Loading them at all checks the second (protobuf aborts on a second registration of
// fl/v1/fl.proto). For the first, an algorithm is registered through each library's own
// RegisterAlgorithm and must be listed by the other library's RegisteredAlgorithms.
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "fl/algorithm.h"
#include "fl/client.h"
#include "fl/server.h"

namespace {

using RegisterFn = fl::Status (*)(fl::AlgorithmDefinition);
using ListFn = std::vector<std::string> (*)();

int failures = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// The definition of the function at `address` (whichever library the program bound it to)
// as found in the library `soname` itself.
template <typename Fn>
Fn FromLibrary(const char* soname, Fn address) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(address), &info) == 0 || info.dli_sname == nullptr) {
    return nullptr;
  }
  void* library = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
  if (library == nullptr) return nullptr;
  return reinterpret_cast<Fn>(dlsym(library, info.dli_sname));
}

fl::AlgorithmDefinition Definition(const std::string& name) {
  fl::AlgorithmDefinition d;
  d.name = name;
  d.summary = "registered by the consumer test";
  d.create_strategy = [](const fl::AlgorithmConfig&) -> fl::Result<std::unique_ptr<fl::Strategy>> {
    return fl::Status::Unimplemented("consumer test");
  };
  d.create_learner = [] { return fl::NewDenseDeltaLearner(); };
  return d;
}

bool Lists(ListFn list, const std::string& name) {
  std::vector<std::string> names = list();
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

int main() {
  // Both libraries are direct dependencies; make sure the linker kept both.
  fl::ClientOptions client_options;
  Check(!fl::Client::Connect(client_options).ok(), "fl::Client::Connect refuses empty options");
  fl::ServerOptions server_options;
  server_options.state_dir = "";
  Check(!fl::Server::Start(server_options).ok(), "fl::Server::Start refuses empty options");

  RegisterFn client_register = FromLibrary("libfl_client.so.0", &fl::RegisterAlgorithm);
  RegisterFn server_register = FromLibrary("libfl_server.so.0", &fl::RegisterAlgorithm);
  ListFn client_list = FromLibrary("libfl_client.so.0", &fl::RegisteredAlgorithms);
  ListFn server_list = FromLibrary("libfl_server.so.0", &fl::RegisteredAlgorithms);
  Check(client_register && server_register && client_list && server_list,
        "each library defines RegisterAlgorithm and RegisteredAlgorithms");
  if (failures != 0) return 1;
  Check(client_register != server_register, "the two libraries' functions are distinct");

  Check(client_register(Definition("via-client")).ok(), "register through libfl_client");
  Check(Lists(server_list, "via-client"), "libfl_server lists it");
  Check(server_register(Definition("via-server")).ok(), "register through libfl_server");
  Check(Lists(client_list, "via-server"), "libfl_client lists it");
  Check(Lists(client_list, "fedavg") && Lists(server_list, "fedavg"), "both list fedavg");
  Check(client_list() == server_list(), "both list the same algorithms");

  std::printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
