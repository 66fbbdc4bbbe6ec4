#ifndef FL_SDK_AGG_ALIGNED_ALLOCATOR_H_
#define FL_SDK_AGG_ALIGNED_ALLOCATOR_H_

// A std::allocator that aligns to a cache line (64 bytes), so an accumulator's sums
// start on a line and vector loads of them never split one.

#include <cstddef>
#include <new>

namespace fl::internal {

template <typename T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};

  CacheAlignedAllocator() = default;
  template <typename U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) noexcept {}

  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kAlignment); }

  template <typename U>
  bool operator==(const CacheAlignedAllocator<U>&) const noexcept { return true; }
};

}  // namespace fl::internal

#endif  // FL_SDK_AGG_ALIGNED_ALLOCATOR_H_
