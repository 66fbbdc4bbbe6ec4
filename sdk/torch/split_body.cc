#include "torch/split_body.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "torch/models.h"
#include "torch/torch_trainer.h"
#include "torch/vit_model.h"

namespace fl::internal {
namespace {

enum class PassKind { kForward, kBackward };

// One session's request, validated, waiting for the worker.
struct Request {
  PassKind kind;
  torch::Tensor input;        // forward: activations; backward: the saved activations
  torch::Tensor grad_output;  // backward only
  std::chrono::steady_clock::time_point arrival;
  std::promise<Result<torch::Tensor>> done;
};

std::string SessionName(uint64_t session) { return "session " + std::to_string(session); }

Status CheckShape(const TokenTensor& t, int64_t tokens, int64_t width, const std::string& what) {
  if (t.batch < 1 || t.tokens != tokens || t.width != width) {
    return Status::InvalidArgument(what + ": shape [" + std::to_string(t.batch) + ", " +
                                   std::to_string(t.tokens) + ", " + std::to_string(t.width) +
                                   "], the body takes [b >= 1, " + std::to_string(tokens) + ", " +
                                   std::to_string(width) + "]");
  }
  if (static_cast<int64_t>(t.values.size()) != t.batch * t.tokens * t.width) {
    return Status::InvalidArgument(what + ": " + std::to_string(t.values.size()) +
                                   " values for shape [" + std::to_string(t.batch) + ", " +
                                   std::to_string(t.tokens) + ", " + std::to_string(t.width) + "]");
  }
  return Status::Ok();
}

Status CheckFinite(const TokenTensor& t, const std::string& what) {
  for (size_t i = 0; i < t.values.size(); ++i) {
    if (!std::isfinite(t.values[i])) {
      return Status::InvalidArgument(what + ": value " + std::to_string(i) + " is not finite (" +
                                     std::to_string(t.values[i]) + ")");
    }
  }
  return Status::Ok();
}

// A CPU copy the caller owns; the request's vector may go away once it returns.
torch::Tensor ToTensor(const TokenTensor& t, const torch::Device& device) {
  torch::Tensor cpu = torch::from_blob(const_cast<float*>(t.values.data()),
                                       {t.batch, t.tokens, t.width}, torch::kFloat32);
  return cpu.to(device, /*non_blocking=*/false, /*copy=*/true);
}

TokenTensor ToTokenBatch(const torch::Tensor& t) {
  torch::Tensor cpu = t.to(torch::kCPU).contiguous();
  TokenTensor out;
  out.batch = cpu.size(0);
  out.tokens = cpu.size(1);
  out.width = cpu.size(2);
  out.values.assign(cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel());
  return out;
}

}  // namespace

struct SplitBodyServer::Impl {
  SplitBodyOptions options;
  torch::Device device{torch::kCPU};
  TinyVit vit{nullptr};
  int64_t tokens = 0;

  mutable std::mutex mu;
  std::condition_variable arrived;  // the worker waits for requests here
  std::deque<std::shared_ptr<Request>> queue;
  std::map<uint64_t, torch::Tensor> saved;  // each open session's last activations
  std::set<uint64_t> closed;
  BodyPassCounts counts;
  bool stopping = false;
  std::thread worker;

  Result<torch::Tensor> Submit(PassKind kind, torch::Tensor input, torch::Tensor grad_output);
  void Work();
  std::vector<std::shared_ptr<Request>> TakePass(std::unique_lock<std::mutex>& lock);
  void Run(const std::vector<std::shared_ptr<Request>>& pass);
  torch::Tensor BodyForward(const torch::Tensor& input);
  torch::Tensor BodyInputGradient(const torch::Tensor& input, const torch::Tensor& grad_output);
};

Result<torch::Tensor> SplitBodyServer::Impl::Submit(PassKind kind, torch::Tensor input,
                                                    torch::Tensor grad_output) {
  auto request = std::make_shared<Request>();
  request->kind = kind;
  request->input = std::move(input);
  request->grad_output = std::move(grad_output);
  request->arrival = std::chrono::steady_clock::now();
  std::future<Result<torch::Tensor>> result = request->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu);
    if (stopping) return Status::Aborted("the body server is shutting down");
    queue.push_back(request);
  }
  arrived.notify_one();
  return result.get();
}

void SplitBodyServer::Impl::Work() {
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    arrived.wait(lock, [&] { return stopping || !queue.empty(); });
    if (stopping) break;
    std::vector<std::shared_ptr<Request>> pass = TakePass(lock);
    lock.unlock();
    Run(pass);
    lock.lock();
  }
  for (auto& r : queue) r->done.set_value(Status::Aborted("the body server is shutting down"));
  queue.clear();
}

// Waits (with `lock` held) until the first request's kind has max_batch_samples queued
// or max_wait_us have passed since that request arrived (it may have waited out a pass
// already), then removes that pass's requests from the queue. Requests
// of the other kind keep their place for the next pass.
std::vector<std::shared_ptr<Request>> SplitBodyServer::Impl::TakePass(
    std::unique_lock<std::mutex>& lock) {
  const BodyBatchingOptions& b = options.batching;
  const PassKind kind = queue.front()->kind;
  auto queued_samples = [&] {
    int64_t n = 0;
    for (const auto& r : queue) {
      if (r->kind == kind) n += r->input.size(0);
    }
    return n;
  };
  if (b.enabled) {
    auto deadline = queue.front()->arrival + std::chrono::microseconds(b.max_wait_us);
    arrived.wait_until(lock, deadline,
                       [&] { return stopping || queued_samples() >= b.max_batch_samples; });
  }
  std::vector<std::shared_ptr<Request>> pass;
  int64_t samples = 0;
  for (auto it = queue.begin(); it != queue.end();) {
    const int64_t n = (*it)->input.size(0);
    const bool fits = pass.empty() || (b.enabled && samples + n <= b.max_batch_samples);
    if ((*it)->kind != kind || !fits) {
      ++it;
      continue;
    }
    samples += n;
    pass.push_back(std::move(*it));
    it = queue.erase(it);
    if (!b.enabled) break;
  }
  return pass;
}

void SplitBodyServer::Impl::Run(const std::vector<std::shared_ptr<Request>>& pass) {
  const bool forward = pass.front()->kind == PassKind::kForward;
  std::vector<torch::Tensor> inputs, grads;
  std::vector<int64_t> sizes;
  for (const auto& r : pass) {
    inputs.push_back(r->input);
    grads.push_back(r->grad_output);
    sizes.push_back(r->input.size(0));
  }
  Result<torch::Tensor> out = Status::Internal("no body pass ran");
  try {
    torch::Tensor input = inputs.size() == 1 ? inputs[0] : torch::cat(inputs);
    out = forward ? BodyForward(input)
                  : BodyInputGradient(input, grads.size() == 1 ? grads[0] : torch::cat(grads));
  } catch (const std::exception& e) {
    out = Status::Internal(std::string("body pass: ") + e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    (forward ? counts.forward_passes : counts.backward_passes) += 1;
    counts.requests += static_cast<int64_t>(pass.size());
    for (int64_t n : sizes) counts.samples += n;
    counts.max_requests_in_a_pass =
        std::max(counts.max_requests_in_a_pass, static_cast<int64_t>(pass.size()));
    if (pass.size() > 1) counts.passes_with_several_requests += 1;
  }
  if (!out.ok()) {
    for (const auto& r : pass) r->done.set_value(out.status());
    return;
  }
  std::vector<torch::Tensor> slices = out->split_with_sizes(sizes);
  for (size_t i = 0; i < pass.size(); ++i) pass[i]->done.set_value(slices[i]);
}

torch::Tensor SplitBodyServer::Impl::BodyForward(const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  return vit->RunBlocks(input, {}, options.begin, options.end);
}

// The body's parameters do not require gradients, so autograd computes only the path
// to the input.
torch::Tensor SplitBodyServer::Impl::BodyInputGradient(const torch::Tensor& input,
                                                       const torch::Tensor& grad_output) {
  torch::Tensor a = input.detach().requires_grad_(true);
  torch::Tensor z = vit->RunBlocks(a, {}, options.begin, options.end);
  return torch::autograd::grad({z}, {a}, {grad_output})[0];
}

Result<std::unique_ptr<SplitBodyServer>> SplitBodyServer::Create(const SplitBodyOptions& options,
                                                                 const ParamSet* backbone) {
  if (options.begin < 0 || options.end > options.vit.depth || options.begin >= options.end) {
    return Status::InvalidArgument("body blocks [" + std::to_string(options.begin) + ", " +
                                   std::to_string(options.end) + ") are not a non-empty range within [0, " +
                                   std::to_string(options.vit.depth) + "]");
  }
  if (options.batching.enabled &&
      (options.batching.max_batch_samples < 1 || options.batching.max_wait_us < 0)) {
    return Status::InvalidArgument("batching needs max_batch_samples >= 1 and max_wait_us >= 0");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  try {
    impl->device = torch::Device(options.device);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("device \"" + options.device + "\": " + e.what());
  }
  FL_ASSIGN_OR_RETURN(impl->vit, CreateTinyVit(options.vit, options.init_seed));
  if (backbone != nullptr) {
    Status s = ParamBridge(*impl->vit).Write(*backbone);
    if (!s.ok()) return Status::InvalidArgument("backbone: " + s.message());
  }
  for (torch::Tensor& p : impl->vit->parameters()) p.requires_grad_(false);  // frozen
  impl->vit->eval();
  impl->vit->to(impl->device);
  const int64_t side = options.vit.image / options.vit.patch;
  impl->tokens = 1 + options.vit.prompts + side * side;
  if (options.torch_threads > 0) SetTorchThreads(options.torch_threads);
  Impl* raw = impl.get();
  impl->worker = std::thread([raw] { raw->Work(); });
  return std::unique_ptr<SplitBodyServer>(new SplitBodyServer(std::move(impl)));
}

SplitBodyServer::SplitBodyServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SplitBodyServer::~SplitBodyServer() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->arrived.notify_all();
  impl_->worker.join();
}

// Every check runs here, on the caller's thread, before the request joins a pass: a
// bad request never reaches the worker, so it cannot fail the sessions batched with it.
Result<TokenTensor> SplitBodyServer::Forward(uint64_t session, const TokenTensor& activations) {
  const std::string what = SessionName(session) + " activations";
  FL_RETURN_IF_ERROR(CheckShape(activations, impl_->tokens, width(), what));
  FL_RETURN_IF_ERROR(CheckFinite(activations, what));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed.count(session) != 0) {
      return Status::FailedPrecondition(SessionName(session) + " is closed");
    }
  }
  torch::Tensor input = ToTensor(activations, impl_->device);
  FL_ASSIGN_OR_RETURN(torch::Tensor output, impl_->Submit(PassKind::kForward, input, {}));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed.count(session) == 0) impl_->saved[session] = input;
  }
  return ToTokenBatch(output);
}

Result<TokenTensor> SplitBodyServer::Backward(uint64_t session, const TokenTensor& grad_output) {
  const std::string what = SessionName(session) + " output gradient";
  FL_RETURN_IF_ERROR(CheckShape(grad_output, impl_->tokens, width(), what));
  torch::Tensor input;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed.count(session) != 0) {
      return Status::FailedPrecondition(SessionName(session) + " is closed");
    }
    auto it = impl_->saved.find(session);
    if (it == impl_->saved.end()) {
      return Status::FailedPrecondition(SessionName(session) + ": Backward without a prior Forward");
    }
    input = it->second;
  }
  if (input.size(0) != grad_output.batch) {
    return Status::InvalidArgument(what + ": batch " + std::to_string(grad_output.batch) +
                                   ", its last Forward had " + std::to_string(input.size(0)));
  }
  FL_RETURN_IF_ERROR(CheckFinite(grad_output, what));
  torch::Tensor grad = ToTensor(grad_output, impl_->device);
  FL_ASSIGN_OR_RETURN(torch::Tensor grad_input, impl_->Submit(PassKind::kBackward, input, grad));
  return ToTokenBatch(grad_input);
}

void SplitBodyServer::Close(uint64_t session) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->saved.erase(session);
  impl_->closed.insert(session);
}

int64_t SplitBodyServer::tokens() const { return impl_->tokens; }
int64_t SplitBodyServer::width() const { return impl_->options.vit.width; }

BodyPassCounts SplitBodyServer::counts() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  BodyPassCounts counts = impl_->counts;
  counts.saved_sessions = static_cast<int64_t>(impl_->saved.size());
  return counts;
}

Result<TokenTensor> ForwardTokens(SplitBodyServer& body, uint64_t session,
                                  const TokenTensor& activations, const SplitTokenRanges& ranges) {
  FL_ASSIGN_OR_RETURN(TokenTensor z, body.Forward(session, activations));
  if (ranges.output == z.tokens) return z;
  return SliceTokens(z, 0, ranges.output);
}

Result<TokenTensor> BackwardTokens(SplitBodyServer& body, uint64_t session,
                                   const TokenTensor& grad_output, const SplitTokenRanges& ranges) {
  if (grad_output.tokens != ranges.output) {
    return Status::InvalidArgument("split output gradient has " +
                                   std::to_string(grad_output.tokens) + " tokens, not " +
                                   std::to_string(ranges.output));
  }
  const int64_t tokens = body.tokens();
  FL_ASSIGN_OR_RETURN(TokenTensor grad_a, body.Backward(session, PadTokens(grad_output, tokens)));
  if (ranges.grad_begin == 0 && ranges.grad_end == tokens) return grad_a;
  return SliceTokens(grad_a, ranges.grad_begin, ranges.grad_end);
}

}  // namespace fl::internal
