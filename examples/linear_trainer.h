#ifndef FL_EXAMPLES_LINEAR_TRAINER_H_
#define FL_EXAMPLES_LINEAR_TRAINER_H_

// A complete fl::Trainer in plain C++ (no LibTorch): least-squares linear regression
// y = w.x + b on the app's own data, trained by minibatch SGD. It shows everything an
// edge app must implement to join a federation, and the tests use it as a small real
// model.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "fl/trainer.h"

namespace fl::examples {

class LinearTrainer : public fl::Trainer {
 public:
  // `features` holds rows of `dim` values; `targets` one value per row.
  LinearTrainer(size_t dim, std::vector<float> features, std::vector<float> targets)
      : dim_(dim), x_(std::move(features)), y_(std::move(targets)) {
    layout_.Add("weight", {static_cast<int64_t>(dim)});
    layout_.Add("bias", {1});
    params_ = fl::ParamSet(layout_);
    anchor_ = params_;
  }

  const fl::Layout& layout() const override { return layout_; }

  fl::Status GetParameters(fl::ParamSet* out) override {
    *out = params_;
    return fl::Status::Ok();
  }

  fl::Status SetParameters(const fl::ParamSet& params) override {
    if (params.layout().hash() != layout_.hash()) {
      return fl::Status::InvalidArgument("LinearTrainer: layout mismatch");
    }
    params_ = params;
    anchor_ = params;
    return fl::Status::Ok();
  }

  fl::Result<fl::TrainStats> Train(const fl::TrainConfig& config,
                                   const fl::CancelToken& cancel) override {
    const size_t n = y_.size();
    if (n == 0) return fl::Status::FailedPrecondition("LinearTrainer: no data");
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(config.seed);
    const size_t batch = static_cast<size_t>(std::max(1, config.batch_size));
    const size_t steps_per_epoch = (n + batch - 1) / batch;
    const size_t total_steps = config.local_steps > 0
                                   ? static_cast<size_t>(config.local_steps)
                                   : steps_per_epoch * static_cast<size_t>(std::max(1, config.local_epochs));
    float* w = params_.data();
    const float* anchor = anchor_.data();
    std::vector<double> grad(dim_ + 1);
    double loss_sum = 0;
    uint64_t seen = 0;
    for (size_t step = 0; step < total_steps; ++step) {
      if (cancel.cancelled()) return fl::Status::Cancelled("training cancelled");
      const size_t pos = (step % steps_per_epoch) * batch;
      if (pos == 0) std::shuffle(order.begin(), order.end(), rng);
      const size_t end = std::min(n, pos + batch);
      std::fill(grad.begin(), grad.end(), 0.0);
      for (size_t k = pos; k < end; ++k) {
        const float* row = &x_[order[k] * dim_];
        double pred = w[dim_];
        for (size_t j = 0; j < dim_; ++j) pred += w[j] * row[j];
        const double err = pred - y_[order[k]];
        loss_sum += 0.5 * err * err;
        for (size_t j = 0; j < dim_; ++j) grad[j] += err * row[j];
        grad[dim_] += err;
      }
      const double inv = 1.0 / static_cast<double>(end - pos);
      for (size_t j = 0; j <= dim_; ++j) {
        // FedProx: the proximal term pulls toward the parameters the server sent.
        const double g = grad[j] * inv + config.prox_mu * (w[j] - anchor[j]) +
                         config.weight_decay * w[j];
        w[j] -= static_cast<float>(config.lr * g);
      }
      seen += end - pos;
    }
    fl::TrainStats stats;
    stats.num_examples = seen;
    stats.dataset_size = n;
    stats.mean_loss = seen ? loss_sum / static_cast<double>(seen) : 0;
    return stats;
  }

  fl::Result<fl::EvalStats> Evaluate() override {
    fl::EvalStats stats;
    const float* w = params_.data();
    double loss = 0;
    for (size_t i = 0; i < y_.size(); ++i) {
      double pred = w[dim_];
      for (size_t j = 0; j < dim_; ++j) pred += w[j] * x_[i * dim_ + j];
      loss += 0.5 * (pred - y_[i]) * (pred - y_[i]);
    }
    stats.num_examples = y_.size();
    stats.loss = y_.empty() ? 0 : loss / static_cast<double>(y_.size());
    return stats;
  }

 private:
  size_t dim_;
  std::vector<float> x_;
  std::vector<float> y_;
  fl::Layout layout_;
  fl::ParamSet params_;
  fl::ParamSet anchor_;
};

// Synthetic regression data y = true_w.x + true_b + noise, for examples and tests.
inline void MakeLinearData(size_t dim, size_t rows, uint64_t seed, std::vector<float>* x,
                           std::vector<float>* y) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  x->resize(rows * dim);
  y->resize(rows);
  for (size_t i = 0; i < rows; ++i) {
    float target = 0.5f;  // true bias
    for (size_t j = 0; j < dim; ++j) {
      const float v = normal(rng);
      (*x)[i * dim + j] = v;
      target += v * (static_cast<float>(j % 5) - 2.0f);  // true weights: -2,-1,0,1,2,...
    }
    (*y)[i] = target + 0.01f * normal(rng);
  }
}

}  // namespace fl::examples

#endif  // FL_EXAMPLES_LINEAR_TRAINER_H_
