#include "codec/ferret/block_plan.h"

#include <algorithm>

#include "core/hash.h"

namespace fl::internal::ferret {

BlockPlan BlockPlan::Reference(const Layout& layout) {
  BlockPlan plan;
  plan.kind_ = BlockPlanKind::kReference;
  plan.layout_hash_ = layout.hash();
  plan.total_size_ = layout.total_numel();
  std::vector<size_t> sizes;
  for (const TensorSpec& t : layout.tensors()) sizes.push_back(t.numel);
  if (!sizes.empty()) {
    std::sort(sizes.begin(), sizes.end());
    const size_t n = sizes.size();
    // 0.9 * median, floored, with the median of an even count being the mean of the two
    // middle sizes. Done in integers (18 * (a + b) / 40) so it is exact for any size.
    const unsigned __int128 twice_median =
        n % 2 == 1 ? 2 * static_cast<unsigned __int128>(sizes[n / 2])
                   : static_cast<unsigned __int128>(sizes[n / 2 - 1]) + sizes[n / 2];
    plan.target_size_ = static_cast<size_t>(twice_median * 9 / 20);
  }
  size_t start = 0;
  size_t current = 0;
  bool open = false;
  for (const TensorSpec& t : layout.tensors()) {
    if (open && current + t.numel > plan.target_size_) {
      if (current > 0) plan.blocks_.push_back({start, current});
      start += current;
      current = 0;
    }
    open = true;
    current += t.numel;
  }
  if (current > 0) plan.blocks_.push_back({start, current});
  plan.Finish();
  return plan;
}

Result<BlockPlan> BlockPlan::FixedSize(const Layout& layout, size_t block_size) {
  if (block_size == 0) return Status::InvalidArgument("ferret block size must be positive");
  BlockPlan plan;
  plan.kind_ = BlockPlanKind::kFixedSize;
  plan.layout_hash_ = layout.hash();
  plan.total_size_ = layout.total_numel();
  plan.target_size_ = block_size;
  for (size_t offset = 0; offset < plan.total_size_; offset += block_size) {
    plan.blocks_.push_back({offset, std::min(block_size, plan.total_size_ - offset)});
  }
  plan.Finish();
  return plan;
}

void BlockPlan::Finish() {
  uint64_t h = kFnv1a64OffsetBasis;
  h = Fnv1a64U64(h, static_cast<uint64_t>(kind_));
  h = Fnv1a64U64(h, layout_hash_);
  h = Fnv1a64U64(h, blocks_.size());
  for (const Block& b : blocks_) {
    h = Fnv1a64U64(h, b.offset);
    h = Fnv1a64U64(h, b.size);
  }
  hash_ = h;
}

}  // namespace fl::internal::ferret
