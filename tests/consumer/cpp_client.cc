// Uses the installed C++ API of libfl_client: options, Connect's validation, the
// algorithm registry, a Trainer of the app's own, the core types.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "fl/algorithm.h"
#include "fl/client.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// The app's compute; compiled here, called by the library.
class ZeroTrainer : public fl::Trainer {
 public:
  ZeroTrainer() { layout_.Add("w", {2, 3}); }
  const fl::Layout& layout() const override { return layout_; }
  fl::Status GetParameters(fl::ParamSet* out) override {
    *out = fl::ParamSet(layout_);
    return fl::Status::Ok();
  }
  fl::Status SetParameters(const fl::ParamSet&) override { return fl::Status::Ok(); }
  fl::Result<fl::TrainStats> Train(const fl::TrainConfig&, const fl::CancelToken&) override {
    return fl::TrainStats{};
  }
  fl::Result<fl::EvalStats> Evaluate() override { return fl::EvalStats{}; }

 private:
  fl::Layout layout_;
};

}  // namespace

int main() {
  // Connect checks the options before any network traffic.
  fl::ClientOptions options;
  options.name = "consumer";
  fl::Result<std::unique_ptr<fl::Client>> no_server = fl::Client::Connect(options);
  Check(!no_server.ok() && no_server.status().code() == fl::StatusCode::kInvalidArgument,
        "Connect without a server: " + no_server.status().ToString());

  options.server = "localhost:1";
  options.insecure = true;
  options.tls_ca_file = "ca.pem";
  fl::Result<std::unique_ptr<fl::Client>> both = fl::Client::Connect(options);
  Check(!both.ok() && both.status().code() == fl::StatusCode::kInvalidArgument,
        "Connect with insecure and a CA file: " + both.status().ToString());

  // The built-in algorithms, then one of the app's own.
  std::vector<std::string> names = fl::RegisteredAlgorithms();
  std::string listed;
  bool has_fedavg = false;
  for (const std::string& n : names) {
    listed += " " + n;
    has_fedavg = has_fedavg || n == "fedavg";
  }
  Check(has_fedavg, "registered algorithms:" + listed);

  fl::AlgorithmDefinition d;
  d.name = "consumer-avg";
  d.summary = "FedAvg's learner, a strategy that refuses to start";
  d.create_strategy = [](const fl::AlgorithmConfig&) -> fl::Result<std::unique_ptr<fl::Strategy>> {
    return fl::Status::Unimplemented("consumer test");
  };
  d.create_learner = [] { return fl::NewDenseDeltaLearner(); };
  fl::Status registered = fl::RegisterAlgorithm(d);
  Check(registered.ok(), "RegisterAlgorithm: " + registered.ToString());
  fl::Status again = fl::RegisterAlgorithm(d);
  Check(again.code() == fl::StatusCode::kAlreadyExists, "registering twice: " + again.ToString());
  names = fl::RegisteredAlgorithms();
  Check(!names.empty() && names.back() == "consumer-avg", "the app's algorithm is listed");

  // Core types and a Trainer defined here.
  ZeroTrainer trainer;
  fl::ParamSet params;
  Check(trainer.GetParameters(&params).ok() && params.size() == 6 && params.AllFinite(),
        "ParamSet of a 2x3 layout");
  Check(fl::StatusCodeName(fl::StatusCode::kNotFound) == "NOT_FOUND", "StatusCodeName");

  std::printf("%s\n", failures == 0 ? "PASS" : "FAILED");
  return failures == 0 ? 0 : 1;
}
