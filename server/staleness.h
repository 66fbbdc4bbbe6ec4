#ifndef FL_SERVER_STALENESS_H_
#define FL_SERVER_STALENESS_H_

// Asynchronous mode (specs/async-co2.md): how much an update computed against an older
// model version counts when it is folded into the current buffer.
//
//   s(tau)   the staleness weight, tau = current version - base version:
//            constant 1 | polynomial (1 + tau)^-a (FedBuff: a = 1/2) |
//            hinge 1 for tau <= b, else 1 / (a (tau - b) + 1) (FedAsync)
//   Lambda_l the CO2 gap penalty per tensor l: max(1, gap_l / (rho * mean_l)), where gap_l
//            sums the L2 norms of the global model's steps on tensor l from the base
//            version to the current one, and mean_l is the mean of the recent steps' norms
//            on l. rho = 0 turns it off (Lambda = 1).
//
// An update is folded with weight (policy weight) * s(tau) and tensor l of its delta
// scaled by 1 / Lambda_l. Everything here is a pure function of versions and recorded
// step norms: no clock, so fl-sim and fl-server fold alike and a restart refolds alike.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fl/status.h"

namespace fl::internal {

// Persisted in configs by name; the values are not persisted.
enum class StalenessWeight : int { kConstant = 1, kPolynomial = 2, kHinge = 3 };

// "constant" | "polynomial" | "hinge"; InvalidArgument otherwise.
Result<StalenessWeight> ParseStalenessWeight(std::string_view name);
std::string_view StalenessWeightName(StalenessWeight weight);

struct AsyncOptions {
  // Clients holding a task at once; further PullTask calls wait.
  uint32_t concurrency = 10;
  // A task unanswered this long stops holding its slot (it stays answerable while its
  // base version is servable), so clients that went away cannot hold every slot. 0:
  // never; then only answers and staleness free slots, and nothing depends on the clock
  // (fl-sim, whose clients take as long as the host needs to train them).
  std::chrono::milliseconds task_timeout{std::chrono::minutes(10)};
  // S_max: an update whose base is more than this many versions old is refused
  // (FailedPrecondition); the last max_staleness + 1 versions stay servable.
  uint32_t max_staleness = 16;
  // K: accepted updates per buffer; each full buffer is one server step (a new version).
  uint32_t buffer_size = 10;
  StalenessWeight staleness_weight = StalenessWeight::kPolynomial;
  double staleness_exponent = 0.5;  // a of (1 + tau)^-a; >= 0
  double hinge_a = 10;              // slope after the hinge; >= 0
  uint32_t hinge_b = 4;             // staleness up to which the weight is 1
  double gap_penalty = 0;           // rho of the gap penalty; 0: off
};

// InvalidArgument naming the config key (async.*) of the first value out of range.
Status ValidateAsyncOptions(const AsyncOptions& options);

// s(tau) in (0, 1].
double StalenessFactor(const AsyncOptions& options, uint64_t staleness);

// The per-tensor L2 norms of the global model's recent steps, by the version each
// step produced, and the gap penalty computed from them. Keeps the newest `capacity`.
class StepNormHistory {
 public:
  explicit StepNormHistory(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}

  // Records the step that produced `version` (norms in layout order). Versions must be
  // added in increasing order; the oldest beyond capacity are forgotten.
  void Add(uint64_t version, std::vector<double> norms);
  void Clear() { steps_.clear(); }
  size_t size() const { return steps_.size(); }

  // Lambda_l for an update based on `base` folded while `current` is the global version,
  // one per tensor of a `num_tensors` layout. All 1 when rho is 0, when base == current,
  // or for a tensor whose recent steps all had norm 0. Steps no longer recorded count 0.
  std::vector<double> GapPenalty(double rho, uint64_t base, uint64_t current,
                                 size_t num_tensors) const;

 private:
  size_t capacity_;
  std::map<uint64_t, std::vector<double>> steps_;
};

// {"0":3,"2":1}: the JSON object recorded per flush.
std::string StalenessHistogramJson(const std::map<uint64_t, uint64_t>& counts);

}  // namespace fl::internal

#endif  // FL_SERVER_STALENESS_H_
