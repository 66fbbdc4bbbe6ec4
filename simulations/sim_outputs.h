#ifndef FL_SIMULATIONS_SIM_OUTPUTS_H_
#define FL_SIMULATIONS_SIM_OUTPUTS_H_

// The files an fl-sim run writes to its output directory (RunSimulation, simulator.h):
// metrics.csv, metrics.jsonl, accuracy_bytes.svg, config.yaml and the run record run.db.

#include <string>
#include <vector>

#include "fl/env.h"
#include "fl/status.h"
#include "simulations/simulator.h"
#include "simulations/workload.h"

namespace fl::internal {

inline constexpr char kMetricsCsv[] = "metrics.csv";
inline constexpr char kMetricsJsonl[] = "metrics.jsonl";
inline constexpr char kPlotSvg[] = "accuracy_bytes.svg";
inline constexpr char kConfigYaml[] = "config.yaml";
inline constexpr char kRunDb[] = "run.db";

// `v` with `precision` significant digits (printf %g); "" when not finite.
std::string FormatDouble(double v, int precision = 6);

// metrics.csv: fixed columns, then one column per strategy statistic any round reported
// (sorted by name; empty in rounds without it).
std::string MetricsCsv(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric);

// metrics.jsonl: one JSON object per round.
std::string MetricsJsonl(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric);

// accuracy_bytes.svg: a two-axis line chart of the workload's metric (left axis:
// accuracy in %, or from 0 to above the largest value) and bytes moved per round (right
// axis, MB up + down) over rounds. Plain SVG, no dependency.
std::string PlotSvg(const std::vector<SimRoundRecord>& rounds, const std::string& title,
                    const WorkloadMetric& metric);

// Deletes the files of an earlier run in `dir` that this run replaces (the run record,
// the metrics files, config.yaml, models/ and spool/). Nothing else is touched; errors
// are ignored.
void RemovePreviousRun(const std::string& dir);

// Writes metrics.csv, metrics.jsonl and accuracy_bytes.svg to `dir`, each atomically;
// called after every round so a long run can be inspected (or plotted) while it is
// still going. Errors of Env::WriteFileAtomic.
Status WriteRoundFiles(Env* env, const std::string& dir, const std::vector<SimRoundRecord>& rounds,
                       const std::string& title, const WorkloadMetric& metric);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_SIM_OUTPUTS_H_
