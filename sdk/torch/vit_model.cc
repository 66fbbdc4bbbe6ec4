#include "torch/vit_model.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <span>

namespace fl::internal {
namespace {

constexpr double kSsfInitStd = 0.02;
constexpr double kTokenInitStd = 0.02;

// Applies point `i` of `ssf` to x, or returns x when there is no SSF.
torch::Tensor MaybeSsf(const torch::Tensor& x, const SsfApplied& ssf, size_t i) {
  return ssf.empty() ? x : ApplySsf(x, ssf.gamma[i], ssf.beta[i]);
}

// Points per block: norm1, qkv, proj, norm2, fc1, fc2.
constexpr size_t kPointsPerBlock = 6;

}  // namespace

std::vector<SsfPoint> SsfPoints(const VitOptions& o) {
  std::vector<SsfPoint> points;
  points.push_back({"embed", o.width});
  for (int64_t j = 0; j < o.depth; ++j) {
    const std::string b = "blocks." + std::to_string(j) + ".";
    points.push_back({b + "norm1", o.width});
    points.push_back({b + "qkv", 3 * o.width});
    points.push_back({b + "proj", o.width});
    points.push_back({b + "norm2", o.width});
    points.push_back({b + "fc1", o.mlp_ratio * o.width});
    points.push_back({b + "fc2", o.width});
  }
  points.push_back({"norm", o.width});
  return points;
}

torch::Tensor ApplySsf(const torch::Tensor& x, const torch::Tensor& gamma,
                       const torch::Tensor& beta) {
  if (gamma.dim() == 1) return torch::addcmul(beta, x, gamma);
  // Per instance: [batch, dim] -> [batch, 1, dim] broadcasts over the tokens.
  return torch::addcmul(beta.unsqueeze(1), x, gamma.unsqueeze(1));
}

namespace {

// One insertion point's parameters, "gamma" and "beta".
class SsfScaleShiftImpl final : public torch::nn::Module {
 public:
  explicit SsfScaleShiftImpl(int64_t dim)
      : gamma(register_parameter("gamma", torch::ones({dim}))),
        beta(register_parameter("beta", torch::zeros({dim}))) {}
  torch::Tensor gamma, beta;
};
TORCH_MODULE(SsfScaleShift);

}  // namespace

SsfSetImpl::SsfSetImpl(const VitOptions& options) {
  // Parameter names cannot hold dots, so each point is a submodule and the blocks a
  // ModuleList: the names come out as "embed.gamma", "blocks.<j>.qkv.beta", ...
  auto add = [&](torch::nn::Module& parent, const std::string& name, int64_t dim) {
    SsfScaleShift point = parent.register_module(name, SsfScaleShift(dim));
    gammas_.push_back(point->gamma);
    betas_.push_back(point->beta);
  };
  add(*this, "embed", options.width);
  torch::nn::ModuleList blocks;
  for (int64_t j = 0; j < options.depth; ++j) {
    auto block = std::make_shared<torch::nn::Module>();
    add(*block, "norm1", options.width);
    add(*block, "qkv", 3 * options.width);
    add(*block, "proj", options.width);
    add(*block, "norm2", options.width);
    add(*block, "fc1", options.mlp_ratio * options.width);
    add(*block, "fc2", options.width);
    blocks->push_back(block);
  }
  register_module("blocks", blocks);
  add(*this, "norm", options.width);
  Reinitialize();
}

void SsfSetImpl::Reinitialize() {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& g : gammas_) g.normal_(1.0, kSsfInitStd);
  for (torch::Tensor& b : betas_) b.normal_(0.0, kSsfInitStd);
}

VitBlockImpl::VitBlockImpl(const VitOptions& o)
    : heads_(o.heads),
      norm1_(torch::nn::LayerNormOptions({o.width})),
      qkv_(o.width, 3 * o.width),
      proj_(o.width, o.width),
      norm2_(torch::nn::LayerNormOptions({o.width})),
      fc1_(o.width, o.mlp_ratio * o.width),
      fc2_(o.mlp_ratio * o.width, o.width) {
  register_module("norm1", norm1_);
  register_module("qkv", qkv_);
  register_module("proj", proj_);
  register_module("norm2", norm2_);
  register_module("fc1", fc1_);
  register_module("fc2", fc2_);
}

torch::Tensor VitBlockImpl::forward(torch::Tensor x, const SsfApplied& ssf, size_t first) {
  const int64_t batch = x.size(0), tokens = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads_;
  torch::Tensor h = MaybeSsf(norm1_->forward(x), ssf, first);
  h = MaybeSsf(qkv_->forward(h), ssf, first + 1);
  // [B, T, 3, H, Dh] -> three [B, H, T, Dh]
  torch::Tensor qkv = h.view({batch, tokens, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  torch::Tensor scores =
      torch::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(head_dim)));
  torch::Tensor attended = torch::matmul(torch::softmax(scores, /*dim=*/-1), v);
  attended = attended.transpose(1, 2).reshape({batch, tokens, width});
  x = x + MaybeSsf(proj_->forward(attended), ssf, first + 2);
  h = MaybeSsf(norm2_->forward(x), ssf, first + 3);
  h = torch::gelu(MaybeSsf(fc1_->forward(h), ssf, first + 4));
  return x + MaybeSsf(fc2_->forward(h), ssf, first + 5);
}

TinyVitImpl::TinyVitImpl(const VitOptions& o)
    : options_(o),
      patch_embed_(torch::nn::Conv2dOptions(1, o.width, o.patch).stride(o.patch)),
      blocks_(),
      norm_(torch::nn::LayerNormOptions({o.width})),
      head_(o.width, o.classes) {
  const int64_t side = o.image / o.patch;
  register_module("patch_embed", patch_embed_);
  cls_ = register_parameter("cls", torch::zeros({1, 1, o.width}));
  pos_ = register_parameter("pos", torch::zeros({1, side * side + 1, o.width}));
  {
    torch::NoGradGuard no_grad;
    cls_.normal_(0.0, kTokenInitStd);
    pos_.normal_(0.0, kTokenInitStd);
  }
  if (o.prompts > 0) {
    prompts_ = register_parameter("prompts", torch::zeros({1, o.prompts, o.width}));
    torch::NoGradGuard no_grad;
    prompts_.normal_(0.0, kTokenInitStd);
  }
  for (int64_t j = 0; j < o.depth; ++j) blocks_->push_back(VitBlock(o));
  register_module("blocks", blocks_);
  register_module("norm", norm_);
  register_module("head", head_);
}

torch::Tensor TinyVitImpl::Embed(torch::Tensor x, const SsfApplied& ssf) {
  const int64_t batch = x.size(0);
  torch::Tensor tokens = patch_embed_->forward(x).flatten(2).transpose(1, 2);  // [B, P, W]
  tokens = MaybeSsf(tokens, ssf, 0);
  tokens = torch::cat({cls_.expand({batch, 1, options_.width}), tokens}, 1) + pos_;
  if (!prompts_.defined()) return tokens;
  // As visual prompt tuning: the prompts carry no position and follow CLS.
  return torch::cat({tokens.narrow(1, 0, 1), prompts_.expand({batch, -1, -1}),
                     tokens.narrow(1, 1, tokens.size(1) - 1)},
                    1);
}

torch::Tensor TinyVitImpl::RunBlocks(torch::Tensor tokens, const SsfApplied& ssf, int64_t begin,
                                     int64_t end) {
  for (int64_t j = begin; j < end; ++j) {
    const size_t point = 1 + static_cast<size_t>(j) * kPointsPerBlock;
    tokens = blocks_[static_cast<size_t>(j)]->as<VitBlockImpl>()->forward(tokens, ssf, point);
  }
  return tokens;
}

torch::Tensor TinyVitImpl::Pool(torch::Tensor tokens, const SsfApplied& ssf) {
  torch::Tensor cls = norm_->forward(tokens.select(1, 0));  // [B, W]
  if (ssf.empty()) return cls;
  const size_t point = ssf.gamma.size() - 1;  // "norm", the last point
  return ApplySsf(cls.unsqueeze(1), ssf.gamma[point], ssf.beta[point]).squeeze(1);
}

torch::Tensor TinyVitImpl::Features(torch::Tensor x, const SsfApplied& ssf) {
  return Pool(RunBlocks(Embed(x, ssf), ssf, 0, options_.depth), ssf);
}

torch::Tensor TinyVitImpl::forward(torch::Tensor x) { return head_->forward(Features(x, {})); }

Result<TinyVit> CreateTinyVit(const VitOptions& options, uint64_t seed) {
  if (options.image % options.patch != 0 || options.width % options.heads != 0 ||
      options.depth < 1 || options.classes < 2 || options.mlp_ratio < 1) {
    return Status::InvalidArgument("bad ViT shape: patch must divide image, heads width, "
                                   "depth >= 1, classes >= 2, mlp_ratio >= 1");
  }
  try {
    std::lock_guard<std::mutex> lock(InitMutex());
    torch::manual_seed(seed);
    return TinyVit(options);
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "create ViT");
  }
}

Result<VitOptions> ParseVitModelName(const std::string& name) {
  VitOptions o;
  if (name == "vit-tiny") return o;
  if (!name.starts_with("vit:")) {
    return Status::InvalidArgument("not a ViT name: \"" + name +
                                   "\" (vit-tiny or vit:width=W,depth=D,heads=H,patch=P,"
                                   "mlp_ratio=R)");
  }
  std::string rest = name.substr(4);
  size_t start = 0;
  while (start < rest.size()) {
    size_t end = rest.find(',', start);
    if (end == std::string::npos) end = rest.size();
    const std::string item = rest.substr(start, end - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return Status::InvalidArgument("ViT name: \"" + item + "\" is not key=value");
    const std::string key = item.substr(0, eq);
    int64_t value = 0;
    try {
      size_t used = 0;
      value = std::stoll(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      return Status::InvalidArgument("ViT name: \"" + item + "\" needs an integer value");
    }
    if (value < (key == "prompts" ? 0 : 1) || value > 4096) {
      return Status::InvalidArgument("ViT name: " + key + " out of range (at most 4096)");
    }
    if (key == "width") o.width = value;
    else if (key == "depth") o.depth = value;
    else if (key == "heads") o.heads = value;
    else if (key == "patch") o.patch = value;
    else if (key == "mlp_ratio") o.mlp_ratio = value;
    else if (key == "prompts") o.prompts = value;
    else return Status::InvalidArgument("ViT name: unknown key \"" + key + "\"");
    start = end + 1;
  }
  if (o.image % o.patch != 0) return Status::InvalidArgument("ViT name: patch must divide 28");
  if (o.width % o.heads != 0) return Status::InvalidArgument("ViT name: heads must divide width");
  return o;
}

std::string VitBodyName(const VitOptions& o, int64_t begin, int64_t end) {
  return "vit:width=" + std::to_string(o.width) + ",depth=" + std::to_string(o.depth) +
         ",heads=" + std::to_string(o.heads) + ",mlp_ratio=" + std::to_string(o.mlp_ratio) +
         ",prompts=" + std::to_string(o.prompts) + " blocks [" + std::to_string(begin) + ", " +
         std::to_string(end) + ")";
}

bool IsVitModelName(const std::string& name) {
  return name == "vit-tiny" || name.starts_with("vit:");
}

namespace {

// `backbone` (a ViT without prompts) with the prompt tokens of a ViT of `options` drawn
// from `prompt_seed`, as TinyVit initializes them.
Result<ParamSet> AddPromptTokens(const ParamSet& backbone, const VitOptions& options,
                                 uint64_t prompt_seed) {
  FL_ASSIGN_OR_RETURN(TinyVit vit, CreateTinyVit(options, prompt_seed));
  ParamSet out;
  FL_RETURN_IF_ERROR(ParamBridge(*vit).Read(&out));
  const Layout& from = backbone.layout();
  for (size_t t = 0; t < from.num_tensors(); ++t) {
    const int index = out.layout().Find(from.tensors()[t].name);
    if (index < 0) return Status::Internal("AddPromptTokens: no " + from.tensors()[t].name);
    std::span<const float> values = backbone.tensor(t);
    std::copy(values.begin(), values.end(), out.tensor(static_cast<size_t>(index)).begin());
  }
  return out;
}

}  // namespace

Result<ParamSet> ReadVitBackbone(const std::string& path, const VitOptions& options,
                                 const std::string& model_name, uint64_t prompt_seed) {
  FL_ASSIGN_OR_RETURN(ParamSet backbone, ReadModelFile(path));
  FL_ASSIGN_OR_RETURN(Layout full, FullVitLayout(options));
  if (backbone.layout().hash() == full.hash()) return backbone;
  if (options.prompts > 0) {
    VitOptions plain = options;
    plain.prompts = 0;
    FL_ASSIGN_OR_RETURN(Layout without_prompts, FullVitLayout(plain));
    if (backbone.layout().hash() == without_prompts.hash()) {
      return AddPromptTokens(backbone, options, prompt_seed);
    }
  }
  return Status::InvalidArgument(path + " is not a " + model_name + " ViT (" +
                                 std::to_string(backbone.size()) + " parameters, expected " +
                                 std::to_string(full.total_numel()) + ")");
}

Result<Layout> FullVitLayout(const VitOptions& options) {
  FL_ASSIGN_OR_RETURN(TinyVit vit, CreateTinyVit(options, /*seed=*/0));
  return ParamBridge(*vit).layout();
}

}  // namespace fl::internal
