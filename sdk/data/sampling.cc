#include "data/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fl::internal {

uint64_t SeededRng::UniformInt(uint64_t n) {
  // Reject the top partial block of 2^64 so every residue is equally likely.
  uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = engine_();
  } while (x >= limit);
  return x % n;
}

double SeededRng::UniformDouble() {
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double SeededRng::Normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  double u, v, s;
  do {
    u = 2.0 * UniformDouble() - 1.0;
    v = 2.0 * UniformDouble() - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  double m = std::sqrt(-2.0 * std::log(s) / s);
  spare_normal_ = v * m;
  has_spare_normal_ = true;
  return u * m;
}

double SeededRng::Gamma(double shape) {
  if (shape < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia and Tsang, 2000, section 6).
    double u;
    do {
      u = UniformDouble();
    } while (u == 0.0);
    return Gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = Normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    double u = UniformDouble();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

std::vector<double> SeededRng::Dirichlet(double alpha, size_t n) {
  std::vector<double> p(n);
  double sum = 0;
  for (double& x : p) {
    x = Gamma(alpha);
    sum += x;
  }
  if (sum <= 0.0) {
    // Every draw underflowed (tiny alpha): all mass on one uniformly chosen category,
    // which is what Dirichlet(alpha -> 0) converges to.
    std::fill(p.begin(), p.end(), 0.0);
    if (n > 0) p[UniformInt(n)] = 1.0;
    return p;
  }
  for (double& x : p) x /= sum;
  return p;
}

}  // namespace fl::internal
