#ifndef FL_SDK_INCLUDE_FL_STRATEGY_H_
#define FL_SDK_INCLUDE_FL_STRATEGY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "fl/export.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/task.h"
#include "fl/update.h"

namespace fl {

// What a round's aggregator reports: the weighted mean of the clients' deltas, either
// dense (mean_delta) or, for algorithms that aggregate in a compressed space, encoded
// (encoded_aggregate in aggregate_encoding, e.g. a Ferret coefficient table; mean_delta
// is then empty). The strategy that made the aggregator knows which one it gets.
struct AggregateReport {
  ParamSet mean_delta;   // sum_i w_i * delta_i / sum_i w_i; empty if encoded_aggregate is set
  std::string encoded_aggregate;  // the same mean in aggregate_encoding; empty if dense
  Encoding aggregate_encoding = Encoding::kDenseF32;
  double total_weight = 0;
  uint64_t count = 0;    // updates folded
  double mean_train_loss = 0;
};

// Folds one round's updates as they arrive (memory independent of the number of
// clients). Mirrors an accumulate / merge / report aggregator. Not thread-safe; the
// coordinator serializes calls.
class FL_EXPORT RoundAggregator {
 public:
  virtual ~RoundAggregator() = default;
  // Validates `payload` (layout hash, size, encoding, finite values) and folds it.
  // On any error the aggregator is unchanged. InvalidArgument for malformed or
  // non-finite content; FailedPrecondition once consumed by Report().
  virtual Status Accumulate(const Payload& payload) = 0;
  // Folds payload's values with `meta` in place of payload.meta: how a server folds an
  // update whose metadata it rewrote (its own weight, an asynchronous buffer's round)
  // without copying the values. Same checks and errors as Accumulate. The default copies
  // the payload; aggregators that can read the values in place override it.
  virtual Status AccumulateWithMeta(const UpdateMeta& meta, const Payload& payload) {
    return Accumulate(Payload{meta, payload.bytes});
  }
  // Folds another aggregator of the same round into this one, consuming it.
  virtual Status MergeWith(RoundAggregator&& other) = 0;
  virtual uint64_t count() const = 0;
  // True once at least one update was folded and Report() was not called.
  virtual bool CanReport() const = 0;
  // Consumes the aggregator. FailedPrecondition if !CanReport().
  virtual Result<AggregateReport> Report() && = 0;

  // Partial state, for aggregating one round across processes (fl-sim under mpirun):
  // what was folded so far (sums, total weight, count, loss) as bytes that
  // MergeSerializedPartial of an aggregator of the same round and layout folds in, so
  // that merging partials is MergeWith across an address space. The aggregator is
  // unchanged and stays usable. Unimplemented (the default) when the algorithm's
  // aggregator cannot be split; FailedPrecondition once consumed.
  virtual Result<std::string> SerializePartial() const {
    return Status::Unimplemented("this aggregator has no serializable partial state");
  }
  // Folds a SerializePartial() of another aggregator of the same round. The bytes are
  // hostile: InvalidArgument, with the aggregator unchanged, for a truncated or
  // oversized partial, another format, round or layout hash, or a non-finite or
  // negative sum or weight. Unimplemented by default; FailedPrecondition once consumed.
  virtual Status MergeSerializedPartial(std::string_view /*partial*/) {
    return Status::Unimplemented("this aggregator cannot merge serialized partial state");
  }
};

// The server half of an algorithm. Long-lived; the coordinator owns it and calls it
// from one thread at a time.
class FL_EXPORT Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;
  // The training configuration sent to clients in `round` (seed excluded; the
  // coordinator derives a per-client seed).
  virtual TrainConfig ConfigureRound(uint64_t round) const = 0;
  // A fresh aggregator for `round`, whose updates were computed against `global`.
  virtual std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet& global,
                                                              uint64_t round) = 0;
  // Applies the round's aggregate to the global model (server optimizer).
  virtual Status ApplyRound(AggregateReport report, ParamSet* global) = 0;
  // Optimizer state (e.g. FedAdam moments) for crash recovery; empty if stateless.
  virtual std::string SaveState() const { return {}; }
  virtual Status LoadState(std::string_view state) {
    return state.empty() ? Status::Ok() : Status::InvalidArgument("strategy is stateless");
  }
  // Downlink by replay. After a successful ApplyRound, the record from which a client
  // holding the previous global model rebuilds the new one bit for bit (the algorithm's
  // replayer, algorithms/registry.h, applies it with the same code ApplyRound used).
  // Returns it once and forgets it; empty if the algorithm has no replay (clients then
  // download the full model) or no round was applied since the last call.
  virtual std::string TakeReplayRecord() { return {}; }
  // Named counters of the last successful ApplyRound (e.g. Ferret's clipped and skipped
  // reconstruction terms), reported in the round summary and log. Empty by default.
  virtual std::map<std::string, double> LastRoundStats() const { return {}; }
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_STRATEGY_H_
