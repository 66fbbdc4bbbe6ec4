#ifndef FL_ALGORITHMS_FERRET_FERRET_ROUND_AGGREGATOR_H_
#define FL_ALGORITHMS_FERRET_FERRET_ROUND_AGGREGATOR_H_

// Ferret's round aggregator: folds the clients' coefficient tables in coefficient space,
// C = sum_i w_i C_i, and reports the weighted mean table. Memory is O(K * L) (one
// double per (seed, block) pair some client used), independent of the model size d and
// of the number of clients; the model is touched only once per round, by the strategy's
// reconstruction.

#include <cstdint>

#include "codec/ferret/coefficient_table.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/update.h"

namespace fl::internal {

// What the aggregator expects every table of its round to be computed for.
struct FerretRoundKey {
  uint64_t round = 0;
  uint64_t layout_hash = 0;
  uint64_t plan_hash = 0;
  uint64_t basis_hash = 0;
  uint32_t num_seeds = 0;   // K
  uint32_t num_blocks = 0;  // L
};

// Not thread-safe (the coordinator serializes calls). On any error the aggregator is
// unchanged.
class FerretRoundAggregator : public RoundAggregator {
 public:
  explicit FerretRoundAggregator(const FerretRoundKey& key);
  FerretRoundAggregator(const FerretRoundAggregator&) = delete;
  FerretRoundAggregator& operator=(const FerretRoundAggregator&) = delete;

  // FailedPrecondition: consumed, payload for another round, or a table computed for
  // another block plan or seed pool (stale or foreign bases). InvalidArgument: layout
  // hash differs, encoding is not kFerret, weight not finite and > 0, non-finite train
  // loss, bytes that do not parse as a coefficient table, a header with another K or L,
  // an unknown block or seed index, or a non-finite coefficient. Messages name the
  // offending (block, seed).
  Status Accumulate(const Payload& payload) override;
  // Consumes `other`, a FerretRoundAggregator with the same key (InvalidArgument
  // otherwise); FailedPrecondition if either is consumed.
  Status MergeWith(RoundAggregator&& other) override;
  uint64_t count() const override { return acc_.num_added(); }
  bool CanReport() const override { return !consumed_ && acc_.num_added() > 0; }
  // encoded_aggregate: the serialized weighted mean table sum w_i C_i / sum w_i
  // (aggregate_encoding kFerret), mean_delta empty.
  Result<AggregateReport> Report() && override;

  const FerretRoundKey& key() const { return key_; }
  // (seed, block) pairs currently held: the aggregator's memory is O(this).
  size_t num_entries() const { return acc_.num_entries(); }

 private:
  Status CheckUsable(const char* op) const;

  FerretRoundKey key_;
  ferret::CoefficientAccumulator acc_;
  double loss_sum_ = 0;  // sum of weight * train_loss
  bool consumed_ = false;
};

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_FERRET_ROUND_AGGREGATOR_H_
