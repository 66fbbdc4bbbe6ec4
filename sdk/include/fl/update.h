#ifndef FL_SDK_INCLUDE_FL_UPDATE_H_
#define FL_SDK_INCLUDE_FL_UPDATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fl/param_set.h"

namespace fl {

// How a payload's bytes encode values. Persisted and sent on the wire:
// never change the value of an existing entry.
enum class Encoding : int {
  kDenseF32 = 1,   // little-endian float32, one per parameter
  kDenseF16 = 2,   // IEEE half, round-to-nearest-even
  kDenseBF16 = 3,  // bfloat16, round-to-nearest-even
  kFerret = 4,     // Ferret coefficient table (algorithms/ferret)
  kNamedSubset = 5 // a subset of tensors by name (prompts, SSF pools, heads)
};

// Parses "f32" | "f16" | "bf16" (also used by configs). InvalidArgument otherwise.
Result<Encoding> ParseDenseEncoding(const std::string& name);
std::string EncodingName(Encoding e);

// What a client states about an upload. Validated by the server before use.
struct UpdateMeta {
  uint64_t client_id = 0;
  uint64_t round = 0;
  uint64_t base_version = 0;   // global model version the update was computed against
  double weight = 0;           // aggregation weight, normally the number of examples
  uint64_t layout_hash = 0;    // Layout::hash() of the model the update belongs to
  Encoding encoding = Encoding::kDenseF32;
  std::string sha256;          // 32 raw bytes: SHA-256 of `Payload::bytes`
  uint64_t num_examples = 0;
  double train_loss = 0;
};

// An upload: metadata plus encoded bytes (std::string, as protobuf uses, so the
// transport moves rather than copies).
struct Payload {
  UpdateMeta meta;
  std::string bytes;
};

// Configuration a client receives with a training task. Algorithm-specific
// numbers beyond the common ones travel in `extra`.
struct TrainConfig {
  int local_epochs = 1;        // passes over local data when local_steps == 0
  int local_steps = 0;         // if > 0, exactly this many minibatch steps instead
  int batch_size = 32;
  double lr = 0.05;
  double momentum = 0.0;
  double weight_decay = 0.0;
  double prox_mu = 0.0;        // FedProx: (mu/2)||w - w_global||^2 added to the loss
  uint64_t seed = 0;           // per (run, client, round): shuffling and dropout
  Encoding upload_encoding = Encoding::kDenseF32;
  std::map<std::string, double> extra;
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

// A global model as delivered to a client. `params` is shared and immutable, so an
// in-process link hands out the coordinator's copy without copying.
//
// Downlink by replay (ServerLink::FetchModelOrReplay): instead of `params` the server
// may send the replay records that turn the version the client holds into `version`.
// Then params is null and replay_records[i] turns version replay_base_version + i into
// replay_base_version + i + 1; the algorithm's replayer applies them in order.
struct ModelSnapshot {
  uint64_t version = 0;
  std::shared_ptr<const ParamSet> params;
  uint64_t wire_bytes = 0;  // bytes this download costs on the wire
  uint64_t replay_base_version = 0;
  std::vector<std::shared_ptr<const std::string>> replay_records;

  bool is_replay() const { return params == nullptr && !replay_records.empty(); }
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_UPDATE_H_
