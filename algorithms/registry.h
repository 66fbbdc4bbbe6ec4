#ifndef FL_ALGORITHMS_REGISTRY_H_
#define FL_ALGORITHMS_REGISTRY_H_

// Algorithms by name. Each algorithm folder provides one Register...() function that
// adds its entries; RegisterBuiltinAlgorithms() calls them explicitly (one line per
// algorithm), so nothing depends on static initializers that a linker may drop from
// a static library.
//
// Adding an algorithm "foo": write algorithms/foo/ (Strategy, Learner, and
// `void RegisterFoo(AlgorithmRegistry*)` whose entries carry their config section
// defaults), add its sources to algorithms/CMakeLists.txt, and add `RegisterFoo(r);`
// to RegisterBuiltinAlgorithms in registry.cc.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/learner.h"
#include "fl/status.h"
#include "fl/strategy.h"

namespace fl::internal {

struct AlgorithmEntry {
  std::string name;     // "fedavg"; also Task::algorithm on the wire
  std::string summary;  // one line for --help and docs
  // Builds the server half from a validated config (AlgorithmConfigDefaults() schema).
  // InvalidArgument naming the key if a value is out of range.
  std::function<Result<std::unique_ptr<Strategy>>(const Config&)> create_strategy;
  // Builds the client half.
  std::function<std::unique_ptr<Learner>()> create_learner;
  // Extra top-level config sections this algorithm reads, e.g. {"ferret": {...}};
  // merged into AlgorithmConfigDefaults(). An empty object adds nothing.
  nlohmann::json config_defaults = nlohmann::json::object();
  // Downlink by replay (optional): applies one record of the strategy's
  // TakeReplayRecord() to the model version before it, giving the next version bit for
  // bit. Leaves *model unchanged on error. Empty for algorithms without replay.
  std::function<Status(std::string_view record, ParamSet* model)> apply_replay;
};

// Thread-compatible; the built-in registry is immutable once built.
class AlgorithmRegistry {
 public:
  // AlreadyExists for a duplicate name; InvalidArgument for an empty name or factory.
  Status Register(AlgorithmEntry entry);
  // nullptr if unknown.
  const AlgorithmEntry* Find(std::string_view name) const;
  std::vector<std::string> Names() const;
  const std::vector<AlgorithmEntry>& entries() const { return entries_; }

 private:
  std::vector<AlgorithmEntry> entries_;
};

// Adds every algorithm shipped with the SDK.
void RegisterBuiltinAlgorithms(AlgorithmRegistry* registry);
// The registry of built-in algorithms, built on first use (thread-safe).
const AlgorithmRegistry& BuiltinAlgorithms();

// The "algorithm" and "train" config sections with their defaults (plus any section
// an algorithm adds). Binaries merge this into their own defaults.
nlohmann::json AlgorithmConfigDefaults();

// The server half named by algorithm.name. InvalidArgument naming the key for an
// unknown algorithm or an out-of-range value.
Result<std::unique_ptr<Strategy>> CreateStrategy(const Config& config);

// The client half for Task::algorithm. NotFound for unknown names.
Result<std::unique_ptr<Learner>> CreateLearner(const std::string& algorithm_name);

// Applies a replay record of `algorithm_name`'s strategy to *model (see
// AlgorithmEntry::apply_replay). NotFound for unknown names; Unimplemented if the
// algorithm has no replay; otherwise the replayer's status (*model unchanged on error).
Status ApplyReplayRecord(const std::string& algorithm_name, std::string_view record,
                         ParamSet* model);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_REGISTRY_H_
