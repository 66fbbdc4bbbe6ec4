#include "fl/param_set.h"

#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "codec/dense_codec.h"
#include "core/hash.h"

namespace fl {
namespace {

constexpr size_t kAlignment = 64;

float* AllocateFloats(size_t n) {
  if (n == 0) return nullptr;
  // aligned_alloc requires the size to be a multiple of the alignment.
  size_t bytes = (n * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

}  // namespace

Layout::Layout() : hash_(internal::kFnv1a64OffsetBasis) {}

void Layout::Add(std::string name, std::vector<int64_t> shape) {
  size_t numel = 1;
  for (int64_t d : shape) {
    assert(d >= 0);
    numel *= static_cast<size_t>(d);
  }
  // Length prefixes keep ("ab", [1]) + ("c", ...) distinct from ("a", ...) + ("bc", ...).
  // Integers are folded as 8 little-endian bytes (see core/hash.h).
  hash_ = internal::Fnv1a64U64(hash_, name.size());
  hash_ = internal::Fnv1a64Bytes(hash_, name.data(), name.size());
  hash_ = internal::Fnv1a64U64(hash_, shape.size());
  for (int64_t d : shape) hash_ = internal::Fnv1a64U64(hash_, static_cast<uint64_t>(d));
  TensorSpec spec;
  spec.name = std::move(name);
  spec.shape = std::move(shape);
  spec.offset = total_;
  spec.numel = numel;
  total_ += numel;
  tensors_.push_back(std::move(spec));
}

int Layout::Find(const std::string& name) const {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

void ParamSet::AlignedFree::operator()(float* p) const { std::free(p); }

ParamSet::ParamSet(Layout layout)
    : layout_(std::make_shared<const Layout>(std::move(layout))),
      data_(AllocateFloats(layout_->total_numel())),
      size_(layout_->total_numel()) {
  if (size_ > 0) std::memset(data_.get(), 0, size_ * sizeof(float));
}

ParamSet::ParamSet(const ParamSet& other)
    : layout_(other.layout_), data_(AllocateFloats(other.size_)), size_(other.size_) {
  if (size_ > 0) std::memcpy(data_.get(), other.data_.get(), size_ * sizeof(float));
}

ParamSet& ParamSet::operator=(const ParamSet& other) {
  if (this == &other) return *this;
  // Reuse the buffer when sizes match: the server copies the global model every round.
  if (size_ != other.size_) {
    data_.reset(AllocateFloats(other.size_));
    size_ = other.size_;
  }
  layout_ = other.layout_;
  if (size_ > 0) std::memcpy(data_.get(), other.data_.get(), size_ * sizeof(float));
  return *this;
}

std::span<float> ParamSet::tensor(size_t index) {
  const TensorSpec& t = layout_->tensors()[index];
  return {data_.get() + t.offset, t.numel};
}

std::span<const float> ParamSet::tensor(size_t index) const {
  const TensorSpec& t = layout_->tensors()[index];
  return {data_.get() + t.offset, t.numel};
}

bool ParamSet::AllFinite() const {
  return internal::FindNonFinite(values()) == size_;
}

}  // namespace fl
