#include "torch/models.h"

#include <cstring>
#include <mutex>

#include "codec/param_io.h"
#include "torch/model_zoo.h"

namespace fl::internal {
namespace {

// torch::manual_seed seeds a process-wide generator; construction under this lock makes
// "seed -> weights" reproducible even when several threads build models at once.
std::mutex& InitMutex() {
  static std::mutex mu;
  return mu;
}

bool IsCpu(const torch::Tensor& t) { return t.device().is_cpu(); }

}  // namespace

CnnImpl::CnnImpl()
    : conv1_(torch::nn::Conv2dOptions(/*in_channels=*/1, /*out_channels=*/16, /*kernel_size=*/5)
                 .padding(2)),
      conv2_(torch::nn::Conv2dOptions(/*in_channels=*/16, /*out_channels=*/32, /*kernel_size=*/5)
                 .padding(2)),
      fc1_(/*in_features=*/32 * 7 * 7, /*out_features=*/128),
      fc2_(/*in_features=*/128, /*out_features=*/10) {
  register_module("conv1", conv1_);
  register_module("conv2", conv2_);
  register_module("fc1", fc1_);
  register_module("fc2", fc2_);
}

torch::Tensor CnnImpl::forward(torch::Tensor x) {
  x = torch::max_pool2d(torch::relu(conv1_->forward(x)), /*kernel_size=*/2);
  x = torch::max_pool2d(torch::relu(conv2_->forward(x)), /*kernel_size=*/2);
  x = torch::relu(fc1_->forward(x.flatten(/*start_dim=*/1)));
  return fc2_->forward(x);
}

MlpImpl::MlpImpl()
    : fc1_(/*in_features=*/28 * 28, /*out_features=*/128),
      fc2_(/*in_features=*/128, /*out_features=*/10) {
  register_module("fc1", fc1_);
  register_module("fc2", fc2_);
}

torch::Tensor MlpImpl::forward(torch::Tensor x) {
  return fc2_->forward(torch::relu(fc1_->forward(x.flatten(/*start_dim=*/1))));
}

std::vector<std::string> ModelNames() { return {"cnn", "mlp"}; }

Result<std::shared_ptr<ImageClassifier>> CreateImageClassifier(const std::string& name,
                                                               uint64_t seed) {
  try {
    std::lock_guard<std::mutex> lock(InitMutex());
    torch::manual_seed(seed);
    if (name == "cnn") return std::shared_ptr<ImageClassifier>(Cnn().ptr());
    if (name == "mlp") return std::shared_ptr<ImageClassifier>(Mlp().ptr());
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "create model " + name);
  }
  std::string known;
  for (const std::string& n : ModelNames()) known += (known.empty() ? "" : ", ") + n;
  return Status::InvalidArgument("unknown model \"" + name + "\" (known: " + known + ")");
}

ParamBridge::ParamBridge(torch::nn::Module& module) {
  Layout layout;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    layout.Add(name, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
    tensors_.push_back(t);
  };
  for (const auto& item : module.named_parameters(/*recurse=*/true)) add(item.key(), item.value());
  num_parameters_ = tensors_.size();
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().is_floating_point()) add(item.key(), item.value());
  }
  layout_ = std::make_shared<const Layout>(std::move(layout));
}

Status ParamBridge::Read(ParamSet* out) const {
  if (out->empty() || out->layout().hash() != layout_->hash() ||
      out->size() != layout_->total_numel()) {
    *out = ParamSet(*layout_);
  }
  try {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const torch::Tensor& t = tensors_[i];
      std::span<float> dst = out->tensor(i);
      if (IsCpu(t) && t.is_contiguous() && t.scalar_type() == torch::kFloat) {
        std::memcpy(dst.data(), t.data_ptr<float>(), dst.size() * sizeof(float));
      } else {
        torch::Tensor host = torch::from_blob(dst.data(), t.sizes(), torch::kFloat);
        host.copy_(t);
      }
    }
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "ParamBridge::Read");
  }
  return Status::Ok();
}

Status ParamBridge::Write(const ParamSet& params) {
  if (params.layout().hash() != layout_->hash() || params.size() != layout_->total_numel()) {
    return Status::InvalidArgument("parameters do not match the model's layout (hash " +
                                   std::to_string(params.layout().hash()) + ", expected " +
                                   std::to_string(layout_->hash()) + ")");
  }
  try {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      torch::Tensor& t = tensors_[i];
      std::span<const float> src = params.tensor(i);
      if (IsCpu(t) && t.is_contiguous() && t.scalar_type() == torch::kFloat) {
        std::memcpy(t.data_ptr<float>(), src.data(), src.size() * sizeof(float));
      } else {
        t.copy_(torch::from_blob(const_cast<float*>(src.data()), t.sizes(), torch::kFloat));
      }
    }
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "ParamBridge::Write");
  }
  return Status::Ok();
}

Status TorchErrorStatus(const std::exception& e, std::string_view context) {
  // c10::Error::what() carries a C++ backtrace; the first line is the message.
  std::string what = e.what();
  size_t newline = what.find('\n');
  if (newline != std::string::npos) what.resize(newline);
  return Status::Internal(std::string(context) + ": LibTorch error: " + what);
}

Result<ParamSet> InitialModelParameters(const std::string& name, uint64_t seed) {
  FL_ASSIGN_OR_RETURN(std::shared_ptr<ImageClassifier> model, CreateImageClassifier(name, seed));
  ParamBridge bridge(*model);
  ParamSet params;
  FL_RETURN_IF_ERROR(bridge.Read(&params));
  return params;
}

Status WriteInitialModel(const std::string& name, uint64_t seed, const std::string& path,
                         Env* env) {
  if (env == nullptr) env = Env::Default();
  FL_ASSIGN_OR_RETURN(ParamSet params, InitialModelParameters(name, seed));
  return env->WriteFileAtomic(path, SerializeParamSet(params), /*sync=*/true);
}

}  // namespace fl::internal
