#ifndef FL_SDK_AGG_AGGREGATOR_TREE_H_
#define FL_SDK_AGG_AGGREGATOR_TREE_H_

// One round's aggregation as a tree (specs/aggregation-lifl.md): L leaf aggregators,
// each an independent RoundAggregator of the strategy, fold updates in parallel (one
// update per leaf at a time); at round close the leaves merge pairwise in a fixed order,
// leaf 0..L-1 (k = 2: (0+1)+(2+3), ...), whatever the order in which updates arrived or
// which leaf folded which update. Memory is one aggregator per leaf: O(d * leaves) for
// streaming aggregators (FedAvg: 8 bytes per parameter per leaf, its fp64 sums), never
// O(d * clients).
//
// Float guarantee. Which leaf folds an update depends on timing. For the dense
// aggregators (agg/weighted_accumulator.h) every leaf sums w_i * x_i in fp64: each
// product rounds once and each addition carries ~2^-53 relative error, so the float32
// mean reported after the fixed-order merge is bitwise the same for any arrival order,
// leaf count or thread count, except where the fp64 sum lies within that rounding error
// of a float32 rounding boundary. Aggregators that hold updates (algorithms/robust) sort
// or select over all of them and do not depend on the leaf split at all.
//
// Not thread-safe itself: the caller serializes Acquire, Release and everything marked
// REQUIRES idle() (the coordinator does it under its lock); between Acquire(i) and
// Release(i), leaf(i) belongs to the thread that acquired it and may be used without
// the lock.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "fl/status.h"
#include "fl/strategy.h"

namespace fl::internal {

class AggregatorTree {
 public:
  // Makes a fresh, empty leaf aggregator (the strategy's NewRoundAggregator for the
  // round). Called lazily, from Acquire, so a leaf that never folds costs nothing.
  using LeafFactory = std::function<std::unique_ptr<RoundAggregator>()>;

  // A tree of max(1, leaves) leaves.
  AggregatorTree(size_t leaves, LeafFactory make_leaf);
  AggregatorTree(const AggregatorTree&) = delete;
  AggregatorTree& operator=(const AggregatorTree&) = delete;

  size_t num_leaves() const { return leaves_.size(); }

  // A free leaf for one fold (the lowest-numbered free one, created if needed), or
  // nullopt if every leaf is folding.
  std::optional<size_t> Acquire();
  // The leaf of a successful Acquire(i), until Release(i).
  RoundAggregator& leaf(size_t i) { return *leaves_[i]; }
  void Release(size_t i);
  // True when no leaf is acquired.
  bool idle() const { return busy_ == 0; }
  // True when Acquire would succeed.
  bool HasFreeLeaf() const { return busy_ < leaves_.size(); }

  // Runs `fold` (which folds one update) on leaf (n mod L) for the n-th successful call
  // since construction: serial folds (recovery refold) spread over the leaves as live
  // folds do, in a fixed way. Returns fold's status. REQUIRES: idle().
  Status AccumulateSerial(const std::function<Status(RoundAggregator&)>& fold);
  // Runs `merge` on leaf 0 (created if needed): how partial sums made elsewhere (another
  // process's, RoundAggregator::MergeSerializedPartial) join the fixed merge order.
  // Returns merge's status. REQUIRES: idle().
  Status MergeIn(const std::function<Status(RoundAggregator&)>& merge);

  // Updates folded in all leaves. REQUIRES: idle().
  uint64_t count() const;
  // Merges the leaves in the fixed tree order and returns the root, leaving the tree
  // empty (no leaves created). nullptr if no leaf was ever created. A leaf that folded
  // nothing is skipped (it would add zeros). REQUIRES: idle().
  Result<std::unique_ptr<RoundAggregator>> TakeMerged();

 private:
  RoundAggregator& LeafAt(size_t i);

  LeafFactory make_leaf_;
  std::vector<std::unique_ptr<RoundAggregator>> leaves_;  // null until first used
  std::vector<bool> acquired_;
  size_t busy_ = 0;
  uint64_t serial_folds_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_AGG_AGGREGATOR_TREE_H_
