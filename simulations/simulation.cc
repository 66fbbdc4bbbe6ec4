// fl::RunSimulation: an fl-sim configuration run inside the caller's process
// (fl/simulation.h).

#include "fl/simulation.h"

#include "core/config.h"
#include "simulations/simulator.h"

namespace fl {
namespace {

SimulationRound ToSimulationRound(const internal::SimRoundRecord& r, const std::string& metric) {
  SimulationRound out;
  out.round = r.metrics.round;
  out.evaluated = r.evaluated;
  out.metric_name = metric;
  out.metric = r.metric;
  out.accuracy = r.metrics.accuracy;
  out.test_loss = r.metrics.test_loss;
  out.train_loss = r.metrics.train_loss;
  out.clients = r.metrics.clients;
  out.bytes_up = r.metrics.bytes_up;
  out.bytes_down = r.metrics.bytes_down;
  out.wall_seconds = r.metrics.wall_seconds;
  out.strategy_stats = r.strategy_stats;
  return out;
}

// The same layers as `fl-sim run`: defaults, the preset, the file, the overrides.
Result<internal::Config> BuildConfig(const SimulationOptions& options) {
  nlohmann::json defaults = internal::SimulatorConfigDefaults();
  FL_ASSIGN_OR_RETURN(nlohmann::json preset, internal::PresetValues(options.preset));
  defaults.merge_patch(preset);
  FL_ASSIGN_OR_RETURN(internal::Config config,
                      internal::Config::Build(defaults, options.config_file,
                                              options.config_overrides));
  if (config.GetString("sim.preset") != options.preset) {
    return Status::InvalidArgument("sim.preset is chosen by SimulationOptions.preset, not by the "
                                   "config file or overrides");
  }
  return config;
}

}  // namespace

Result<SimulationReport> RunSimulation(const SimulationOptions& options) {
  FL_ASSIGN_OR_RETURN(internal::Config config, BuildConfig(options));
  auto progress = [&options](const internal::SimProgress& p) {
    if (!options.on_round || !p.round_finished || p.record == nullptr) return;
    options.on_round(ToSimulationRound(*p.record, p.metric != nullptr ? p.metric->name : ""));
  };
  FL_ASSIGN_OR_RETURN(internal::SimulationResult result, internal::RunSimulation(config, progress));
  SimulationReport report;
  report.metric_name = result.metric.name;
  for (const internal::SimRoundRecord& r : result.rounds) {
    report.rounds.push_back(ToSimulationRound(r, result.metric.name));
  }
  report.final_metric = result.final_metric;
  report.wall_seconds = result.wall_seconds;
  report.out_dir = result.out_dir;
  return report;
}

}  // namespace fl
