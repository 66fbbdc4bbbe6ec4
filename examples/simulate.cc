// fl-example-simulate: runs a simulation inside an app's own process with the public
// fl::RunSimulation (fl/simulation.h), after registering an algorithm of the app's own
// (sign-SGD, examples/sign_sgd.h) next to the built-in ones.
//
//   fl-example-simulate                                   # sign-SGD on fmnist-cnn, 5 rounds
//   fl-example-simulate algorithm.name=fedavg run.rounds=3 data.train_examples=6000
//
// Arguments are config overrides (key=value, any `fl-sim run` key). Exit status: 0 on
// success, 2 for a bad override, 1 for any other failure.

#include <cstdio>
#include <string>

#include "fl/algorithm.h"
#include "fl/simulation.h"
#include "sign_sgd.h"

int main(int argc, char** argv) {
  fl::Status registered = fl::examples::RegisterSignSgd();
  if (!registered.ok()) {
    std::fprintf(stderr, "register: %s\n", registered.ToString().c_str());
    return 1;
  }
  fl::SimulationOptions options;
  options.preset = "fmnist-cnn";
  options.config_overrides = {"algorithm.name=signsgd", "run.rounds=5", "sim.progress=none"};
  for (int i = 1; i < argc; ++i) options.config_overrides.push_back(argv[i]);
  options.on_round = [](const fl::SimulationRound& r) {
    std::printf("round %llu: %s %.4f, %llu clients, %.1f MB up\n",
                static_cast<unsigned long long>(r.round), r.metric_name.c_str(), r.metric,
                static_cast<unsigned long long>(r.clients), r.bytes_up / 1e6);
    std::fflush(stdout);
  };
  fl::Result<fl::SimulationReport> report = fl::RunSimulation(options);
  if (!report.ok()) {
    std::fprintf(stderr, "simulation: %s\n", report.status().ToString().c_str());
    return report.status().code() == fl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("final %s %.4f after %zu rounds; outputs in %s\n", report->metric_name.c_str(),
              report->final_metric, report->rounds.size(), report->out_dir.c_str());
  return 0;
}
