#include "torch/lm_trainer.h"

#include <algorithm>
#include <cmath>

#include "data/sampling.h"
#include "torch/models.h"

namespace fl::internal {
namespace {

constexpr int64_t kIgnoreTarget = -100;  // cross_entropy's default ignore_index

// Reads extra[key] as an integer enum value in [0, max]; `fallback` when absent.
Result<int> ExtraEnum(const TrainConfig& config, const char* key, int max, int fallback) {
  auto it = config.extra.find(key);
  if (it == config.extra.end()) return fallback;
  Result<int64_t> v = it->second.AsInt64();
  if (!v.ok() || *v < 0 || *v > max) {
    return Status::InvalidArgument(std::string("train extra \"") + key +
                                   "\" must be an integer in [0, " + std::to_string(max) +
                                   "], got " + it->second.ToString());
  }
  return static_cast<int>(*v);
}

Result<double> ExtraNonNegative(const TrainConfig& config, const char* key, double fallback) {
  auto it = config.extra.find(key);
  if (it == config.extra.end()) return fallback;
  Result<double> v = it->second.AsDouble();
  if (!v.ok() || !(std::isfinite(*v) && *v >= 0)) {
    return Status::InvalidArgument(std::string("train extra \"") + key +
                                   "\" must be a number >= 0, got " + it->second.ToString());
  }
  return *v;
}

}  // namespace

Result<LmOptimizer> ParseLmOptimizer(const std::string& name) {
  if (name == "sgd") return LmOptimizer::kSgd;
  if (name == "adam") return LmOptimizer::kAdam;
  return Status::InvalidArgument("unknown optimizer \"" + name + "\" (expected sgd or adam)");
}

Result<LmSchedule> ParseLmSchedule(const std::string& name) {
  if (name == "constant") return LmSchedule::kConstant;
  if (name == "cosine") return LmSchedule::kCosine;
  return Status::InvalidArgument("unknown lr schedule \"" + name +
                                 "\" (expected constant or cosine)");
}

struct LmTrainer::Impl {
  LmTrainerOptions options;
  torch::Device device{torch::kCPU};
  std::shared_ptr<GptImpl> model;
  std::unique_ptr<ParamBridge> bridge;
  std::vector<torch::Tensor> parameters;  // trainable tensors, layout order
  std::string_view train;
  std::vector<std::string_view> heldout;
  ParamSet anchor;  // last SetParameters (FedProx)
  bool has_anchor = false;
  std::function<void(int64_t, double)> step_callback;

  // [rows, cols] int64 tensor on the device from host values.
  torch::Tensor ToDevice(std::vector<int64_t>& values, int64_t rows, int64_t cols) const {
    torch::Tensor t = torch::from_blob(values.data(), {rows, cols}, torch::kLong);
    return device.is_cpu() ? t.clone() : t.to(device);
  }
};

LmTrainer::LmTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LmTrainer::~LmTrainer() = default;

Result<std::unique_ptr<LmTrainer>> LmTrainer::Create(const LmTrainerOptions& options) {
  if (options.eval_batch_size < 1) return Status::InvalidArgument("eval_batch_size must be >= 1");
  if (!std::isfinite(options.clip_norm)) return Status::InvalidArgument("clip_norm must be finite");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  try {
    impl->device = torch::Device(options.device);
  } catch (const std::exception&) {
    return Status::InvalidArgument("bad device \"" + options.device + "\"");
  }
  FL_ASSIGN_OR_RETURN(impl->model, CreateGpt(options.model, options.init_seed));
  try {
    impl->model->to(impl->device);
    impl->model->train();
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "LmTrainer::Create");
  }
  impl->bridge = std::make_unique<ParamBridge>(*impl->model);
  impl->parameters.assign(impl->bridge->tensors().begin(),
                          impl->bridge->tensors().begin() + impl->bridge->num_parameters());
  return std::unique_ptr<LmTrainer>(new LmTrainer(std::move(impl)));
}

void LmTrainer::BindText(std::string_view train, std::vector<std::string_view> heldout) {
  impl_->train = train;
  impl_->heldout = std::move(heldout);
}

int64_t LmTrainer::context() const { return impl_->model->options().context; }

const Layout& LmTrainer::layout() const { return impl_->bridge->layout(); }

Status LmTrainer::GetParameters(ParamSet* out) { return impl_->bridge->Read(out); }

Status LmTrainer::SetParameters(const ParamSet& params) {
  FL_RETURN_IF_ERROR(impl_->bridge->Write(params));
  impl_->anchor = params;
  impl_->has_anchor = true;
  return Status::Ok();
}

void LmTrainer::set_step_callback(std::function<void(int64_t, double)> callback) {
  impl_->step_callback = std::move(callback);
}

Result<TrainStats> LmTrainer::Train(const TrainConfig& config, const CancelToken& cancel) {
  Impl& m = *impl_;
  const int64_t n = static_cast<int64_t>(m.train.size());
  if (n < 2) {
    return Status::FailedPrecondition("LmTrainer::Train: the bound training text has " +
                                      std::to_string(n) + " bytes (need at least 2)");
  }
  if (config.batch_size < 1) return Status::InvalidArgument("batch_size must be >= 1");
  if (!(config.lr > 0 && std::isfinite(config.lr))) {
    return Status::InvalidArgument("lr must be > 0");
  }
  if (config.prox_mu < 0) return Status::InvalidArgument("prox_mu must be >= 0");
  FL_ASSIGN_OR_RETURN(int optimizer_kind,
                      ExtraEnum(config, "optimizer", 1, static_cast<int>(m.options.optimizer)));
  FL_ASSIGN_OR_RETURN(double clip_norm,
                      ExtraNonNegative(config, "clip_norm", std::max(0.0, m.options.clip_norm)));
  FL_ASSIGN_OR_RETURN(int schedule, ExtraEnum(config, "lr_schedule", 1, 0));
  FL_ASSIGN_OR_RETURN(double warmup, ExtraNonNegative(config, "warmup_steps", 0));

  const int64_t window = std::min<int64_t>(m.model->options().context + 1, n);
  const int64_t batch = config.batch_size;
  const int64_t predicted_per_window = window - 1;
  int64_t steps = config.local_steps;
  if (steps <= 0) {
    const double per_step = static_cast<double>(batch * predicted_per_window);
    steps =
        static_cast<int64_t>(std::ceil(config.local_epochs * static_cast<double>(n) / per_step));
  }
  if (steps < 1) return Status::InvalidArgument("one of local_steps and local_epochs must be >= 1");

  TrainStats stats;
  stats.dataset_size = static_cast<uint64_t>(n);
  try {
    m.model->train();
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    if (optimizer_kind == static_cast<int>(LmOptimizer::kAdam)) {
      optimizer = std::make_unique<torch::optim::Adam>(m.parameters,
                                                       torch::optim::AdamOptions(config.lr)
                                                           .betas({0.9, 0.99})
                                                           .eps(1e-8)
                                                           .weight_decay(config.weight_decay));
    } else {
      optimizer =
          std::make_unique<torch::optim::SGD>(m.parameters, torch::optim::SGDOptions(config.lr)
                                                                .momentum(config.momentum)
                                                                .weight_decay(config.weight_decay));
    }
    const bool prox = config.prox_mu > 0;
    std::vector<torch::Tensor> anchor;
    if (prox) {
      if (!m.has_anchor) FL_RETURN_IF_ERROR(m.bridge->Read(&m.anchor));
      m.has_anchor = true;
      for (size_t i = 0; i < m.parameters.size(); ++i) {
        std::span<const float> a = m.anchor.tensor(i);
        torch::Tensor t =
            torch::from_blob(const_cast<float*>(a.data()), m.parameters[i].sizes(), torch::kFloat);
        anchor.push_back(m.device.is_cpu() ? t : t.to(m.device));
      }
    }
    const float mu = static_cast<float>(config.prox_mu);
    SeededRng rng(config.seed);
    std::vector<int64_t> tokens(static_cast<size_t>(batch * window));
    torch::Tensor loss_sum =
        torch::zeros({}, torch::TensorOptions().device(m.device).dtype(torch::kDouble));
    for (int64_t step = 0; step < steps; ++step) {
      if (cancel.cancelled()) return Status::Cancelled("training cancelled");
      double lr = config.lr;
      if (schedule == static_cast<int>(LmSchedule::kCosine) && steps > 1) {
        const double progress = static_cast<double>(step) / static_cast<double>(steps - 1);
        lr = config.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
      }
      if (warmup > 0 && step < warmup) lr *= static_cast<double>(step + 1) / (warmup + 1);
      for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);

      for (int64_t b = 0; b < batch; ++b) {
        const int64_t offset =
            static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(n - window + 1)));
        for (int64_t j = 0; j < window; ++j) {
          tokens[b * window + j] = static_cast<unsigned char>(m.train[offset + j]);
        }
      }
      torch::Tensor t = m.ToDevice(tokens, batch, window);
      torch::Tensor x = t.narrow(1, 0, window - 1);
      torch::Tensor y = t.narrow(1, 1, window - 1);
      optimizer->zero_grad();
      torch::Tensor logits = m.model->forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits.reshape({-1, GptOptions::kVocab}), y.reshape({-1}));
      loss.backward();
      if (prox) {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < m.parameters.size(); ++i) {
          m.parameters[i].mutable_grad().add_(m.parameters[i], mu).sub_(anchor[i], mu);
        }
      }
      if (clip_norm > 0) torch::nn::utils::clip_grad_norm_(m.parameters, clip_norm);
      optimizer->step();
      loss_sum.add_(loss.detach());
      stats.num_examples += static_cast<uint64_t>(batch * predicted_per_window);
      if (m.step_callback) m.step_callback(step, loss.item<double>());
    }
    stats.mean_loss = loss_sum.item<double>() / static_cast<double>(steps);
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "LmTrainer::Train");
  }
  return stats;
}

Result<EvalStats> LmTrainer::Evaluate() {
  uint64_t bytes = 0;
  for (std::string_view t : impl_->heldout) bytes += t.size() > 1 ? t.size() - 1 : 0;
  if (bytes == 0) return Status::FailedPrecondition("LmTrainer::Evaluate: no held-out text bound");
  return EvaluateTexts(impl_->heldout);
}

Result<EvalStats> LmTrainer::EvaluateTexts(const std::vector<std::string_view>& texts) {
  Impl& m = *impl_;
  const int64_t context = m.model->options().context;
  std::vector<std::string_view> chunks;
  for (std::string_view text : texts) {
    for (size_t begin = 0; begin + 1 < text.size(); begin += static_cast<size_t>(context)) {
      chunks.push_back(text.substr(begin, static_cast<size_t>(context) + 1));
    }
  }
  EvalStats stats;
  if (chunks.empty()) return stats;
  try {
    torch::NoGradGuard no_grad;
    m.model->eval();
    torch::TensorOptions on_device = torch::TensorOptions().device(m.device);
    torch::Tensor loss_sum = torch::zeros({}, on_device.dtype(torch::kDouble));
    torch::Tensor correct = torch::zeros({}, on_device.dtype(torch::kLong));
    const size_t eb = static_cast<size_t>(m.options.eval_batch_size);
    std::vector<int64_t> inputs, targets;
    for (size_t start = 0; start < chunks.size(); start += eb) {
      const size_t rows = std::min(eb, chunks.size() - start);
      int64_t cols = 0;
      for (size_t r = 0; r < rows; ++r) {
        cols = std::max<int64_t>(cols, static_cast<int64_t>(chunks[start + r].size()) - 1);
      }
      inputs.assign(rows * static_cast<size_t>(cols), 0);
      targets.assign(rows * static_cast<size_t>(cols), kIgnoreTarget);
      for (size_t r = 0; r < rows; ++r) {
        std::string_view c = chunks[start + r];
        for (size_t j = 0; j + 1 < c.size(); ++j) {
          inputs[r * cols + j] = static_cast<unsigned char>(c[j]);
          targets[r * cols + j] = static_cast<unsigned char>(c[j + 1]);
        }
        stats.num_examples += c.size() - 1;
      }
      torch::Tensor x = m.ToDevice(inputs, static_cast<int64_t>(rows), cols);
      torch::Tensor y = m.ToDevice(targets, static_cast<int64_t>(rows), cols).reshape({-1});
      torch::Tensor logits = m.model->forward(x).reshape({-1, GptOptions::kVocab});
      loss_sum.add_(torch::nn::functional::cross_entropy(
          logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)));
      correct.add_(logits.argmax(1).eq(y).sum());  // padding targets (-100) never match
    }
    m.model->train();
    const double n = static_cast<double>(stats.num_examples);
    stats.loss = loss_sum.item<double>() / n;
    stats.accuracy = static_cast<double>(correct.item<int64_t>()) / n;
  } catch (const std::exception& e) {
    m.model->train();
    return TorchErrorStatus(e, "LmTrainer::EvaluateTexts");
  }
  return stats;
}

}  // namespace fl::internal
