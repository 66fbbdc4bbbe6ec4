#ifndef FL_SDK_CODEC_FERRET_BLOCK_PLAN_H_
#define FL_SDK_CODEC_FERRET_BLOCK_PLAN_H_

// How Ferret cuts a model's flat parameter vector into blocks. Each block l is a
// contiguous range of the ParamSet buffer with its own basis vectors v_{k,l} and its own
// coefficients; the block index l is part of the Philox counter, so client and server
// must use the same plan. BlockPlan::hash() identifies a plan: coefficient tables carry
// it and are rejected when it differs.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal::ferret {

// Persisted in configs and folded into plan hashes: never change existing values.
enum class BlockPlanKind : uint32_t {
  kReference = 1,  // tensor groups, the reference implementation's rule
  kFixedSize = 2,  // equal ranges of the flat buffer, ignoring tensor boundaries
};

struct Block {
  size_t offset = 0;  // first entry in the flat ParamSet buffer
  size_t size = 0;    // d_l > 0
};

// An immutable list of blocks covering [0, total_size()) in order, without gaps.
// Cheap to copy; thread-compatible.
class BlockPlan {
 public:
  BlockPlan() = default;

  // The reference rule: walk the tensors in layout order with target size
  // floor(0.9 * median tensor size) (numpy's median: mean of the two middle sizes for an
  // even count); close the current block when adding the next tensor would exceed the
  // target. A tensor larger than the target therefore forms its own block, and small
  // tensors pack together. Blocks left empty by zero-size tensors are dropped.
  static BlockPlan Reference(const Layout& layout);

  // Blocks of `block_size` entries (the last one shorter). InvalidArgument if
  // block_size is 0.
  static Result<BlockPlan> FixedSize(const Layout& layout, size_t block_size);

  BlockPlanKind kind() const { return kind_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  uint32_t num_blocks() const { return static_cast<uint32_t>(blocks_.size()); }
  size_t total_size() const { return total_size_; }
  uint64_t layout_hash() const { return layout_hash_; }
  // kReference: floor(0.9 * median); kFixedSize: the block size.
  size_t target_size() const { return target_size_; }
  // FNV-1a over the kind, the layout hash and every block's range.
  uint64_t hash() const { return hash_; }

 private:
  void Finish();

  BlockPlanKind kind_ = BlockPlanKind::kReference;
  std::vector<Block> blocks_;
  size_t total_size_ = 0;
  uint64_t layout_hash_ = 0;
  size_t target_size_ = 0;
  uint64_t hash_ = 0;
};

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_BLOCK_PLAN_H_
