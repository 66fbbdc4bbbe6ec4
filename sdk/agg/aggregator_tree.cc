#include "agg/aggregator_tree.h"

#include <algorithm>
#include <utility>

namespace fl::internal {

AggregatorTree::AggregatorTree(size_t leaves, LeafFactory make_leaf)
    : make_leaf_(std::move(make_leaf)),
      leaves_(std::max<size_t>(leaves, 1)),
      acquired_(leaves_.size(), false) {}

RoundAggregator& AggregatorTree::LeafAt(size_t i) {
  if (leaves_[i] == nullptr) leaves_[i] = make_leaf_();
  return *leaves_[i];
}

std::optional<size_t> AggregatorTree::Acquire() {
  for (size_t i = 0; i < leaves_.size(); ++i) {
    if (acquired_[i]) continue;
    LeafAt(i);
    acquired_[i] = true;
    ++busy_;
    return i;
  }
  return std::nullopt;
}

void AggregatorTree::Release(size_t i) {
  if (!acquired_[i]) return;
  acquired_[i] = false;
  --busy_;
}

Status AggregatorTree::AccumulateSerial(const std::function<Status(RoundAggregator&)>& fold) {
  FL_RETURN_IF_ERROR(fold(LeafAt(serial_folds_ % leaves_.size())));
  ++serial_folds_;
  return Status::Ok();
}

Status AggregatorTree::MergeIn(const std::function<Status(RoundAggregator&)>& merge) {
  return merge(LeafAt(0));
}

uint64_t AggregatorTree::count() const {
  uint64_t n = 0;
  for (const auto& leaf : leaves_) n += leaf != nullptr ? leaf->count() : 0;
  return n;
}

Result<std::unique_ptr<RoundAggregator>> AggregatorTree::TakeMerged() {
  std::vector<std::unique_ptr<RoundAggregator>> level;
  std::unique_ptr<RoundAggregator> first_empty;  // stands for a round that folded nothing
  for (auto& leaf : leaves_) {
    if (leaf == nullptr) continue;
    if (leaf->count() > 0) {
      level.push_back(std::move(leaf));
    } else if (first_empty == nullptr) {
      first_empty = std::move(leaf);
    }
    leaf.reset();
  }
  if (level.empty()) return first_empty;
  // Pairwise, level by level: node j of the next level is (2j) + (2j+1) of this one.
  while (level.size() > 1) {
    std::vector<std::unique_ptr<RoundAggregator>> next;
    for (size_t j = 0; j + 1 < level.size(); j += 2) {
      FL_RETURN_IF_ERROR(level[j]->MergeWith(std::move(*level[j + 1])));
      next.push_back(std::move(level[j]));
    }
    if (level.size() % 2 == 1) next.push_back(std::move(level.back()));
    level = std::move(next);
  }
  return std::move(level.front());
}

}  // namespace fl::internal
