#ifndef FL_SDK_DATA_SAMPLING_H_
#define FL_SDK_DATA_SAMPLING_H_

// Seeded sampling that gives the same numbers on every platform and standard library.
// std::mt19937_64's output sequence is fixed by the C++ standard, but the std::*_distribution
// classes and std::shuffle are not, so the distributions here are written out by hand.
// Used for data partitioning and per-round example shuffling.

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace fl::internal {

// Not thread-safe; one instance per thread.
class SeededRng {
 public:
  explicit SeededRng(uint64_t seed) : engine_(seed) {}

  uint64_t NextU64() { return engine_(); }
  // Uniform in [0, n). REQUIRES: n > 0. Unbiased (rejection sampling).
  uint64_t UniformInt(uint64_t n);
  // Uniform in [0, 1) with 53 random bits.
  double UniformDouble();
  // Standard normal (Marsaglia polar method).
  double Normal();
  // Gamma(shape, 1) (Marsaglia-Tsang; shape < 1 via the U^(1/shape) boost).
  // REQUIRES: shape > 0.
  double Gamma(double shape);
  // One draw from a symmetric Dirichlet(alpha) over `n` categories; sums to 1.
  std::vector<double> Dirichlet(double alpha, size_t n);

  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::span<T> values) {
    for (size_t i = values.size(); i > 1; --i) {
      size_t j = static_cast<size_t>(UniformInt(i));
      std::swap(values[i - 1], values[j]);
    }
  }
  template <typename T>
  void Shuffle(std::vector<T>& values) { Shuffle(std::span<T>(values)); }

 private:
  std::mt19937_64 engine_;
  bool has_spare_normal_ = false;
  double spare_normal_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_DATA_SAMPLING_H_
