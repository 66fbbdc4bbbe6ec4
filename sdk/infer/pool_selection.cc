#include "infer/pool_selection.h"

#include <algorithm>
#include <numeric>

namespace fl::internal {
namespace {

// torch::nn::functional::normalize's floor on the norm.
constexpr float kNormalizeEps = 1e-12f;

RowMatrix NormalizedRows(const RowMatrix& x) {
  RowMatrix y = x;
  for (Eigen::Index r = 0; r < y.rows(); ++r) y.row(r) /= std::max(y.row(r).norm(), kNormalizeEps);
  return y;
}

// Sums `from` into `to`, sized on first use.
void Accumulate(const RowVector& from, RowVector* to) {
  if (to->size() == 0) {
    *to = from;
  } else {
    *to += from;
  }
}

}  // namespace

std::vector<int32_t> SelectEntries(const RowMatrix& queries,
                                   const std::vector<PoolEntryWeights>& pool, int64_t top_k) {
  RowMatrix keys(static_cast<Eigen::Index>(pool.size()), queries.cols());
  for (size_t i = 0; i < pool.size(); ++i) keys.row(static_cast<Eigen::Index>(i)) = pool[i].key;
  const RowMatrix sim = NormalizedRows(queries) * NormalizedRows(keys).transpose();  // [n, M]
  std::vector<int32_t> chosen;
  chosen.reserve(static_cast<size_t>(queries.rows() * top_k));
  std::vector<int32_t> order(pool.size());
  for (Eigen::Index b = 0; b < sim.rows(); ++b) {
    std::iota(order.begin(), order.end(), 0);
    // Ties, which torch::topk leaves unspecified, go to the lower index.
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t x, int32_t y) {
      return sim(b, x) > sim(b, y) || (sim(b, x) == sim(b, y) && x < y);
    });
    chosen.insert(chosen.end(), order.begin(), order.begin() + top_k);
  }
  return chosen;
}

void CombineEntries(const std::vector<PoolEntryWeights>& pool, std::span<const int32_t> chosen,
                    SsfScales* ssf, DenseLayer* head) {
  const size_t points = pool.front().ssf.gamma.size();
  ssf->gamma.assign(points, RowVector());
  ssf->beta.assign(points, RowVector());
  *head = DenseLayer{};
  for (int32_t i : chosen) {
    const PoolEntryWeights& e = pool[static_cast<size_t>(i)];
    for (size_t p = 0; p < points; ++p) {
      Accumulate(e.ssf.gamma[p], &ssf->gamma[p]);
      Accumulate(e.ssf.beta[p], &ssf->beta[p]);
    }
    if (head->weight.size() == 0) {
      *head = e.head;
    } else {
      head->weight += e.head.weight;
      head->bias += e.head.bias;
    }
  }
  // Sum, then divide, as torch's mean.
  const auto count = static_cast<float>(chosen.size());
  for (size_t p = 0; p < points; ++p) {
    ssf->gamma[p] /= count;
    ssf->beta[p] /= count;
  }
  head->weight /= count;
  head->bias /= count;
}

}  // namespace fl::internal
