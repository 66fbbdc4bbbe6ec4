#ifndef FL_SIMULATIONS_RUN_COMPARISON_H_
#define FL_SIMULATIONS_RUN_COMPARISON_H_

// Comparing finished fl-sim runs: reads each run's metrics.csv and draws the
// workload's metric against rounds and against the bytes one client uploaded so
// far (log scale), one line per run. `fl-sim compare` is the command line of
// it.

#include <cstdint>
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
};

struct RunCurve {
  std::string label;
  std::string metric_name;  // the CSV's second column: accuracy, bits_per_byte, ...
  std::vector<RunCurvePoint> points;
};

// Parses the text of a metrics.csv written by fl-sim. InvalidArgument naming
// the line if the header lacks a needed column, a row has the wrong number of
// fields, a number does not parse, or rounds do not increase.
Result<RunCurve> ParseRunCurve(std::string_view csv, std::string label);

// An SVG with two panels sharing the metric axis: metric vs round, and metric
// vs cumulative upload per client (log10 axis). InvalidArgument if `runs` is
// empty or the runs report different metrics.
Result<std::string> CompareRunsSvg(const std::vector<RunCurve>& runs, const std::string& title);

// One line per run: rounds, first/last/best evaluated metric, mean upload per
// client and round, and the total upload per client; tab-free, fixed columns
// for a terminal.
std::string CompareRunsTable(const std::vector<RunCurve>& runs);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_RUN_COMPARISON_H_
