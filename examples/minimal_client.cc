// fl-example-linear-client: the smallest complete edge app. It links only libfl_client
// (no LibTorch), brings its own model as an fl::Trainer (examples/linear_trainer.h:
// linear regression in plain C++) and joins an fl-server federation over TLS.
//
//   fl-example-linear-client --export-model linear.flps        # initial model for the server
//   fl-server --init-model linear.flps --tls-cert ... --enrollment-token T
//   fl-example-linear-client --server localhost:50051 --tls-ca ca.pem
//       --enrollment-token T --name sensor-1 --data-seed 1
//
// Each device generates its own rows of y = w.x + b + noise from --data-seed (standing in
// for data that never leaves the device). When the federation finishes, the app
// downloads the final global model and reports its loss on the local rows.
//
// Exit status: 0 on success, 2 for a bad command line, 1 for any other failure.

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client_runtime.h"
#include "client/grpc_link.h"
#include "codec/param_io.h"
#include "core/config.h"
#include "examples/linear_trainer.h"
#include "fl/env.h"

namespace {

constexpr char kProgram[] = "fl-example-linear-client";
constexpr size_t kDim = 8;  // features per row; the exported model has the same layout

int Fail(const char* what, const fl::Status& status) {
  std::fprintf(stderr, "%s: %s: %s\n", kProgram, what, status.ToString().c_str());
  return status.code() == fl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Run(int argc, char** argv) {
  using fl::internal::FlagAlias;
  const nlohmann::json defaults = {
      {"server", "localhost:50051"},
      {"tls_ca", ""},
      {"insecure", false},
      {"enrollment_token", ""},
      {"name", ""},
      {"data_seed", 1},
      {"rows", 256},
      {"export_model", ""},
  };
  const std::vector<FlagAlias> aliases = {
      {"--server", "server", "fl-server address (host:port)"},
      {"--tls-ca", "tls_ca", "PEM CA bundle the server certificate must chain to"},
      {"--insecure", "insecure", "plaintext connection (explicit opt-in)"},
      {"--enrollment-token", "enrollment_token", "token the server expects"},
      {"--name", "name", "stable device name"},
      {"--data-seed", "data_seed", "seed of this device's synthetic rows"},
      {"--rows", "rows", "local rows"},
      {"--export-model", "export_model", "write the initial (zero) model to FILE and exit"},
  };
  fl::Result<fl::internal::CommandLine> cl = fl::internal::ParseCommandLine(
      kProgram, "Minimal edge app: plain C++ linear regression joining an fl-server federation.",
      defaults, aliases, argc, argv);
  if (!cl.ok()) {
    std::fprintf(stderr, "%s: %s\n", kProgram, cl.status().message().c_str());
    return 2;
  }
  if (cl->exit_now) return cl->exit_code;
  const fl::internal::Config& config = cl->config;

  const int64_t rows = config.GetInt("rows");
  const int64_t data_seed = config.GetInt("data_seed");
  if (rows < 1 || data_seed < 0) {
    return Fail("config", fl::Status::InvalidArgument("rows must be >= 1 and data_seed >= 0"));
  }
  std::vector<float> x, y;
  fl::examples::MakeLinearData(kDim, static_cast<size_t>(rows), static_cast<uint64_t>(data_seed),
                               &x, &y);
  fl::examples::LinearTrainer trainer(kDim, std::move(x), std::move(y));

  // The server starts from the model the app defines: all zeros in the app's layout.
  const std::string export_path = config.GetString("export_model");
  if (!export_path.empty()) {
    fl::ParamSet initial;
    fl::Status s = trainer.GetParameters(&initial);
    if (s.ok()) {
      s = fl::Env::Default()->WriteFileAtomic(export_path, fl::internal::SerializeParamSet(initial),
                                              /*sync=*/true);
    }
    if (!s.ok()) return Fail("export", s);
    std::printf("wrote the initial model (%zu parameters) to %s\n", initial.size(),
                export_path.c_str());
    return 0;
  }

  fl::internal::GrpcLinkOptions link_options;
  link_options.target = config.GetString("server");
  link_options.root_ca_path = config.GetString("tls_ca");
  link_options.insecure = config.GetBool("insecure");
  fl::Result<std::unique_ptr<fl::internal::GrpcLink>> link =
      fl::internal::GrpcLink::Create(link_options);
  if (!link.ok()) return Fail("connection settings", link.status());

  fl::internal::ClientRuntimeOptions runtime_options;
  runtime_options.enrollment_token = config.GetString("enrollment_token");
  runtime_options.client_name = config.GetString("name");
  if (runtime_options.client_name.empty()) {
    runtime_options.client_name = "linear-" + std::to_string(data_seed);
  }
  fl::Result<fl::EvalStats> before = trainer.Evaluate();
  if (!before.ok()) return Fail("evaluate", before.status());
  std::printf("initial loss %.6f on %lld local rows\n", before->loss, static_cast<long long>(rows));

  fl::internal::ClientRuntime runtime(link->get(), runtime_options);
  fl::CancelToken cancel;
  fl::Status run = runtime.Run(trainer, cancel);
  if (!run.ok()) return Fail("federation", run);

  // The trainer holds this device's last local model; the federation's result is the
  // server's final global model.
  fl::Result<fl::ServerStatusInfo> status = (*link)->GetStatus();
  if (!status.ok()) return Fail("status", status.status());
  fl::Result<fl::ModelSnapshot> final_model = (*link)->FetchModel(status->model_version);
  if (!final_model.ok()) return Fail("download", final_model.status());
  fl::Status set = trainer.SetParameters(*final_model->params);
  if (!set.ok()) return Fail("model", set);
  fl::Result<fl::EvalStats> after = trainer.Evaluate();
  if (!after.ok()) return Fail("evaluate", after.status());
  std::printf("final global model v%llu: loss %.6f on %lld local rows\n",
              static_cast<unsigned long long>(status->model_version), after->loss,
              static_cast<long long>(rows));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
