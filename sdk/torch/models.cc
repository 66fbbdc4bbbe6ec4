#include "torch/models.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>

#include "codec/param_io.h"
#include "torch/model_zoo.h"
#include "torch/vit_model.h"

namespace fl::internal {

std::mutex& InitMutex() {
  static std::mutex mu;
  return mu;
}

namespace {

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

LogRegImpl::LogRegImpl() : fc_(/*in_features=*/28 * 28, /*out_features=*/10) {
  register_module("fc", fc_);
}

torch::Tensor LogRegImpl::forward(torch::Tensor x) {
  return fc_->forward(x.flatten(/*start_dim=*/1));
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(int64_t width, int64_t heads)
    : heads_(heads),
      qkv_(/*in_features=*/width, /*out_features=*/3 * width),
      proj_(/*in_features=*/width, /*out_features=*/width) {
  register_module("qkv", qkv_);
  register_module("proj", proj_);
}

torch::Tensor CausalSelfAttentionImpl::forward(torch::Tensor x) {
  const int64_t batch = x.size(0), time = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads_;
  std::vector<torch::Tensor> qkv = qkv_->forward(x).chunk(3, /*dim=*/2);
  auto split_heads = [&](const torch::Tensor& t) {
    return t.view({batch, time, heads_, head_dim}).transpose(1, 2);  // [B, H, T, D]
  };
  torch::Tensor q = split_heads(qkv[0]), k = split_heads(qkv[1]), v = split_heads(qkv[2]);
  torch::Tensor scores =
      torch::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(head_dim)));
  // Built per call rather than registered: a registered float buffer would join the
  // ParamSet and be averaged like a weight.
  torch::Tensor future = torch::ones({time, time}, torch::TensorOptions()
                                                       .dtype(torch::kBool)
                                                       .device(x.device()))
                             .triu_(/*diagonal=*/1);
  scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  torch::Tensor y = torch::matmul(torch::softmax(scores, /*dim=*/-1), v);
  return proj_->forward(y.transpose(1, 2).contiguous().view({batch, time, width}));
}

GptBlockImpl::GptBlockImpl(int64_t width, int64_t heads)
    : ln1_(torch::nn::LayerNormOptions({width})),
      attn_(width, heads),
      ln2_(torch::nn::LayerNormOptions({width})),
      fc_(/*in_features=*/width, /*out_features=*/4 * width),
      out_(/*in_features=*/4 * width, /*out_features=*/width) {
  register_module("ln1", ln1_);
  register_module("attn", attn_);
  register_module("ln2", ln2_);
  register_module("fc", fc_);
  register_module("out", out_);
}

torch::Tensor GptBlockImpl::forward(torch::Tensor x) {
  x = x + attn_->forward(ln1_->forward(x));
  return x + out_->forward(torch::gelu(fc_->forward(ln2_->forward(x))));
}

GptImpl::GptImpl(const GptOptions& options)
    : options_(options),
      token_embedding_(/*num_embeddings=*/GptOptions::kVocab, /*embedding_dim=*/options.width),
      position_embedding_(/*num_embeddings=*/options.context, /*embedding_dim=*/options.width),
      ln_final_(torch::nn::LayerNormOptions({options.width})),
      head_(torch::nn::LinearOptions(options.width, GptOptions::kVocab).bias(false)) {
  register_module("token_embedding", token_embedding_);
  register_module("position_embedding", position_embedding_);
  for (int64_t i = 0; i < options.layers; ++i) blocks_->push_back(GptBlock(options.width, options.heads));
  register_module("blocks", blocks_);
  register_module("ln_final", ln_final_);
  register_module("head", head_);
  // GPT-2's initialization; the residual outputs are scaled down so the stream's variance
  // does not grow with depth.
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(options.layers));
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name.find("ln") != std::string::npos) continue;  // LayerNorm: ones and zeros
    if (name.ends_with(".bias")) {
      p.zero_();
    } else if (name.ends_with("proj.weight") || name.ends_with("out.weight")) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, 0.02);
    }
  }
}

torch::Tensor GptImpl::forward(torch::Tensor tokens) {
  const int64_t time = tokens.size(1);
  TORCH_CHECK(time <= options_.context, "GPT input of ", time, " positions exceeds the context ",
              options_.context);
  torch::Tensor x = token_embedding_->forward(tokens) +
                    position_embedding_->weight.narrow(0, 0, time).unsqueeze(0);
  for (const auto& block : *blocks_) x = block->as<GptBlock>()->forward(x);
  return head_->forward(ln_final_->forward(x));
}

std::vector<std::string> ModelNames() { return {"cnn", "mlp", "logreg", "gpt-tiny", "vit-tiny"}; }

bool IsGptModelName(const std::string& name) {
  return name == "gpt-tiny" || name.starts_with("gpt:");
}

Result<GptOptions> ParseGptModelName(const std::string& name) {
  GptOptions o;
  if (name == "gpt-tiny") return o;
  if (!name.starts_with("gpt:")) {
    return Status::InvalidArgument("\"" + name + "\" is not a GPT model name (gpt-tiny or "
                                   "gpt:layers=L,width=W,heads=H,context=C)");
  }
  std::string_view rest = std::string_view(name).substr(4);
  while (!rest.empty()) {
    const size_t comma = std::min(rest.find(','), rest.size());
    std::string_view item = rest.substr(0, comma);
    rest = rest.substr(std::min(comma + 1, rest.size()));
    const size_t eq = item.find('=');
    const std::string key(item.substr(0, eq));
    int64_t* field = key == "layers"    ? &o.layers
                     : key == "width"   ? &o.width
                     : key == "heads"   ? &o.heads
                     : key == "context" ? &o.context
                                        : nullptr;
    int64_t value = 0;
    const std::string text(eq == std::string_view::npos ? "" : item.substr(eq + 1));
    char* end = nullptr;
    if (!text.empty()) value = std::strtoll(text.c_str(), &end, 10);
    if (field == nullptr || text.empty() || *end != '\0' || value < 1 || value > 4096) {
      return Status::InvalidArgument("bad GPT model name \"" + name + "\" at \"" +
                                     std::string(item) +
                                     "\" (keys layers, width, heads, context; values 1..4096)");
    }
    *field = value;
  }
  if (o.width % o.heads != 0) {
    return Status::InvalidArgument("bad GPT model name \"" + name + "\": width " +
                                   std::to_string(o.width) + " is not a multiple of heads " +
                                   std::to_string(o.heads));
  }
  return o;
}

Result<std::shared_ptr<ImageClassifier>> CreateImageClassifier(const std::string& name,
                                                               uint64_t seed) {
  if (IsGptModelName(name)) {
    return Status::InvalidArgument("model \"" + name +
                                   "\" is a language model, not an image classifier");
  }
  try {
    std::lock_guard<std::mutex> lock(InitMutex());
    torch::manual_seed(seed);
    if (name == "cnn") return std::shared_ptr<ImageClassifier>(Cnn().ptr());
    if (name == "mlp") return std::shared_ptr<ImageClassifier>(Mlp().ptr());
    if (name == "logreg") return std::shared_ptr<ImageClassifier>(LogReg().ptr());
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "create model " + name);
  }
  if (IsVitModelName(name)) {
    FL_ASSIGN_OR_RETURN(VitOptions options, ParseVitModelName(name));
    FL_ASSIGN_OR_RETURN(TinyVit vit, CreateTinyVit(options, seed));
    return std::shared_ptr<ImageClassifier>(vit.ptr());
  }
  std::string known;
  for (const std::string& n : ModelNames()) known += (known.empty() ? "" : ", ") + n;
  return Status::InvalidArgument("unknown model \"" + name + "\" (known: " + known +
                                 ", gpt:layers=L,width=W,heads=H,context=C, vit:width=W,depth=D,heads=H)");
}

Result<std::shared_ptr<GptImpl>> CreateGpt(const std::string& name, uint64_t seed) {
  FL_ASSIGN_OR_RETURN(GptOptions options, ParseGptModelName(name));
  try {
    std::lock_guard<std::mutex> lock(InitMutex());
    torch::manual_seed(seed);
    return std::make_shared<GptImpl>(options);
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "create model " + name);
  }
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
  std::shared_ptr<torch::nn::Module> model;
  if (IsGptModelName(name)) {
    FL_ASSIGN_OR_RETURN(model, CreateGpt(name, seed));
  } else {
    FL_ASSIGN_OR_RETURN(model, CreateImageClassifier(name, seed));
  }
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
