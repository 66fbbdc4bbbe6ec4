#ifndef FL_SDK_INCLUDE_FL_PARAM_SET_H_
#define FL_SDK_INCLUDE_FL_PARAM_SET_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fl/export.h"
#include "fl/status.h"

namespace fl {

// One named tensor inside a ParamSet's flat buffer.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats, from the start of the buffer
  size_t numel = 0;
};

// The names, shapes and offsets of a model's tensors, in model order.
// Two layouts are compatible iff their hashes are equal.
class FL_EXPORT Layout {
 public:
  Layout();

  // Appends a tensor after the last one. Offsets are assigned densely.
  void Add(std::string name, std::vector<int64_t> shape);

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  size_t num_tensors() const { return tensors_.size(); }
  size_t total_numel() const { return total_; }
  // 64-bit FNV-1a (offset basis 14695981039346656037, prime 1099511628211) over, for
  // each tensor in order: the name's length as 8 little-endian bytes, the name's bytes,
  // the number of dimensions as 8 little-endian bytes, then each dimension as 8
  // little-endian bytes. Stable across platforms and runs; an empty layout hashes to
  // the offset basis.
  uint64_t hash() const { return hash_; }
  // Index of the tensor with `name`, or -1.
  int Find(const std::string& name) const;

  bool operator==(const Layout& o) const { return hash_ == o.hash_ && total_ == o.total_; }

 private:
  std::vector<TensorSpec> tensors_;
  size_t total_ = 0;
  uint64_t hash_;  // FNV-1a state: the offset basis, then one fold per Add.
};

// A model's parameters: one 64-byte aligned contiguous float32 buffer plus its Layout.
// The unit that codecs, aggregators and the wire work on. Copying is a deep copy.
class FL_EXPORT ParamSet {
 public:
  ParamSet() = default;
  // Zero-initialized buffer of layout.total_numel() floats.
  explicit ParamSet(Layout layout);
  ParamSet(const ParamSet& other);
  ParamSet& operator=(const ParamSet& other);
  ParamSet(ParamSet&&) noexcept = default;
  ParamSet& operator=(ParamSet&&) noexcept = default;

  const Layout& layout() const { return *layout_; }
  std::shared_ptr<const Layout> shared_layout() const { return layout_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::span<float> values() { return {data_.get(), size_}; }
  std::span<const float> values() const { return {data_.get(), size_}; }

  // View of tensor `index`. REQUIRES: index < layout().num_tensors().
  std::span<float> tensor(size_t index);
  std::span<const float> tensor(size_t index) const;

  // True iff every value is finite.
  bool AllFinite() const;

 private:
  struct AlignedFree {
    void operator()(float* p) const;
  };
  std::shared_ptr<const Layout> layout_ = std::make_shared<Layout>();
  std::unique_ptr<float[], AlignedFree> data_;
  size_t size_ = 0;
};

// Model files (".flps": layout, then float32 values, little-endian), as fl-server's
// --init-model and `fl-sim export-model` read and write them.
// Writes atomically and durably (temporary file, fsync, rename).
FL_EXPORT Status WriteModelFile(const std::string& path, const ParamSet& params);
// NotFound if missing; DataLoss if the file is not a complete model file.
FL_EXPORT Result<ParamSet> ReadModelFile(const std::string& path);

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_PARAM_SET_H_
