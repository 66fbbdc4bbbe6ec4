#ifndef FL_SDK_INCLUDE_FL_ALGORITHM_H_
#define FL_SDK_INCLUDE_FL_ALGORITHM_H_

// The open algorithm registry. An algorithm is a named pair of halves, a Strategy (server)
// and a Learner (client), plus the config keys it reads. An application registers its own
// algorithms with RegisterAlgorithm() before it starts a client, a server or a simulation;
// the SDK's built-in algorithms (fedavg, fedprox, fedadam, ferret, fedins) register the same
// way.
//
//   fl::AlgorithmDefinition d;
//   d.name = "signsgd";
//   d.summary = "sign-SGD: majority vote of the clients' update signs";
//   d.config_keys = {{"signsgd.server_lr", 0.01, "step per coordinate"}};
//   d.create_strategy = [](const fl::AlgorithmConfig& c) { ... };
//   d.create_learner = [] { return fl::NewDenseDeltaLearner(); };
//   fl::Status s = fl::RegisterAlgorithm(std::move(d));
//
// The server selects an algorithm by the config key `algorithm.name`; the name travels
// with every task, and a client builds the Learner registered under it.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fl/export.h"
#include "fl/learner.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl {

// A config value: its type is fixed by the key's default.
using ConfigValue = std::variant<bool, int64_t, double, std::string>;

// One config key an algorithm reads, e.g. {"signsgd.server_lr", 0.01, "..."}. The key is
// dotted: "section.name", each part [a-z0-9_]{1,64}. The section may not be one of the
// SDK's own (run, coordinator, model, data, sim, server, client, lm, pretrain,
// byzantine).
// "algorithm" and "train" are shared by every algorithm: their keys need no declaration,
// and an algorithm cannot add to them (it may repeat an existing one with its type and
// default). Any other key belongs to the one algorithm that declared it. Files and
// `--set key=value` flags are checked against the declared type (the default's), so a
// typo or a mistyped value is refused with the key named.
struct ConfigKey {
  std::string key;
  ConfigValue default_value;
  std::string help;
};

// A read-only view of the effective configuration (defaults, then config file, then
// overrides), handed to an algorithm's factories and validator. Valid only during the
// call it is passed to. The SDK implements it; an application may implement it too, e.g.
// to call its own factories in a unit test.
class FL_EXPORT AlgorithmConfig {
 public:
  virtual ~AlgorithmConfig() = default;

  // True if `key` names a value of the configuration.
  virtual bool Has(std::string_view key) const = 0;
  // Typed getters. REQUIRES: Has(key) with a value of that type (GetDouble also reads
  // integers); an undeclared key is a programming error and aborts with its name.
  virtual int64_t GetInt(std::string_view key) const = 0;
  virtual double GetDouble(std::string_view key) const = 0;
  virtual std::string GetString(std::string_view key) const = 0;
  virtual bool GetBool(std::string_view key) const = 0;

  // The local-training options every learner reads ("train.*": epochs or steps, batch
  // size, lr, momentum, weight decay, prox_mu, upload encoding), validated.
  // InvalidArgument naming the key that is out of range.
  Result<TrainConfig> LocalTraining() const;
};

struct AlgorithmDefinition {
  // The algorithm's name: [a-z0-9_-]+, at most 64 characters. Also Task::algorithm.
  std::string name;
  // One line for --help and docs.
  std::string summary;
  // Keys this algorithm adds to the configuration, with defaults (see ConfigKey).
  std::vector<ConfigKey> config_keys;
  // Optional: checks the effective config before anything starts (the server, fl-sim
  // and `--print-config` call it). InvalidArgument naming the key at fault.
  std::function<Status(const AlgorithmConfig&)> validate;
  // Builds the server half. Required. Called once per server or simulation, after
  // validate succeeded. The strategy's name() must be `name` (it travels with every
  // task and selects the clients' learner); CreateStrategy refuses another.
  std::function<Result<std::unique_ptr<Strategy>>(const AlgorithmConfig&)> create_strategy;
  // Builds the client half. Required. Called once per client runtime, on the client.
  std::function<std::unique_ptr<Learner>()> create_learner;
  // Optional downlink by replay: applies one record of the strategy's TakeReplayRecord()
  // to the model version before it, giving the next version bit for bit. Leaves *model
  // unchanged on error. Without it, clients download full models.
  std::function<Status(std::string_view record, ParamSet* model)> apply_replay;
};

// Adds an algorithm to the process-wide registry. Thread-safe. Register before starting
// the client, server or simulation that uses it (and before building the configuration
// that sets its keys); registered algorithms stay for the life of the process.
// InvalidArgument for a bad name, a missing factory, or a config key that is malformed,
// declared twice, in an SDK section or new in a shared one; AlreadyExists if the name,
// or one of its own keys, is already registered. On error nothing is registered.
FL_EXPORT Status RegisterAlgorithm(AlgorithmDefinition definition);

// Names of the registered algorithms (built-in ones included), in registration order.
FL_EXPORT std::vector<std::string> RegisteredAlgorithms();

// The definition registered under `name`; nullptr if none. Thread-safe.
FL_EXPORT std::shared_ptr<const AlgorithmDefinition> FindAlgorithm(std::string_view name);

// ---- Building blocks for algorithms that upload dense model deltas ----

// The client half of FedAvg: sets the global model, trains with the task's TrainConfig
// and uploads (trained - global) in the task's upload encoding (f32, f16 or bf16).
FL_EXPORT std::unique_ptr<Learner> NewDenseDeltaLearner();

// Decodes a dense upload against `layout` and validates it (encoding, size, layout hash,
// finite values, finite train loss, positive finite weight): the checks of the built-in
// dense aggregator. InvalidArgument naming what is wrong. The round is not checked (the
// aggregator knows which round it folds).
FL_EXPORT Result<ParamSet> DecodeDenseDelta(const Payload& payload, const Layout& layout);

// ---- Building blocks for algorithms that upload keyed (partial) updates ----

// The client half of keyed updates (FedIns' pool entries, prompts, heads): sets the
// global model, trains with the task's TrainConfig and uploads (trained - global) of only
// the tensors the Trainer lists in TrainStats::tensor_weights with a fraction > 0, each
// with its fraction, as an Encoding::kNamedSubset payload whose values use the task's
// upload encoding (f32, f16 or bf16). A Trainer that lists no tensor weights uploads
// every tensor with fraction 1. The weight is the local dataset size. The built-in
// "fedins" algorithm aggregates such uploads per tensor on the server. Train() fails
// with FailedPrecondition when the Trainer reports a tensor weight the server would
// refuse (a name outside the layout, a fraction outside [0, 1], none above 0).
FL_EXPORT std::unique_ptr<Learner> NewNamedSubsetLearner();

// ---- Robust (Byzantine-tolerant) aggregation of dense deltas ----
//
// How a round's dense deltas become the one delta the server optimizer steps with.
// kMean is the streaming weighted mean (memory independent of the number of clients).
// The robust rules give every update one vote (the claimed weight is ignored, since a
// Byzantine client can claim any weight) and must hold the round's decoded updates
// until Report(): n updates of d parameters cost n * d * 4 bytes, plus at Report() d
// floats for the result and, for multi-Krum, n * n doubles of distances. max_updates
// bounds n: an update beyond it is refused with ResourceExhausted (the coordinator
// records it in the ledger as rejected, and the round goes on without it).
enum class AggregationRule : int {
  kMean = 0,         // sum_i w_i d_i / sum_i w_i (FedAvg)
  kMedian = 1,       // per coordinate: the median (mean of the two middle values if n is even)
  kTrimmedMean = 2,  // per coordinate: drop floor(trim_beta * n) largest and smallest, average
  kMultiKrum = 3,    // Krum scores with krum_f Byzantine assumed; average the n - f best
};

// The config keys (shared by every algorithm, in the "algorithm" section):
//   algorithm.aggregator          mean | median | trimmed_mean | multi_krum   (mean)
//   algorithm.trim_beta           trimmed_mean: fraction cut at each end, [0, 0.5)  (0.1)
//   algorithm.krum_f              multi_krum: Byzantine updates assumed, >= 0  (1)
//   algorithm.robust_max_updates  robust rules: updates held per round, >= 1  (100)
struct AggregationOptions {
  AggregationRule rule = AggregationRule::kMean;
  double trim_beta = 0.1;
  int64_t krum_f = 1;
  int64_t max_updates = 100;
};

// Reads and validates the keys above. InvalidArgument naming the key at fault.
FL_EXPORT Result<AggregationOptions> AggregationOptionsFromConfig(const AlgorithmConfig& config);

// A RoundAggregator of dense deltas of models with `layout` for `round`, by
// options.rule. Every rule applies DecodeDenseDelta's checks before it keeps anything;
// the report's mean_delta is the rule's aggregate, total_weight the sum of the claimed
// weights, count the updates held, and (robust rules) mean_train_loss the unweighted
// mean. Multi-Krum scores each update by the squared distances to its n - f - 2 nearest
// others (at least 1) and averages the max(1, n - f) lowest-scoring updates; its
// guarantee needs n >= 2f + 3. MergeWith accepts an aggregator of the same rule and
// round. InvalidArgument if the options are out of range.
FL_EXPORT Result<std::unique_ptr<RoundAggregator>> NewDenseRoundAggregator(
    const AggregationOptions& options, std::shared_ptr<const Layout> layout, uint64_t round);

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_ALGORITHM_H_
