#include "torch/sfprompt_train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "data/sampling.h"
#include "torch/models.h"

namespace fl::internal {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The trainable part's modules, registered under the ViT's names ("blocks.<j>" keeps the
// block's index in the whole ViT).
class SfPromptPartImpl final : public torch::nn::Module {
 public:
  SfPromptPartImpl(TinyVit& vit, int64_t tail_blocks) {
    register_parameter("prompts", vit->prompts());
    auto blocks = std::make_shared<torch::nn::Module>();
    const int64_t depth = vit->options().depth;
    for (int64_t j = depth - tail_blocks; j < depth; ++j) {
      blocks->register_module(std::to_string(j), vit->block(j));
    }
    register_module("blocks", blocks);
    register_module("norm", vit->norm());
    register_module("head", vit->head());
  }
};
TORCH_MODULE(SfPromptPart);

TokenTensor ToTokens(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return {c.size(0), c.size(1), c.size(2),
          std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel())};
}

torch::Tensor FromTokens(const TokenTensor& t, const torch::Device& device) {
  torch::Tensor cpu = torch::from_blob(const_cast<float*>(t.values.data()),
                                       {t.batch, t.tokens, t.width}, torch::kFloat);
  return cpu.to(device, /*non_blocking=*/false, /*copy=*/true);
}

// One Train call's state: the model pieces, the optimizer and the phases' figures.
class SfPromptRound {
 public:
  SfPromptRound(const SfPromptJob& job, const SfPromptSettings& settings,
                const TrainConfig& config, const CancelToken& cancel)
      : job_(job),
        vit_(job.vit),
        settings_(settings),
        config_(config),
        cancel_(cancel),
        depth_(job.vit->options().depth),
        device_(job.train->images.device()),
        optimizer_(job.parameters, torch::optim::SGDOptions(config.lr)
                                       .momentum(config.momentum)
                                       .weight_decay(config.weight_decay)),
        rng_(config.seed) {}

  Status LocalPhase();
  std::vector<int64_t> PrunePhase();
  Status SplitPhase(const std::vector<int64_t>& kept);
  TrainStats stats() const { return stats_; }

 private:
  // The client's head: Embed (with the prompts), then blocks [0, head_blocks).
  torch::Tensor Head(const torch::Tensor& x) {
    return vit_->RunBlocks(vit_->Embed(x, {}), {}, 0, job_.cut->head_blocks);
  }
  // The client's tail at tokens z: its blocks, then the pooling, the final norm and the head.
  torch::Tensor Tail(const torch::Tensor& z, bool mean_pool) {
    torch::Tensor t = vit_->RunBlocks(z, {}, depth_ - job_.cut->tail_blocks, depth_);
    torch::Tensor features = mean_pool ? vit_->norm()->forward(t).mean(1) : vit_->Pool(t, {});
    return vit_->head()->forward(features);
  }
  // The local path (phases 1 and 2): the body skipped.
  torch::Tensor LocalLogits(const torch::Tensor& x) { return Tail(Head(x), settings_.mean_pool); }
  // FLOPs of one training sample through the client's pieces: the forward pass, and the
  // backward pass (twice the forward) through what the gradient reaches: head blocks and
  // tail. The same for the local and the split phase (the body is the server's).
  double ClientTrainFlops() const;
  double ClientForwardFlops() const;
  // Only the tokens this client reads travel: a tail without blocks reads CLS alone, and
  // without head blocks the gradient reaches the client's parameters only through the
  // prompts (patch embedding, CLS and positions are frozen).
  SplitSessionOptions SplitOptions() const;
  Status SplitStep(SplitSession& session, const SplitSessionOptions& options,
                   const torch::Tensor& x, const torch::Tensor& y, torch::Tensor* loss_sum);

  const SfPromptJob& job_;
  TinyVit vit_;  // job_.vit, non-const: the ViT's forward pieces are non-const methods
  const SfPromptSettings& settings_;
  const TrainConfig& config_;
  const CancelToken& cancel_;
  const int64_t depth_;
  const torch::Device device_;
  torch::optim::SGD optimizer_;
  SeededRng rng_;
  TrainStats stats_;
  double wait_seconds_ = 0;
};

double SfPromptRound::ClientForwardFlops() const {
  const VitOptions& o = job_.vit->options();
  return 2 * (VitForwardMacs(o, {.embed = true, .begin = 0, .end = job_.cut->head_blocks}) +
              VitForwardMacs(o, {.begin = depth_ - job_.cut->tail_blocks, .end = depth_, .classify = true}));
}

double SfPromptRound::ClientTrainFlops() const {
  const VitOptions& o = job_.vit->options();
  const double backward_reach =
      2 * (VitForwardMacs(o, {.begin = 0, .end = job_.cut->head_blocks}) +
           VitForwardMacs(o, {.begin = depth_ - job_.cut->tail_blocks, .end = depth_, .classify = true}));
  return ClientForwardFlops() + 2 * backward_reach;
}

Status SfPromptRound::LocalPhase() {
  const Clock::time_point start = Clock::now();
  const std::vector<int64_t>& bound = *job_.bound;
  const int64_t n = static_cast<int64_t>(bound.size());
  std::vector<int64_t> order = bound;
  int64_t samples = 0;
  for (int64_t epoch = 0; epoch < settings_.local_epochs; ++epoch) {
    rng_.Shuffle(order);
    for (int64_t pos = 0; pos < n; pos += config_.batch_size) {
      if (cancel_.cancelled()) return Status::Cancelled("training cancelled");
      const int64_t b = std::min<int64_t>(config_.batch_size, n - pos);
      torch::Tensor indices;
      torch::Tensor x = SelectBatch(*job_.train, order, pos, b, &indices);
      optimizer_.zero_grad();
      torch::nn::functional::cross_entropy(LocalLogits(x), job_.train->labels.index_select(0, indices))
          .backward();
      optimizer_.step();
      samples += b;
    }
  }
  stats_.metrics["sfprompt.local.seconds"] = SecondsSince(start);
  stats_.metrics["sfprompt.local.flops"] = ClientTrainFlops() * static_cast<double>(samples);
  return Status::Ok();
}

std::vector<int64_t> SfPromptRound::PrunePhase() {
  const std::vector<int64_t>& bound = *job_.bound;
  const int64_t n = static_cast<int64_t>(bound.size());
  stats_.metrics["sfprompt.kept_examples"] = static_cast<double>(n);
  // Keeping everything needs no scores: the phase costs nothing.
  if (settings_.keep_ratio >= 1) return bound;
  const Clock::time_point start = Clock::now();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t pos = 0; pos < n; pos += job_.score_batch) {
    const int64_t b = std::min<int64_t>(job_.score_batch, n - pos);
    torch::Tensor indices;
    torch::Tensor x = SelectBatch(*job_.train, bound, pos, b, &indices);
    torch::Tensor logits = LocalLogits(x);
    torch::Tensor onehot = torch::one_hot(job_.train->labels.index_select(0, indices), logits.size(1));
    parts.push_back((torch::softmax(logits, 1) - onehot).norm(2, {1}));
  }
  torch::Tensor all = torch::cat(parts).to(torch::kCPU, torch::kFloat).contiguous();
  const std::vector<float> scores(all.data_ptr<float>(), all.data_ptr<float>() + all.numel());
  std::vector<int64_t> kept = KeepHardest(bound, scores, settings_.keep_ratio);
  stats_.metrics["sfprompt.prune.seconds"] = SecondsSince(start);
  stats_.metrics["sfprompt.prune.flops"] = ClientForwardFlops() * static_cast<double>(n);
  stats_.metrics["sfprompt.kept_examples"] = static_cast<double>(kept.size());
  return kept;
}

SplitSessionOptions SfPromptRound::SplitOptions() const {
  SplitSessionOptions options{config_.round, settings_.wire};
  const VitOptions& vit = vit_->options();
  options.body = VitBodyName(vit, job_.cut->head_blocks, vit.depth - job_.cut->tail_blocks);
  if (job_.cut->tail_blocks == 0) options.output_tokens = 1;
  if (job_.cut->head_blocks == 0) {
    options.grad_begin = 1;  // the prompts follow CLS (TinyVit::Embed)
    options.grad_end = 1 + vit.prompts;
  }
  return options;
}

Status SfPromptRound::SplitStep(SplitSession& session, const SplitSessionOptions& options,
                                const torch::Tensor& x, const torch::Tensor& y,
                                torch::Tensor* loss_sum) {
  optimizer_.zero_grad();
  torch::Tensor a = Head(x);
  Clock::time_point wait = Clock::now();
  Result<TokenTensor> body_out = session.Forward(ToTokens(a));
  wait_seconds_ += SecondsSince(wait);
  if (!body_out.ok()) return body_out.status().WithContext("sfprompt: split forward");
  // z: the output tokens asked for; with a tail of no blocks, [b, 1, D], and the
  // pooling reads its CLS all the same.
  torch::Tensor z = FromTokens(*body_out, device_).requires_grad_(true);
  torch::Tensor ce = torch::nn::functional::cross_entropy(Tail(z, /*mean_pool=*/false), y);
  ce.backward();
  wait = Clock::now();
  Result<TokenTensor> grad_a = session.Backward(ToTokens(z.grad()));
  wait_seconds_ += SecondsSince(wait);
  if (!grad_a.ok()) return grad_a.status().WithContext("sfprompt: split backward");
  // The tokens outside the returned range lead to frozen parameters only.
  torch::Tensor full = torch::zeros_like(a);
  full.narrow(1, options.grad_begin, grad_a->tokens).copy_(FromTokens(*grad_a, device_));
  a.backward(full);
  optimizer_.step();
  loss_sum->add_(ce.detach(), static_cast<double>(x.size(0)));
  return Status::Ok();
}

Status SfPromptRound::SplitPhase(const std::vector<int64_t>& kept) {
  const Clock::time_point start = Clock::now();
  const int64_t n = static_cast<int64_t>(kept.size());
  const int64_t batch = config_.batch_size;
  const int64_t steps = config_.local_steps > 0 ? config_.local_steps
                                                : config_.local_epochs * ((n + batch - 1) / batch);
  Clock::time_point wait = Clock::now();
  const SplitSessionOptions options = SplitOptions();
  Result<std::unique_ptr<SplitSession>> opened = job_.cut->open_split_session(options);
  wait_seconds_ += SecondsSince(wait);
  if (!opened.ok()) return opened.status().WithContext("sfprompt: open split session");
  std::unique_ptr<SplitSession> session = std::move(opened).value();
  // A body cut from another ViT (other prompts or width) would refuse every step; say
  // why once, before the first split step.
  const VitOptions& o = vit_->options();
  const int64_t side = o.image / o.patch, tokens = 1 + o.prompts + side * side;
  if (session->tokens() != tokens || session->width() != o.width) {
    session->Finish();  // the mismatch is the error to report
    return Status::FailedPrecondition(
        "sfprompt: the server's body takes " + std::to_string(session->tokens()) + " tokens of width " +
        std::to_string(session->width()) + ", this client's head makes " + std::to_string(tokens) +
        " of width " + std::to_string(o.width));
  }
  std::vector<int64_t> order = kept;
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device_).dtype(torch::kDouble));
  Status status;
  for (int64_t step = 0, pos = n; step < steps && status.ok(); ++step) {
    if (cancel_.cancelled()) {
      status = Status::Cancelled("training cancelled");
      break;
    }
    if (pos >= n) {
      rng_.Shuffle(order);
      pos = 0;
    }
    const int64_t b = std::min(batch, n - pos);
    torch::Tensor indices;
    torch::Tensor x = SelectBatch(*job_.train, order, pos, b, &indices);
    status =
        SplitStep(*session, options, x, job_.train->labels.index_select(0, indices), &loss_sum);
    pos += b;
    if (status.ok()) stats_.num_examples += static_cast<uint64_t>(b);
  }
  wait = Clock::now();
  Status finished = session->Finish();
  wait_seconds_ += SecondsSince(wait);
  if (status.ok() && !finished.ok()) status = finished.WithContext("sfprompt: finish split session");
  FL_RETURN_IF_ERROR(status);
  stats_.mean_loss = stats_.num_examples == 0
                         ? 0
                         : loss_sum.item<double>() / static_cast<double>(stats_.num_examples);
  const SplitTraffic traffic = session->traffic();
  stats_.metrics["sfprompt.split.seconds"] = SecondsSince(start) - wait_seconds_;
  stats_.metrics["sfprompt.split.wait_seconds"] = wait_seconds_;
  stats_.metrics["sfprompt.split.flops"] = ClientTrainFlops() * static_cast<double>(stats_.num_examples);
  stats_.metrics["sfprompt.split.bytes_up"] = static_cast<double>(traffic.bytes_up);
  stats_.metrics["sfprompt.split.bytes_down"] = static_cast<double>(traffic.bytes_down);
  return Status::Ok();
}

}  // namespace

Status CheckSfPromptCut(const VitOptions& vit, const SfPromptOptions& cut) {
  if (vit.prompts < 1) return Status::InvalidArgument("tuning sfprompt needs a ViT with prompts >= 1");
  if (cut.head_blocks < 0 || cut.tail_blocks < 0 || cut.head_blocks + cut.tail_blocks >= vit.depth) {
    return Status::InvalidArgument(
        "sfprompt: head_blocks and tail_blocks must be >= 0 and leave the server's body "
        "non-empty (head_blocks + tail_blocks < depth " + std::to_string(vit.depth) + ")");
  }
  return Status::Ok();
}

std::shared_ptr<torch::nn::Module> SfPromptTrainable(TinyVit& vit, int64_t tail_blocks) {
  return SfPromptPart(vit, tail_blocks).ptr();
}

std::vector<int64_t> KeepHardest(const std::vector<int64_t>& examples,
                                 const std::vector<float>& scores, double keep_ratio) {
  const size_t n = examples.size();
  const size_t keep = std::min(n, static_cast<size_t>(std::ceil(keep_ratio * static_cast<double>(n))));
  std::vector<size_t> rank(n);
  std::iota(rank.begin(), rank.end(), 0);
  std::sort(rank.begin(), rank.end(), [&](size_t i, size_t j) {
    if (scores[i] != scores[j]) return scores[i] > scores[j];
    return examples[i] < examples[j];
  });
  rank.resize(keep);
  std::sort(rank.begin(), rank.end());  // back in the examples' order
  std::vector<int64_t> kept;
  kept.reserve(keep);
  for (size_t i : rank) kept.push_back(examples[i]);
  return kept;
}

Result<TrainStats> TrainSfPrompt(const SfPromptJob& job, const SfPromptSettings& settings,
                                 const TrainConfig& config, const CancelToken& cancel) {
  if (!job.cut->open_split_session) {
    return Status::FailedPrecondition("tuning sfprompt: no split session opener set");
  }
  try {
    SfPromptRound round(job, settings, config, cancel);
    FL_RETURN_IF_ERROR(round.LocalPhase());
    std::vector<int64_t> kept = round.PrunePhase();
    FL_RETURN_IF_ERROR(round.SplitPhase(kept));
    TrainStats stats = round.stats();
    stats.dataset_size = job.bound->size();
    stats.metrics["compute.seconds"] = stats.metrics["sfprompt.local.seconds"] +
                                       stats.metrics["sfprompt.prune.seconds"] +
                                       stats.metrics["sfprompt.split.seconds"];
    stats.metrics["compute.flops"] = stats.metrics["sfprompt.local.flops"] +
                                     stats.metrics["sfprompt.prune.flops"] +
                                     stats.metrics["sfprompt.split.flops"];
    return stats;
  } catch (const std::exception& e) {
    return TorchErrorStatus(e, "VitTrainer::Train (sfprompt)");
  }
}

}  // namespace fl::internal
