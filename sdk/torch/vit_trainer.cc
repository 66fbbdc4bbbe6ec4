#include "torch/vit_trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "data/sampling.h"
#include "torch/models.h"
#include "torch/sfprompt_train.h"
#include "torch/tensor_image_data.h"
#include "torch/vit_model.h"

namespace fl::internal {
namespace {

constexpr double kKeyInitStd = 0.02;

// The head alone, under its name in the ViT ("head.weight", "head.bias").
class HeadOnlyImpl final : public torch::nn::Module {
 public:
  explicit HeadOnlyImpl(torch::nn::Linear head) { register_module("head", std::move(head)); }
};
TORCH_MODULE(HeadOnly);

// Federated SSF: one SSF set and its own head.
class SsfTunedImpl final : public torch::nn::Module {
 public:
  SsfTunedImpl(const VitOptions& o, const torch::nn::Linear& backbone_head)
      : ssf(register_module("ssf", SsfSet(o))),
        head(register_module("head", torch::nn::Linear(o.width, o.classes))) {
    torch::NoGradGuard no_grad;
    head->weight.copy_(backbone_head->weight);
    head->bias.copy_(backbone_head->bias);
  }
  SsfSet ssf;
  torch::nn::Linear head;
};
TORCH_MODULE(SsfTuned);

// One FedIns pool entry: an SSF set, a key and a head.
class PoolEntryImpl final : public torch::nn::Module {
 public:
  PoolEntryImpl(const VitOptions& o, const torch::nn::Linear& backbone_head)
      : ssf(register_module("ssf", SsfSet(o))),
        key(register_parameter("key", torch::zeros({o.width}))),
        head(register_module("head", torch::nn::Linear(o.width, o.classes))) {
    torch::NoGradGuard no_grad;
    // Truncated normal at two standard deviations, as the reference's keys: values
    // outside are drawn again (clamping would pile ~4.6% of them on the bounds).
    key.normal_(0.0, kKeyInitStd);
    for (torch::Tensor out = key.abs() > 2 * kKeyInitStd; out.any().item<bool>();
         out = key.abs() > 2 * kKeyInitStd) {
      key.masked_scatter_(out, torch::randn_like(key).mul_(kKeyInitStd).masked_select(out));
    }
    head->weight.copy_(backbone_head->weight);
    head->bias.copy_(backbone_head->bias);
  }
  SsfSet ssf;
  torch::Tensor key;
  torch::nn::Linear head;
};
TORCH_MODULE(PoolEntry);

class SsfPoolImpl final : public torch::nn::Module {
 public:
  SsfPoolImpl(const VitOptions& o, int64_t entries, const torch::nn::Linear& backbone_head) {
    for (int64_t i = 0; i < entries; ++i) {
      all.push_back(PoolEntry(o, backbone_head));
      list->push_back(all.back());
    }
    register_module("pool", list);
  }
  std::vector<PoolEntry> all;
  torch::nn::ModuleList list;
};
TORCH_MODULE(SsfPool);

// Reads TrainConfig::extra[key] into *out with `as` (TrainValue::AsInt64, ...) when the
// key is present. InvalidArgument naming the key for a value of another type.
template <typename T>
Status ReadExtra(const TrainConfig& config, const std::string& key,
                 Result<T> (TrainValue::*as)() const, T* out) {
  auto it = config.extra.find(key);
  if (it == config.extra.end()) return Status::Ok();
  Result<T> value = (it->second.*as)();
  if (!value.ok()) return value.status().WithContext(key);  // InvalidArgument
  *out = *value;
  return Status::Ok();
}

// The per-task FedIns settings: the trainer's options, overridden by TrainConfig::extra.
Result<SsfPoolOptions> PoolSettings(const SsfPoolOptions& base, const TrainConfig& config) {
  SsfPoolOptions o = base;
  FL_RETURN_IF_ERROR(ReadExtra(config, "fedins.top_k", &TrainValue::AsInt64, &o.top_k));
  FL_RETURN_IF_ERROR(ReadExtra(config, "fedins.lambda", &TrainValue::AsDouble, &o.lambda));
  FL_RETURN_IF_ERROR(ReadExtra(config, "fedins.batch_shared_ssf", &TrainValue::AsBool, &o.batch_shared_ssf));
  FL_RETURN_IF_ERROR(ReadExtra(config, "fedins.upload_min_fraction", &TrainValue::AsDouble, &o.upload_min_fraction));
  if (!(o.upload_min_fraction >= 0 && o.upload_min_fraction <= 1)) {
    return Status::InvalidArgument("fedins.upload_min_fraction must be in [0, 1]");
  }
  if (o.top_k < 1 || o.top_k > base.entries) {
    return Status::InvalidArgument("fedins.top_k must be in [1, " + std::to_string(base.entries) +
                                   "] (got " + std::to_string(o.top_k) + ")");
  }
  if (!(o.lambda >= 0 && o.lambda <= 1)) return Status::InvalidArgument("fedins.lambda must be in [0, 1]");
  return o;
}

// The per-task SFPrompt settings from TrainConfig::extra (defaults in SfPromptSettings).
Result<SfPromptSettings> SfPromptSettingsOf(const TrainConfig& config) {
  SfPromptSettings o;
  FL_RETURN_IF_ERROR(ReadExtra(config, "sfprompt.local_epochs", &TrainValue::AsInt64, &o.local_epochs));
  if (o.local_epochs < 0) return Status::InvalidArgument("sfprompt.local_epochs must be >= 0");
  std::string pool = o.mean_pool ? "mean" : "cls";
  FL_RETURN_IF_ERROR(ReadExtra(config, "sfprompt.local_pool", &TrainValue::AsString, &pool));
  if (pool != "mean" && pool != "cls") {
    return Status::InvalidArgument("sfprompt.local_pool must be \"mean\" or \"cls\" (got \"" + pool + "\")");
  }
  o.mean_pool = pool == "mean";
  FL_RETURN_IF_ERROR(ReadExtra(config, "sfprompt.keep_ratio", &TrainValue::AsDouble, &o.keep_ratio));
  if (!(o.keep_ratio > 0 && o.keep_ratio <= 1)) {
    return Status::InvalidArgument("sfprompt.keep_ratio must be in (0, 1]");
  }
  std::string wire = EncodingName(o.wire);
  FL_RETURN_IF_ERROR(ReadExtra(config, "sfprompt.wire", &TrainValue::AsString, &wire));
  Result<Encoding> encoding = ParseDenseEncoding(wire);
  if (!encoding.ok()) return encoding.status().WithContext("sfprompt.wire");
  o.wire = *encoding;
  return o;
}

double WholeVitForwardMacs(const VitOptions& o) {
  return VitForwardMacs(o, {.embed = true, .begin = 0, .end = o.depth, .classify = true});
}

// Client compute FLOPs of one training sample for the tunings trained in one loop: the
// forward pass, plus a backward pass (twice the forward) through what the gradient
// reaches, the whole ViT except for tuning head.
double TrainFlopsPerSample(const VitOptions& o, VitTuning tuning) {
  const double forward = WholeVitForwardMacs(o);
  const double reached = tuning == VitTuning::kHead ? VitForwardMacs(o, {.classify = true}) : forward;
  return 2 * (forward + 2 * reached);
}

// What one forward pass gives: logits and, for fedins, the entries chosen per instance
// ([batch, top_k]) and the key-similarity loss term.
struct Forward {
  torch::Tensor logits;
  torch::Tensor selected;
  torch::Tensor key_term;
};

}  // namespace

Result<VitTuning> ParseVitTuning(const std::string& name) {
  if (name == "full") return VitTuning::kFull;
  if (name == "head") return VitTuning::kHead;
  if (name == "ssf") return VitTuning::kSsf;
  if (name == "fedins") return VitTuning::kSsfPool;
  if (name == "sfprompt") return VitTuning::kPrompt;
  return Status::InvalidArgument("unknown tuning \"" + name + "\" (full, head, ssf, fedins, sfprompt)");
}

std::string VitTuningName(VitTuning tuning) {
  switch (tuning) {
    case VitTuning::kFull: return "full";
    case VitTuning::kHead: return "head";
    case VitTuning::kSsf: return "ssf";
    case VitTuning::kSsfPool: return "fedins";
    case VitTuning::kPrompt: return "sfprompt";
  }
  return "?";
}

struct VitTrainer::Impl {
  VitTrainerOptions options;
  SsfPoolOptions pool_settings;  // of the last task (evaluation uses them too)
  torch::Device device{torch::kCPU};
  std::shared_ptr<const TensorImageData> train;
  std::shared_ptr<const TensorImageData> eval;
  TinyVit vit{nullptr};
  SsfTuned ssf{nullptr};
  SsfPool pool{nullptr};
  std::shared_ptr<torch::nn::Module> trainable;
  std::unique_ptr<ParamBridge> bridge;       // the trainable part
  std::unique_ptr<ParamBridge> full_bridge;  // the whole ViT
  std::vector<torch::Tensor> parameters;
  std::vector<int> entry_of_tensor;  // fedins: the pool entry of each layout tensor
  std::vector<int64_t> bound;
  std::vector<int64_t> order;
  // fedins: the frozen backbone's CLS features (the queries) of train/eval examples,
  // computed once each: the backbone never changes after Create.
  torch::Tensor train_queries, eval_queries;
  std::vector<uint8_t> train_known, eval_known;

  Status Build(const ParamSet* backbone);
  torch::Tensor Queries(const torch::Tensor& x, const TensorImageData* data,
                        const torch::Tensor& indices);
  Forward Run(const torch::Tensor& x, const TensorImageData* data, const torch::Tensor& indices);
  Forward RunPool(const torch::Tensor& x, const torch::Tensor& queries);
  Result<EvalStats> EvaluateOn(const TensorImageData& data, const std::vector<int64_t>* subset,
                               int64_t begin, int64_t end);
  std::vector<VitPrediction> ToPredictions(const Forward& f);
};

Status VitTrainer::Impl::Build(const ParamSet* backbone) {
  FL_ASSIGN_OR_RETURN(vit, CreateTinyVit(options.vit, options.init_seed));
  full_bridge = std::make_unique<ParamBridge>(*vit);
  if (backbone != nullptr) {
    Status s = full_bridge->Write(*backbone);
    if (!s.ok()) return Status::InvalidArgument("backbone: " + s.message());
  }
  std::lock_guard<std::mutex> lock(InitMutex());
  torch::manual_seed(options.init_seed ^ 0x5353465f504f4f4cull);  // distinct from the ViT's
  switch (options.tuning) {
    case VitTuning::kFull: trainable = vit.ptr(); break;
    case VitTuning::kHead: trainable = HeadOnly(vit->head()).ptr(); break;
    case VitTuning::kSsf:
      ssf = SsfTuned(options.vit, vit->head());
      trainable = ssf.ptr();
      break;
    case VitTuning::kSsfPool:
      pool = SsfPool(options.vit, options.pool.entries, vit->head());
      trainable = pool.ptr();
      break;
    case VitTuning::kPrompt: trainable = SfPromptTrainable(vit, options.sfprompt.tail_blocks); break;
  }
  if (options.tuning != VitTuning::kFull) {
    for (torch::Tensor& p : vit->parameters()) p.requires_grad_(false);
    for (torch::Tensor& p : trainable->parameters()) p.requires_grad_(true);
  }
  trainable->to(device);
  vit->to(device);
  bridge = std::make_unique<ParamBridge>(*trainable);
  parameters.assign(bridge->tensors().begin(), bridge->tensors().begin() + bridge->num_parameters());
  for (const TensorSpec& t : bridge->layout().tensors()) {
    // "pool.<i>.…" -> i
    entry_of_tensor.push_back(options.tuning == VitTuning::kSsfPool ? std::stoi(t.name.substr(5)) : -1);
  }
  return Status::Ok();
}

torch::Tensor VitTrainer::Impl::Queries(const torch::Tensor& x, const TensorImageData* data,
                                        const torch::Tensor& indices) {
  torch::NoGradGuard no_grad;
  if (data == nullptr || !indices.defined()) return vit->Features(x, {});
  const bool is_train = data == train.get();
  torch::Tensor& cache = is_train ? train_queries : eval_queries;
  std::vector<uint8_t>& known = is_train ? train_known : eval_known;
  if (!cache.defined()) {
    cache = torch::zeros({data->size(), options.vit.width}, torch::TensorOptions().device(device));
    known.assign(static_cast<size_t>(data->size()), 0);
  }
  torch::Tensor host = indices.to(torch::kCPU);
  const int64_t* idx = host.data_ptr<int64_t>();
  std::vector<int64_t> missing_pos, missing_idx;
  for (int64_t i = 0; i < host.size(0); ++i) {
    if (!known[static_cast<size_t>(idx[i])]) {
      missing_pos.push_back(i);
      missing_idx.push_back(idx[i]);
    }
  }
  if (!missing_pos.empty()) {
    torch::Tensor pos = torch::tensor(missing_pos).to(device);
    torch::Tensor at = torch::tensor(missing_idx).to(device);
    cache.index_copy_(0, at, vit->Features(x.index_select(0, pos), {}));
    for (int64_t i : missing_idx) known[static_cast<size_t>(i)] = 1;
  }
  return cache.index_select(0, indices);
}

Forward VitTrainer::Impl::RunPool(const torch::Tensor& x, const torch::Tensor& queries) {
  const SsfPoolOptions& o = pool_settings;
  const int64_t batch = x.size(0), k = o.top_k;
  std::vector<torch::Tensor> keys;
  for (const PoolEntry& e : pool->all) keys.push_back(e->key);
  torch::Tensor sim = torch::mm(torch::nn::functional::normalize(queries, torch::nn::functional::NormalizeFuncOptions().dim(1)),
                                torch::nn::functional::normalize(torch::stack(keys), torch::nn::functional::NormalizeFuncOptions().dim(1)).t());
  Forward f;
  f.selected = std::get<1>(sim.detach().topk(k, /*dim=*/1));  // [B, k], no gradient
  f.key_term = (1 - sim.gather(1, f.selected).sum(1)).mean();
  const torch::Tensor flat = f.selected.reshape({-1});
  // Per instance: the mean of its k entries; batch_shared_ssf: of every selection.
  auto combine = [&](const std::vector<torch::Tensor>& per_entry) {
    torch::Tensor chosen = torch::stack(per_entry).index_select(0, flat);  // [B*k, ...]
    if (o.batch_shared_ssf) return chosen.mean(0);
    std::vector<int64_t> shape = {batch, k};
    for (int64_t d : chosen.sizes().slice(1)) shape.push_back(d);
    return chosen.view(shape).mean(1);
  };
  const size_t points = pool->all.front()->ssf->gammas().size();
  SsfApplied applied;
  for (size_t p = 0; p < points; ++p) {
    std::vector<torch::Tensor> g, b;
    for (const PoolEntry& e : pool->all) {
      g.push_back(e->ssf->gammas()[p]);
      b.push_back(e->ssf->betas()[p]);
    }
    applied.gamma.push_back(combine(g));
    applied.beta.push_back(combine(b));
  }
  std::vector<torch::Tensor> w, c;
  for (const PoolEntry& e : pool->all) {
    w.push_back(e->head->weight);
    c.push_back(e->head->bias);
  }
  torch::Tensor features = vit->Features(x, applied);  // [B, D]
  torch::Tensor weight = combine(w), bias = combine(c);
  f.logits = o.batch_shared_ssf
                 ? torch::nn::functional::linear(features, weight, bias)
                 : torch::bmm(weight, features.unsqueeze(2)).squeeze(2) + bias;
  return f;
}

Forward VitTrainer::Impl::Run(const torch::Tensor& x, const TensorImageData* data,
                              const torch::Tensor& indices) {
  switch (options.tuning) {
    case VitTuning::kFull:
    case VitTuning::kHead:
    case VitTuning::kPrompt: return {vit->forward(x), {}, {}};
    case VitTuning::kSsf: return {ssf->head->forward(vit->Features(x, ssf->ssf->Shared())), {}, {}};
    case VitTuning::kSsfPool: return RunPool(x, Queries(x, data, indices));
  }
  return {};
}

VitTrainer::VitTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VitTrainer::~VitTrainer() = default;

Result<std::unique_ptr<VitTrainer>> VitTrainer::Create(
    const VitTrainerOptions& options, const ParamSet* backbone,
    std::shared_ptr<const TensorImageData> train, std::shared_ptr<const TensorImageData> eval) {
  if (options.eval_batch_size < 1) return Status::InvalidArgument("eval_batch_size must be >= 1");
  if (options.pool.entries < 1 || options.pool.entries > 1024) {
    return Status::InvalidArgument("fedins.entries must be in [1, 1024]");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  FL_ASSIGN_OR_RETURN(impl->pool_settings, PoolSettings(options.pool, TrainConfig{}));
  if (options.tuning == VitTuning::kPrompt) FL_RETURN_IF_ERROR(CheckSfPromptCut(options.vit, options.sfprompt));
  try {
    impl->device = torch::Device(options.device);
  } catch (const std::exception&) {
    return Status::InvalidArgument("bad device \"" + options.device + "\"");
  }
  for (const auto* data : {train.get(), eval.get()}) {
    if (data != nullptr && data->images.device() != impl->device) {
      return Status::InvalidArgument("dataset lives on " + data->images.device().str() +
                                     " but the trainer runs on " + impl->device.str());
    }
  }
  try {
    FL_RETURN_IF_ERROR(impl->Build(backbone));
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "VitTrainer::Create");
  }
  impl->train = std::move(train);
  impl->eval = std::move(eval);
  return std::unique_ptr<VitTrainer>(new VitTrainer(std::move(impl)));
}

Status VitTrainer::BindExamples(std::vector<int64_t> indices) {
  FL_RETURN_IF_ERROR(CheckExampleIndices(indices, impl_->train ? impl_->train->size() : 0));
  impl_->bound = std::move(indices);
  return Status::Ok();
}

size_t VitTrainer::num_bound_examples() const { return impl_->bound.size(); }
const Layout& VitTrainer::layout() const { return impl_->bridge->layout(); }
Status VitTrainer::GetParameters(ParamSet* out) { return impl_->bridge->Read(out); }
Status VitTrainer::SetParameters(const ParamSet& params) { return impl_->bridge->Write(params); }
Status VitTrainer::GetFullModel(ParamSet* out) { return impl_->full_bridge->Read(out); }
int64_t VitTrainer::eval_size() const { return impl_->eval ? impl_->eval->size() : 0; }

Result<TrainStats> VitTrainer::Train(const TrainConfig& config, const CancelToken& cancel) {
  Impl& m = *impl_;
  if (m.bound.empty()) return Status::FailedPrecondition("VitTrainer::Train: no examples bound");
  if (config.batch_size < 1) return Status::InvalidArgument("batch_size must be >= 1");
  if (!(config.lr > 0)) return Status::InvalidArgument("lr must be > 0");
  if (config.local_steps < 1 && config.local_epochs < 1) {
    return Status::InvalidArgument("one of local_steps and local_epochs must be >= 1");
  }
  if (m.options.tuning == VitTuning::kPrompt) {
    FL_ASSIGN_OR_RETURN(SfPromptSettings settings, SfPromptSettingsOf(config));
    SfPromptJob job{m.vit, &m.options.sfprompt, m.train.get(), &m.bound, m.parameters,
                    m.options.eval_batch_size};
    return TrainSfPrompt(job, settings, config, cancel);
  }
  FL_ASSIGN_OR_RETURN(m.pool_settings, PoolSettings(m.options.pool, config));
  const auto start_time = std::chrono::steady_clock::now();
  const int64_t n = static_cast<int64_t>(m.bound.size());
  const int64_t batch = config.batch_size;
  const int64_t steps = config.local_steps > 0 ? config.local_steps
                                               : config.local_epochs * ((n + batch - 1) / batch);
  const bool pooled = m.options.tuning == VitTuning::kSsfPool;
  const double lambda = m.pool_settings.lambda;
  TrainStats stats;
  stats.dataset_size = static_cast<uint64_t>(n);
  std::vector<int64_t> selections(static_cast<size_t>(m.options.pool.entries), 0);
  try {
    m.trainable->train();
    torch::optim::SGD optimizer(m.parameters, torch::optim::SGDOptions(config.lr)
                                                  .momentum(config.momentum)
                                                  .weight_decay(config.weight_decay));
    SeededRng rng(config.seed);
    m.order = m.bound;
    int64_t pos = n;
    // Summed on the device and read once after the last step: no sync per step.
    const torch::TensorOptions on_device = torch::TensorOptions().device(m.device);
    torch::Tensor loss_sum = torch::zeros({}, on_device.dtype(torch::kDouble));
    torch::Tensor selected = torch::zeros({m.options.pool.entries}, on_device.dtype(torch::kLong));
    for (int64_t step = 0; step < steps; ++step) {
      if (cancel.cancelled()) return Status::Cancelled("training cancelled");
      if (pos >= n) {
        rng.Shuffle(m.order);
        pos = 0;
      }
      const int64_t b = std::min(batch, n - pos);
      torch::Tensor indices;
      torch::Tensor x = SelectBatch(*m.train, m.order, pos, b, &indices);
      torch::Tensor y = m.train->labels.index_select(0, indices);
      optimizer.zero_grad();
      Forward f = m.Run(x, m.train.get(), indices);
      torch::Tensor ce = torch::nn::functional::cross_entropy(f.logits, y);
      torch::Tensor loss = pooled ? (1 - lambda) * ce + lambda * f.key_term : ce;
      loss.backward();
      optimizer.step();
      if (pooled) selected.add_(f.selected.reshape({-1}).bincount({}, m.options.pool.entries));
      loss_sum.add_(ce.detach(), static_cast<double>(b));
      pos += b;
      stats.num_examples += static_cast<uint64_t>(b);
    }
    stats.mean_loss = loss_sum.item<double>() / static_cast<double>(stats.num_examples);
    torch::Tensor counts = selected.to(torch::kCPU);
    std::copy_n(counts.data_ptr<int64_t>(), selections.size(), selections.begin());
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "VitTrainer::Train");
  }
  stats.metrics["compute.seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  stats.metrics["compute.flops"] =
      TrainFlopsPerSample(m.options.vit, m.options.tuning) * static_cast<double>(stats.num_examples);
  if (pooled) {
    const Layout& layout = m.bridge->layout();
    for (size_t t = 0; t < layout.num_tensors(); ++t) {
      const int64_t chosen = selections[static_cast<size_t>(m.entry_of_tensor[t])];
      const double fraction = static_cast<double>(chosen) / static_cast<double>(stats.num_examples);
      // Never selected: unchanged. Rarely selected: below the upload threshold.
      if (chosen == 0 || fraction < m.pool_settings.upload_min_fraction) continue;
      stats.tensor_weights[layout.tensors()[t].name] = fraction;
    }
  }
  return stats;
}

Result<EvalStats> VitTrainer::Impl::EvaluateOn(const TensorImageData& data,
                                               const std::vector<int64_t>* subset, int64_t begin,
                                               int64_t end) {
  try {
    trainable->eval();
    EvalStats stats = EvaluateClassifier(
        data, subset, begin, end, options.eval_batch_size,
        [&](const torch::Tensor& x, const torch::Tensor& indices) {
          return Run(x, &data, indices).logits;
        });
    trainable->train();
    return stats;
  } catch (const std::exception& e) {
    trainable->train();
    return TorchErrorStatus(e, "VitTrainer::Evaluate");
  }
}

Result<EvalStats> VitTrainer::Evaluate() {
  if (impl_->eval) return impl_->EvaluateOn(*impl_->eval, nullptr, 0, impl_->eval->size());
  if (impl_->bound.empty()) {
    return Status::FailedPrecondition("VitTrainer::Evaluate: no eval set and no examples bound");
  }
  return impl_->EvaluateOn(*impl_->train, &impl_->bound, 0, 0);
}

Result<EvalStats> VitTrainer::EvaluateRange(int64_t begin, int64_t end) {
  if (!impl_->eval) return Status::FailedPrecondition("VitTrainer::EvaluateRange: no eval set");
  FL_RETURN_IF_ERROR(CheckEvalRange(begin, end, impl_->eval->size()));
  return impl_->EvaluateOn(*impl_->eval, nullptr, begin, end);
}

std::vector<VitPrediction> VitTrainer::Impl::ToPredictions(const Forward& f) {
  torch::Tensor logits = f.logits.to(torch::kCPU).contiguous();
  torch::Tensor labels = logits.argmax(1);
  torch::Tensor selected = f.selected.defined() ? f.selected.to(torch::kCPU).contiguous() : torch::Tensor();
  const int64_t n = logits.size(0), classes = logits.size(1);
  std::vector<VitPrediction> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    VitPrediction& p = out[static_cast<size_t>(i)];
    p.label = static_cast<int32_t>(labels[i].item<int64_t>());
    const float* row = logits.data_ptr<float>() + i * classes;
    p.logits.assign(row, row + classes);
    if (selected.defined()) {
      const int64_t* s = selected.data_ptr<int64_t>() + i * selected.size(1);
      for (int64_t j = 0; j < selected.size(1); ++j) p.entries.push_back(static_cast<int32_t>(s[j]));
    }
  }
  return out;
}

Result<std::vector<VitPrediction>> VitTrainer::PredictEvalRange(int64_t begin, int64_t end) {
  Impl& m = *impl_;
  if (!m.eval) return Status::FailedPrecondition("VitTrainer::PredictEvalRange: no eval set");
  FL_RETURN_IF_ERROR(CheckEvalRange(begin, end, m.eval->size()));
  std::vector<VitPrediction> out;
  try {
    torch::NoGradGuard no_grad;
    m.trainable->eval();
    std::vector<int64_t> range(static_cast<size_t>(end - begin));
    for (size_t i = 0; i < range.size(); ++i) range[i] = begin + static_cast<int64_t>(i);
    for (int64_t start = 0; start < end - begin; start += m.options.eval_batch_size) {
      const int64_t len = std::min<int64_t>(m.options.eval_batch_size, end - begin - start);
      torch::Tensor indices;
      torch::Tensor x = SelectBatch(*m.eval, range, start, len, &indices);
      std::vector<VitPrediction> part = m.ToPredictions(m.Run(x, m.eval.get(), indices));
      std::move(part.begin(), part.end(), std::back_inserter(out));
    }
    m.trainable->train();
  } catch (const std::exception& e) {
    m.trainable->train();
    return TorchErrorStatus(e, "VitTrainer::PredictEvalRange");
  }
  return out;
}

Result<std::vector<VitPrediction>> VitTrainer::Predict(const float* images, int64_t n) {
  Impl& m = *impl_;
  if (n < 0) return Status::InvalidArgument("negative image count");
  const int64_t side = m.options.vit.image;
  std::vector<VitPrediction> out;
  try {
    torch::NoGradGuard no_grad;
    m.trainable->eval();
    for (int64_t start = 0; start < n; start += m.options.eval_batch_size) {
      const int64_t len = std::min<int64_t>(m.options.eval_batch_size, n - start);
      torch::Tensor x = torch::from_blob(const_cast<float*>(images) + start * side * side,
                                         {len, 1, side, side}, torch::kFloat);
      if (!m.device.is_cpu()) x = x.to(m.device);
      std::vector<VitPrediction> part = m.ToPredictions(m.Run(x, nullptr, {}));
      std::move(part.begin(), part.end(), std::back_inserter(out));
    }
    m.trainable->train();
  } catch (const std::exception& e) {
    m.trainable->train();
    return TorchErrorStatus(e, "VitTrainer::Predict");
  }
  return out;
}

double VitForwardMacs(const VitOptions& o, const VitPiece& piece) {
  const double d = static_cast<double>(o.width), side = static_cast<double>(o.image / o.patch);
  const double patches = side * side, tokens = patches + 1 + static_cast<double>(o.prompts);
  const double hidden = d * static_cast<double>(o.mlp_ratio);
  // Per block and token: q/k/v and projection (4 d^2), MLP (2 d h), scores and mixing (2 T d).
  const double block = tokens * (4 * d * d + 2 * d * hidden + 2 * tokens * d);
  double macs = static_cast<double>(std::max<int64_t>(0, piece.end - piece.begin)) * block;
  if (piece.embed) macs += patches * d * static_cast<double>(o.patch * o.patch);
  if (piece.classify) macs += d * static_cast<double>(o.classes);
  return macs;
}

double VitTrainer::ForwardMacsPerImage() const {
  return WholeVitForwardMacs(impl_->options.vit);
}

}  // namespace fl::internal
