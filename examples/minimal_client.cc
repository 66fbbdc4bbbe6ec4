// fl-example-linear-client: the smallest complete edge app. It uses only the SDK's public
// headers (fl/client.h), links only libfl_client (no LibTorch), brings its own model as an
// fl::Trainer (examples/linear_trainer.h: linear regression in plain C++) and joins an
// fl-server federation over TLS.
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

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fl/client.h"
#include "fl/param_set.h"
#include "linear_trainer.h"

namespace {

constexpr char kProgram[] = "fl-example-linear-client";
constexpr size_t kDim = 8;  // features per row; the exported model has the same layout

constexpr char kUsage[] =
    "usage: fl-example-linear-client [--server HOST:PORT] [--tls-ca PEM] [--insecure]\n"
    "           [--enrollment-token T] [--name NAME] [--data-seed N] [--rows N]\n"
    "       fl-example-linear-client --export-model FILE\n";

int Fail(const char* what, const fl::Status& status) {
  std::fprintf(stderr, "%s: %s: %s\n", kProgram, what, status.ToString().c_str());
  return status.code() == fl::StatusCode::kInvalidArgument ? 2 : 1;
}

// --flag value pairs (and the value-less --insecure) into a map; false on a bad line.
bool ParseFlags(int argc, char** argv, std::map<std::string, std::string>* flags) {
  const std::vector<std::string> known = {"--server", "--tls-ca", "--enrollment-token", "--name",
                                          "--data-seed", "--rows", "--export-model"};
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--insecure") {
      (*flags)[flag] = "1";
    } else if (std::find(known.begin(), known.end(), flag) != known.end() && i + 1 < argc) {
      (*flags)[flag] = argv[++i];
    } else {
      return false;
    }
  }
  return true;
}

std::string Flag(const std::map<std::string, std::string>& flags, const std::string& name,
                 const std::string& fallback) {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

int Run(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::map<std::string, std::string> flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const long rows = std::strtol(Flag(flags, "--rows", "256").c_str(), nullptr, 10);
  const long data_seed = std::strtol(Flag(flags, "--data-seed", "1").c_str(), nullptr, 10);
  if (rows < 1 || data_seed < 0) {
    return Fail("flags", fl::Status::InvalidArgument("--rows must be >= 1, --data-seed >= 0"));
  }
  std::vector<float> x, y;
  fl::examples::MakeLinearData(kDim, static_cast<size_t>(rows), static_cast<uint64_t>(data_seed),
                               &x, &y);
  fl::examples::LinearTrainer trainer(kDim, std::move(x), std::move(y));

  // The server starts from the model the app defines: all zeros in the app's layout.
  const std::string export_path = Flag(flags, "--export-model", "");
  if (!export_path.empty()) {
    fl::ParamSet initial;
    fl::Status s = trainer.GetParameters(&initial);
    if (s.ok()) s = fl::WriteModelFile(export_path, initial);
    if (!s.ok()) return Fail("export", s);
    std::printf("wrote the initial model (%zu parameters) to %s\n", initial.size(),
                export_path.c_str());
    return 0;
  }

  fl::ClientOptions options;
  options.server = Flag(flags, "--server", "localhost:50051");
  options.tls_ca_file = Flag(flags, "--tls-ca", "");
  options.insecure = flags.count("--insecure") > 0;
  options.enrollment_token = Flag(flags, "--enrollment-token", "");
  options.name = Flag(flags, "--name", "linear-" + std::to_string(data_seed));
  fl::Result<std::unique_ptr<fl::Client>> client = fl::Client::Connect(options);
  if (!client.ok()) return Fail("connection settings", client.status());

  fl::Result<fl::EvalStats> before = trainer.Evaluate();
  if (!before.ok()) return Fail("evaluate", before.status());
  std::printf("initial loss %.6f on %ld local rows\n", before->loss, rows);

  fl::ClientRunOptions run;
  run.on_task = [](const fl::ClientProgress& p) {
    std::printf("round %llu: trained on %llu rows, loss %.6f\n",
                static_cast<unsigned long long>(p.round),
                static_cast<unsigned long long>(p.train.num_examples), p.train.mean_loss);
  };
  fl::Status done = (*client)->Run(trainer, run);
  if (!done.ok()) return Fail("federation", done);

  // The trainer holds this device's last local model; the federation's result is the
  // server's final global model.
  fl::Result<fl::ParamSet> final_model = (*client)->FetchGlobalModel();
  if (!final_model.ok()) return Fail("download", final_model.status());
  fl::Status set = trainer.SetParameters(*final_model);
  if (!set.ok()) return Fail("model", set);
  fl::Result<fl::EvalStats> after = trainer.Evaluate();
  if (!after.ok()) return Fail("evaluate", after.status());
  fl::Result<fl::ServerStatusInfo> status = (*client)->GetStatus();
  if (!status.ok()) return Fail("status", status.status());
  std::printf("final global model v%llu: loss %.6f on %ld local rows\n",
              static_cast<unsigned long long>(status->model_version), after->loss, rows);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
