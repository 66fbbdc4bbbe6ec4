#ifndef FL_SDK_INCLUDE_FL_TASK_H_
#define FL_SDK_INCLUDE_FL_TASK_H_

// What the server asks a client to do: a task and its training configuration.

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "fl/export.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl {

// One algorithm-specific training setting (TrainConfig::extra): a bool, a 64-bit integer,
// a double or a string. Integers travel exactly, so a 64-bit seed is one value:
//
//   config.extra["ferret.pool_seed"] = spec.pool_seed;  // uint64_t, kept bit for bit
//   config.extra["clip_norm"] = 1.0;
//   FL_ASSIGN_OR_RETURN(uint64_t seed, config.extra.at("ferret.pool_seed").AsUint64());
class FL_EXPORT TrainValue {
 public:
  // The order of std::variant's alternatives.
  enum class Type { kBool = 0, kInt = 1, kDouble = 2, kString = 3 };

  TrainValue() = default;  // the integer 0
  TrainValue(bool v) : value_(v) {}  // NOLINT: implicit by design, as the others
  // Any integer type, stored as int64_t; an unsigned value above INT64_MAX keeps its
  // bit pattern (AsUint64 gives it back).
  template <typename T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  TrainValue(T v) : value_(static_cast<int64_t>(v)) {}  // NOLINT
  TrainValue(double v) : value_(v) {}                    // NOLINT
  TrainValue(std::string v) : value_(std::move(v)) {}    // NOLINT
  TrainValue(const char* v) : value_(std::string(v)) {}  // NOLINT: not the bool overload

  Type type() const { return static_cast<Type>(value_.index()); }
  bool is_bool() const { return type() == Type::kBool; }
  bool is_int() const { return type() == Type::kInt; }
  bool is_double() const { return type() == Type::kDouble; }
  bool is_string() const { return type() == Type::kString; }

  // Typed reads. InvalidArgument, quoting the value, when it has another type. Numbers
  // convert only when exact, because values from peers that know only the older
  // double-valued wire field arrive as doubles: an integral double reads as an integer
  // (and 0 or 1 as a bool), an integer of magnitude at most 2^53 reads as a double.
  Result<bool> AsBool() const;
  Result<int64_t> AsInt64() const;
  // The integer's 64 bits as unsigned (the inverse of TrainValue(uint64_t); a negative
  // integer reads as a value >= 2^63), or an integral double in [0, 2^64).
  Result<uint64_t> AsUint64() const;
  Result<double> AsDouble() const;
  Result<std::string> AsString() const;

  // The value as text: "true", "-3", "0.5" (shortest exact form), "\"text\"" (quoted).
  std::string ToString() const;

  // Same type and same value.
  bool operator==(const TrainValue& other) const = default;

 private:
  std::variant<bool, int64_t, double, std::string> value_{int64_t{0}};
};

// Configuration a client receives with a training task. Algorithm-specific settings
// beyond the common ones travel in `extra`, by name.
struct TrainConfig {
  int local_epochs = 1;        // passes over local data when local_steps == 0
  int local_steps = 0;         // if > 0, exactly this many minibatch steps instead
  int batch_size = 32;
  double lr = 0.05;
  double momentum = 0.0;
  double weight_decay = 0.0;
  double prox_mu = 0.0;        // FedProx: (mu/2)||w - w_global||^2 added to the loss
  uint64_t seed = 0;           // per (run, client, round): shuffling and dropout
  uint64_t round = 0;          // the task's round (Task::round), for the trainer's logs
  Encoding upload_encoding = Encoding::kDenseF32;
  std::map<std::string, TrainValue> extra;
};

enum class TaskKind : int { kTrain = 1, kWait = 2, kDone = 3 };

// The answer to PullTask.
struct Task {
  TaskKind kind = TaskKind::kWait;
  uint64_t round = 0;
  uint64_t model_version = 0;
  std::string algorithm;
  TrainConfig config;
  int64_t retry_after_ms = 0;  // for kWait
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_TASK_H_
