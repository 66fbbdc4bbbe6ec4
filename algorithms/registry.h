#ifndef FL_ALGORITHMS_REGISTRY_H_
#define FL_ALGORITHMS_REGISTRY_H_

// Algorithms by name: the internal side of the open registry of fl/algorithm.h.
//
// One process-wide AlgorithmRegistry holds every algorithm. The SDK's own (fedavg,
// fedprox, fedadam, ferret, fedins) are registered into it on first access, through the same
// validated Register() that fl::RegisterAlgorithm uses, by explicit calls (one line per
// algorithm folder in RegisterBuiltinAlgorithms), so nothing depends on static
// initializers that a linker may drop from a static library.
//
// Adding a built-in algorithm "foo": write algorithms/foo/ (Strategy, Learner, and
// `Status RegisterFoo(AlgorithmRegistry*)` registering an fl::AlgorithmDefinition with its
// config keys), add its sources to algorithms/CMakeLists.txt, and add it to
// RegisterBuiltinAlgorithms in registry.cc. Applications use fl::RegisterAlgorithm instead.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/algorithm.h"
#include "fl/learner.h"
#include "fl/status.h"
#include "fl/strategy.h"

namespace fl::internal {

// An append-only table of algorithm definitions. Thread-safe: every method may be called
// concurrently. Definitions are never removed or changed once registered.
class AlgorithmRegistry {
 public:
  // Adds `definition` after ValidateAlgorithmDefinition. AlreadyExists if its name, or one
  // of its own config keys, is already registered; InvalidArgument for a malformed one.
  // On error nothing is added.
  Status Register(AlgorithmDefinition definition);
  // The definition named `name`; nullptr if unknown.
  std::shared_ptr<const AlgorithmDefinition> Find(std::string_view name) const;
  // Names in registration order.
  std::vector<std::string> Names() const;
  // Every definition, in registration order (a snapshot; later registrations do not
  // appear in it).
  std::vector<std::shared_ptr<const AlgorithmDefinition>> Definitions() const;

 private:
  // The definition declaring config key `key`; nullptr if none. REQUIRES: mu_ held.
  const AlgorithmDefinition* KeyOwnerLocked(std::string_view key) const;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const AlgorithmDefinition>> definitions_;  // guarded by mu_
};

// Registers every algorithm shipped with the SDK into `registry`. An error is a bug in
// a built-in definition (or a name already taken in `registry`).
Status RegisterBuiltinAlgorithms(AlgorithmRegistry* registry);

// The process-wide registry, with the built-in algorithms registered on the first call
// (thread-safe). The SDK's own code reaches it only through the public, exported
// fl::RegisterAlgorithm, fl::RegisteredAlgorithms and fl::FindAlgorithm: when several
// shared libraries of the SDK are loaded into one process, the dynamic linker binds those
// calls in all of them to one library's definitions, so every library sees one registry
// (an algorithm registered through one is known to the others) while the registry itself
// stays internal.
AlgorithmRegistry& GlobalAlgorithmRegistry();

// The AlgorithmConfig the SDK hands to algorithms: a view of a Config, which must outlive
// it.
class ConfigView final : public AlgorithmConfig {
 public:
  explicit ConfigView(const Config& config) : config_(&config) {}
  bool Has(std::string_view key) const override;
  int64_t GetInt(std::string_view key) const override;
  double GetDouble(std::string_view key) const override;
  std::string GetString(std::string_view key) const override;
  bool GetBool(std::string_view key) const override;

 private:
  const Config* config_;
};

// The "algorithm" and "train" keys every algorithm shares, with their defaults.
const std::vector<ConfigKey>& SharedAlgorithmKeys();
// The shared key named `key`; nullptr if it is not one.
const ConfigKey* FindSharedAlgorithmKey(std::string_view key);

// Checks a definition on its own: name [a-z0-9_-]{1,64}, both factories, every config
// key "section.name" ([a-z0-9_]{1,64} each) outside the SDK's own sections, declared
// once, and, in the shared "algorithm"/"train" sections, only an existing key with its
// type and default. InvalidArgument naming the definition and the key at fault.
Status ValidateAlgorithmDefinition(const AlgorithmDefinition& definition);

// The "algorithm" and "train" sections with their defaults, plus every key the
// registered algorithms declare (dotted keys become nested sections), built at call time
// from the process-wide registry. Binaries merge this into their own defaults, so an
// algorithm registered before the config is built is configurable by file and --set.
nlohmann::json AlgorithmConfigDefaults();

// Runs the `validate` hook of the algorithm named by algorithm.name (OK if it has none).
// InvalidArgument naming algorithm.name for an unknown algorithm; otherwise the hook's
// status.
Status ValidateAlgorithmConfig(const Config& config);

// The server half named by algorithm.name: validates (ValidateAlgorithmConfig), then
// calls create_strategy. InvalidArgument naming the key for an unknown algorithm or an
// out-of-range value; Internal if the factory returns no strategy or one whose name()
// is not the algorithm's (clients would build the wrong learner).
Result<std::unique_ptr<Strategy>> CreateStrategy(const Config& config);

// The client half for Task::algorithm. NotFound for unknown names.
Result<std::unique_ptr<Learner>> CreateLearner(const std::string& algorithm_name);

// Applies a replay record of `algorithm_name`'s strategy to *model (see
// AlgorithmDefinition::apply_replay). NotFound for unknown names; Unimplemented if the
// algorithm has no replay; otherwise the replayer's status (*model unchanged on error).
Status ApplyReplayRecord(const std::string& algorithm_name, std::string_view record,
                         ParamSet* model);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_REGISTRY_H_
