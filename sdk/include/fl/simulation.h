#ifndef FL_SDK_INCLUDE_FL_SIMULATION_H_
#define FL_SDK_INCLUDE_FL_SIMULATION_H_

// Running an fl-sim configuration inside a process: many virtual clients against the same
// Coordinator and Strategy that fl-server runs, on real data, with each round's metrics
// handed back as it closes.
//
//   fl::SimulationOptions options;
//   options.preset = "fmnist-cnn";
//   options.config_overrides = {"run.rounds=5", "algorithm.name=signsgd"};
//   options.on_round = [](const fl::SimulationRound& r) { ... };
//   fl::Result<fl::SimulationReport> report = fl::RunSimulation(options);
//
// Outputs (metrics.csv/jsonl, a plot, the run record) are written as by `fl-sim run`.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "fl/export.h"
#include "fl/status.h"

namespace fl {

// One round of a simulation.
struct SimulationRound {
  uint64_t round = 0;
  bool evaluated = false;       // false on rounds skipped by sim.eval_every
  std::string metric_name;      // "accuracy" or "bits_per_byte" (the workload's)
  double metric = 0;            // of the global model after the round
  double accuracy = 0;          // in [0, 1]; 0 where the workload has none
  double test_loss = 0;
  double train_loss = 0;        // weighted mean of the clients' reported loss
  uint64_t clients = 0;         // updates folded
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  double wall_seconds = 0;
  std::map<std::string, double> strategy_stats;  // the algorithm's own counters
};

struct SimulationReport {
  std::vector<SimulationRound> rounds;
  std::string metric_name;
  double final_metric = 0;      // of the last evaluated round
  double wall_seconds = 0;
  std::string out_dir;          // where the outputs were written
};

struct SimulationOptions {
  // A preset (fl-sim --list-presets), then a YAML/JSON config file, then "key=value"
  // overrides: the same layers and keys as `fl-sim run`.
  std::string preset = "fmnist-cnn";
  std::string config_file;
  std::vector<std::string> config_overrides;
  // Called after each round is evaluated, on a simulation thread. May be empty.
  std::function<void(const SimulationRound&)> on_round;
};

// Runs the simulation to its end. InvalidArgument naming the key for a bad config;
// NotFound/DataLoss for missing or corrupt data; the first error of any virtual client.
FL_EXPORT Result<SimulationReport> RunSimulation(const SimulationOptions& options);

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_SIMULATION_H_
