#include "fl/param_set.h"

#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "codec/dense_codec.h"

namespace fl {
namespace {

constexpr uint64_t kFnvPrime = 1099511628211ull;
constexpr size_t kAlignment = 64;

uint64_t FnvBytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

// Integers are hashed as fixed-width little-endian bytes so the hash does not depend
// on the host's byte order.
uint64_t FnvU64(uint64_t h, uint64_t v) {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(v >> (8 * i));
  return FnvBytes(h, bytes, 8);
}

float* AllocateFloats(size_t n) {
  if (n == 0) return nullptr;
  // aligned_alloc requires the size to be a multiple of the alignment.
  size_t bytes = (n * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

}  // namespace

void Layout::Add(std::string name, std::vector<int64_t> shape) {
  size_t numel = 1;
  for (int64_t d : shape) {
    assert(d >= 0);
    numel *= static_cast<size_t>(d);
  }
  // Length prefixes keep ("ab", [1]) + ("c", ...) distinct from ("a", ...) + ("bc", ...).
  hash_ = FnvU64(hash_, name.size());
  hash_ = FnvBytes(hash_, name.data(), name.size());
  hash_ = FnvU64(hash_, shape.size());
  for (int64_t d : shape) hash_ = FnvU64(hash_, static_cast<uint64_t>(d));
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
