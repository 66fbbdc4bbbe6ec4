#ifndef FL_SIMULATIONS_RUN_COMPARISON_H_
#define FL_SIMULATIONS_RUN_COMPARISON_H_

// Comparing finished fl-sim runs: reads each run's metrics.csv and draws the
// workload's metric against rounds, against the bytes one client uploaded so
// far (log scale) and, when every run has the virtual clock's sim_time_s column,
// against simulated time; one line per run. `fl-sim compare` is the command line
// of it.

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fl/status.h"

namespace fl::internal {

struct RunCurvePoint {
  uint64_t round = 0;
  double metric = 0;                        // NaN in rounds that were not evaluated
  double upload_bytes_per_client = 0;       // this round's bytes_up / clients
  double cumulative_upload_per_client = 0;  // sum of the above up to this round
  // Simulated seconds at the round's close (metrics.csv's sim_time_s); NaN when the
  // run has no such column or the clock was off.
  double sim_time_s = std::numeric_limits<double>::quiet_NaN();
};

struct RunCurve {
  std::string label;
  std::string metric_name;  // the CSV's second column: accuracy, bits_per_byte, ...
  std::vector<RunCurvePoint> points;

  // True if every round has a simulated time.
  bool HasSimTime() const;
};

// Parses the text of a metrics.csv written by fl-sim. InvalidArgument naming
// the line if the header lacks a needed column, a row has the wrong number of
// fields, a number does not parse, rounds do not increase, or a non-empty
// sim_time_s is negative or decreases. sim_time_s is optional (older runs lack it).
Result<RunCurve> ParseRunCurve(std::string_view csv, std::string label);

// An SVG with panels sharing the metric axis: metric vs round, metric vs
// cumulative upload per client (log10 axis) and, if every run HasSimTime(), a
// third: metric vs simulated time. InvalidArgument if `runs` is empty or the runs
// report different metrics.
Result<std::string> CompareRunsSvg(const std::vector<RunCurve>& runs, const std::string& title);

// One line per run: rounds, first/last/best evaluated metric, mean upload per
// client and round, the total upload per client and the simulated time at the
// last round ("-" without one); tab-free, fixed columns for a terminal.
std::string CompareRunsTable(const std::vector<RunCurve>& runs);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_RUN_COMPARISON_H_
