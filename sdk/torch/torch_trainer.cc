#include "torch/torch_trainer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/logging.h"
#include "data/sampling.h"
#include "torch/models.h"
#include "torch/tensor_image_data.h"

namespace fl::internal {

Result<std::string> ResolveTorchDevice(const std::string& requested) {
  if (requested == "cpu") return std::string("cpu");
  if (requested != "cuda" && requested != "auto") {
    return Status::InvalidArgument("unknown device \"" + requested +
                                   "\" (expected auto, cpu or cuda)");
  }
  bool available = false;
  try {
    available = torch::cuda::is_available();
  } catch (const std::exception&) {
    available = false;  // a broken driver counts as no device
  }
  if (available) return std::string("cuda");
  if (requested == "cuda") {
    return Status::FailedPrecondition(
        "--device cuda: this LibTorch build has no CUDA support or no CUDA device is visible "
        "(use --device cpu, or build against a CUDA-enabled LibTorch)");
  }
  static std::once_flag logged;
  std::call_once(logged, [] { FL_LOG(INFO) << "device auto: CUDA not available, using CPU"; });
  return std::string("cpu");
}

Result<std::shared_ptr<const TensorImageData>> MakeTensorImageData(const ImageDataset& dataset,
                                                                   const std::string& device) {
  const int64_t n = dataset.size();
  if (n == 0) return Status::InvalidArgument("empty dataset");
  if (static_cast<int64_t>(dataset.images.size()) != n * dataset.rows * dataset.cols) {
    return Status::InvalidArgument("dataset images and labels disagree in count");
  }
  try {
    torch::Tensor pixels = torch::from_blob(const_cast<uint8_t*>(dataset.images.data()),
                                            {n, 1, dataset.rows, dataset.cols}, torch::kUInt8);
    torch::Tensor images = pixels.to(torch::kFloat).div_(255.0f).sub_(kPixelMean).div_(kPixelStd);
    torch::Tensor labels =
        torch::from_blob(const_cast<uint8_t*>(dataset.labels.data()), {n}, torch::kUInt8)
            .to(torch::kLong);
    torch::Device dev(device);
    if (!dev.is_cpu()) {
      images = images.to(dev);
      labels = labels.to(dev);
    }
    return std::shared_ptr<const TensorImageData>(
        std::make_shared<TensorImageData>(std::move(images), std::move(labels)));
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "MakeTensorImageData");
  }
}

int64_t TensorImageDataSize(const TensorImageData& data) { return data.size(); }

Result<std::shared_ptr<const TensorImageData>> WithFlippedLabels(const TensorImageData& data) {
  try {
    const int64_t top = data.labels.max().item<int64_t>();
    torch::Tensor flipped = data.labels.neg().add_(top);
    return std::shared_ptr<const TensorImageData>(
        std::make_shared<TensorImageData>(data.images, std::move(flipped)));
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "WithFlippedLabels");
  }
}

struct TorchTrainer::Impl {
  TorchTrainerOptions options;
  torch::Device device{torch::kCPU};
  std::shared_ptr<const TensorImageData> train;
  std::shared_ptr<const TensorImageData> eval;
  std::shared_ptr<ImageClassifier> model;
  std::unique_ptr<ParamBridge> bridge;
  std::vector<torch::Tensor> parameters;  // trainable tensors, layout order
  std::vector<int64_t> bound;
  std::vector<int64_t> order;             // scratch: this epoch's permutation
  ParamSet anchor;                         // last SetParameters (FedProx)
  bool has_anchor = false;

  // Evaluates data[begin, end), or the examples listed in `subset` when it is set.
  Result<EvalStats> EvaluateOn(const TensorImageData& data, const std::vector<int64_t>* subset,
                               int64_t begin, int64_t end);
};

TorchTrainer::TorchTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TorchTrainer::~TorchTrainer() = default;

Result<std::unique_ptr<TorchTrainer>> TorchTrainer::Create(
    const TorchTrainerOptions& options, std::shared_ptr<const TensorImageData> train,
    std::shared_ptr<const TensorImageData> eval) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (options.eval_batch_size < 1) return Status::InvalidArgument("eval_batch_size must be >= 1");
  try {
    impl->device = torch::Device(options.device);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("bad device \"" + options.device + "\"");
  }
  for (const auto* data : {train.get(), eval.get()}) {
    if (data != nullptr && data->images.device() != impl->device) {
      return Status::InvalidArgument("dataset lives on " + data->images.device().str() +
                                     " but the trainer runs on " + impl->device.str());
    }
  }
  FL_ASSIGN_OR_RETURN(impl->model, CreateImageClassifier(options.model, options.init_seed));
  try {
    impl->model->to(impl->device);
    impl->model->train();
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "TorchTrainer::Create");
  }
  impl->bridge = std::make_unique<ParamBridge>(*impl->model);
  impl->parameters.assign(impl->bridge->tensors().begin(),
                          impl->bridge->tensors().begin() + impl->bridge->num_parameters());
  impl->train = std::move(train);
  impl->eval = std::move(eval);
  return std::unique_ptr<TorchTrainer>(new TorchTrainer(std::move(impl)));
}

Status TorchTrainer::BindExamples(std::vector<int64_t> indices) {
  FL_RETURN_IF_ERROR(CheckExampleIndices(indices, impl_->train ? impl_->train->size() : 0));
  impl_->bound = std::move(indices);
  return Status::Ok();
}

size_t TorchTrainer::num_bound_examples() const { return impl_->bound.size(); }

const Layout& TorchTrainer::layout() const { return impl_->bridge->layout(); }

Status TorchTrainer::GetParameters(ParamSet* out) { return impl_->bridge->Read(out); }

Status TorchTrainer::SetParameters(const ParamSet& params) {
  FL_RETURN_IF_ERROR(impl_->bridge->Write(params));
  impl_->anchor = params;
  impl_->has_anchor = true;
  return Status::Ok();
}

Result<TrainStats> TorchTrainer::Train(const TrainConfig& config, const CancelToken& cancel) {
  Impl& m = *impl_;
  if (m.bound.empty()) return Status::FailedPrecondition("TorchTrainer::Train: no examples bound");
  if (config.batch_size < 1) return Status::InvalidArgument("batch_size must be >= 1");
  if (!(config.lr > 0)) return Status::InvalidArgument("lr must be > 0");
  if (config.local_steps < 1 && config.local_epochs < 1) {
    return Status::InvalidArgument("one of local_steps and local_epochs must be >= 1");
  }
  if (config.prox_mu < 0) return Status::InvalidArgument("prox_mu must be >= 0");
  const int64_t n = static_cast<int64_t>(m.bound.size());
  const int64_t batch = config.batch_size;
  const int64_t steps = config.local_steps > 0
                            ? config.local_steps
                            : config.local_epochs * ((n + batch - 1) / batch);
  TrainStats stats;
  stats.dataset_size = static_cast<uint64_t>(n);
  try {
    m.model->train();
    torch::optim::SGD optimizer(m.parameters, torch::optim::SGDOptions(config.lr)
                                                  .momentum(config.momentum)
                                                  .weight_decay(config.weight_decay));
    const bool prox = config.prox_mu > 0;
    std::vector<torch::Tensor> anchor;
    if (prox) {
      if (!m.has_anchor) FL_RETURN_IF_ERROR(m.bridge->Read(&m.anchor));
      m.has_anchor = true;
      for (size_t i = 0; i < m.parameters.size(); ++i) {
        std::span<const float> a = m.anchor.tensor(i);
        torch::Tensor t = torch::from_blob(const_cast<float*>(a.data()),
                                           m.parameters[i].sizes(), torch::kFloat);
        anchor.push_back(m.device.is_cpu() ? t : t.to(m.device));
      }
    }
    SeededRng rng(config.seed);
    m.order = m.bound;
    int64_t pos = n;  // forces a shuffle before the first step
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(m.device));
    const float mu = static_cast<float>(config.prox_mu);
    for (int64_t step = 0; step < steps; ++step) {
      if (cancel.cancelled()) return Status::Cancelled("training cancelled");
      if (pos >= n) {
        rng.Shuffle(m.order);
        pos = 0;
      }
      const int64_t b = std::min(batch, n - pos);
      torch::Tensor idx = torch::from_blob(m.order.data() + pos, {b}, torch::kLong);
      if (!m.device.is_cpu()) idx = idx.to(m.device);
      torch::Tensor x = m.train->images.index_select(0, idx);
      torch::Tensor y = m.train->labels.index_select(0, idx);
      optimizer.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(m.model->forward(x), y);
      loss.backward();
      if (prox) {
        // d/dw (mu/2)||w - a||^2 = mu (w - a), added in place without a temporary.
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < m.parameters.size(); ++i) {
          m.parameters[i].mutable_grad().add_(m.parameters[i], mu).sub_(anchor[i], mu);
        }
      }
      optimizer.step();
      loss_sum.add_(loss.detach(), static_cast<double>(b));
      pos += b;
      stats.num_examples += static_cast<uint64_t>(b);
    }
    stats.mean_loss = stats.num_examples > 0
                          ? loss_sum.item<double>() / static_cast<double>(stats.num_examples)
                          : 0.0;
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "TorchTrainer::Train");
  }
  return stats;
}

EvalStats EvaluateClassifier(const TensorImageData& data, const std::vector<int64_t>* subset,
                             int64_t begin, int64_t end, int64_t batch,
                             const BatchLogits& logits_of) {
  const int64_t n = subset ? static_cast<int64_t>(subset->size()) : end - begin;
  EvalStats stats;
  if (n == 0) return stats;
  torch::NoGradGuard no_grad;
  const torch::TensorOptions on_device = torch::TensorOptions().device(data.images.device());
  torch::Tensor loss_sum = torch::zeros({}, on_device.dtype(torch::kDouble));
  torch::Tensor correct = torch::zeros({}, on_device.dtype(torch::kLong));
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t len = std::min(batch, n - start);
    torch::Tensor idx, x, y;
    if (subset) {
      idx = torch::from_blob(const_cast<int64_t*>(subset->data()) + start, {len}, torch::kLong)
                .to(on_device.device());
      x = data.images.index_select(0, idx);
      y = data.labels.index_select(0, idx);
    } else {
      idx = torch::arange(begin + start, begin + start + len, on_device.dtype(torch::kLong));
      x = data.images.narrow(0, begin + start, len);
      y = data.labels.narrow(0, begin + start, len);
    }
    torch::Tensor logits = logits_of(x, idx);
    loss_sum.add_(torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)));
    correct.add_(logits.argmax(1).eq(y).sum());
  }
  stats.num_examples = static_cast<uint64_t>(n);
  stats.loss = loss_sum.item<double>() / static_cast<double>(n);
  stats.accuracy = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(n);
  return stats;
}

Result<EvalStats> TorchTrainer::Impl::EvaluateOn(const TensorImageData& data,
                                                 const std::vector<int64_t>* subset,
                                                 int64_t begin, int64_t end) {
  try {
    model->eval();
    EvalStats stats =
        EvaluateClassifier(data, subset, begin, end, options.eval_batch_size,
                           [&](const torch::Tensor& x, const torch::Tensor&) { return model->forward(x); });
    model->train();
    return stats;
  } catch (const std::exception& e) {
    model->train();
    return TorchErrorStatus(e, "TorchTrainer::Evaluate");
  }
}

Result<EvalStats> TorchTrainer::Evaluate() {
  if (impl_->eval) return impl_->EvaluateOn(*impl_->eval, nullptr, 0, impl_->eval->size());
  if (impl_->bound.empty()) {
    return Status::FailedPrecondition("TorchTrainer::Evaluate: no eval set and no examples bound");
  }
  return impl_->EvaluateOn(*impl_->train, &impl_->bound, 0, 0);
}

Result<EvalStats> TorchTrainer::EvaluateRange(int64_t begin, int64_t end) {
  if (!impl_->eval) return Status::FailedPrecondition("TorchTrainer::EvaluateRange: no eval set");
  FL_RETURN_IF_ERROR(CheckEvalRange(begin, end, impl_->eval->size()));
  return impl_->EvaluateOn(*impl_->eval, nullptr, begin, end);
}

int64_t TorchTrainer::eval_size() const { return impl_->eval ? impl_->eval->size() : 0; }

void SetTorchThreads(int threads) {
  threads = std::max(threads, 1);
  torch::set_num_threads(threads);
  // OpenBLAS keeps its own pool; with several workers each calling BLAS it would
  // otherwise start one thread per core per call. Looked up at run time so the build
  // does not depend on which libblas.so.3 the system selected.
  using SetThreads = void (*)(int);
  static const auto openblas_set =
      reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (openblas_set != nullptr) openblas_set(threads);
}

}  // namespace fl::internal
