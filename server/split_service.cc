#include "server/split_service.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "codec/dense_codec.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

// A session's server-side state, shared by its SplitServerSession and the service's
// table (which the idle sweeper reads).
struct SessionState {
  uint64_t id = 0;
  uint64_t client_id = 0;
  uint64_t round = 0;
  Encoding encoding = Encoding::kDenseF32;
  SplitTokenRanges ranges;
  // Guarded by Core::mu.
  uint64_t last_use_us = 0;
  bool busy = false;          // a step is running (the sweeper leaves it alone)
  int64_t forward_batch = 0;  // > 0: a Forward awaits its (optional) Backward
  bool ended = false;
  Status end;                   // why it ended (OK: Finish)
  bool end_reported = false;    // the client has been told `end`
  uint64_t bytes_received = 0;  // tensor bytes the client sent
};

std::string SessionName(const SessionState& s) {
  return "split session " + std::to_string(s.id) + " of client " + std::to_string(s.client_id);
}

// What the service and its sessions share; sessions hold it by shared_ptr so a session
// the transport still holds stays safe after the service is gone.
struct Core {
  SplitServiceOptions options;
  Env* env = nullptr;
  Coordinator* coordinator = nullptr;
  std::unique_ptr<SplitBodyServer> body;
  std::string body_name;  // VitBodyName of the body served

  mutable std::mutex mu;
  uint64_t next_id = 1;                                    // guarded by mu
  std::map<uint64_t, std::shared_ptr<SessionState>> open;  // guarded by mu
  std::set<uint64_t> clients;                              // guarded by mu
  SplitServiceStats stats;                                 // guarded by mu
  bool stopped = false;                                    // guarded by mu

  // Ends `s` with `status` once: frees its slot and activations and, for an error
  // caused by the client (`record`), writes its ledger row.
  void End(const std::shared_ptr<SessionState>& s, const Status& status, bool record) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!MarkEndedLocked(s, status, record)) return;
    }
    Release(*s, status, record);
  }

  // REQUIRES mu. Marks `s` ended unless it already is (false); no step can begin after.
  bool MarkEndedLocked(const std::shared_ptr<SessionState>& s, const Status& status, bool record) {
    if (s->ended) return false;
    s->ended = true;
    s->end = status;
    open.erase(s->id);
    clients.erase(s->client_id);
    if (!status.ok() && record) ++stats.sessions_failed;
    return true;
  }

  // The rest of ending a session marked ended, without mu.
  void Release(const SessionState& s, const Status& status, bool record) {
    body->Close(s.id);
    if (status.ok() || !record) return;
    coordinator->RecordSplitRefusal(s.client_id, s.round, status, s.bytes_received);
  }
};

class ServerSession final : public SplitServerSession {
 public:
  ServerSession(std::shared_ptr<Core> core, std::shared_ptr<SessionState> state)
      : core_(std::move(core)), s_(std::move(state)) {}
  ~ServerSession() override { Fail(Status::Cancelled("the client left without Finish")); }

  int64_t tokens() const override { return core_->body->tokens(); }
  int64_t width() const override { return core_->body->width(); }
  int64_t max_batch() const override { return core_->options.max_batch_samples; }
  Encoding encoding() const override { return s_->encoding; }
  SplitTokenRanges ranges() const override { return s_->ranges; }

  Result<EncodedTokens> Forward(const EncodedTokens& activations) override {
    FL_RETURN_IF_ERROR(Begin());
    return Finished(RunForward(activations));
  }

  Result<EncodedTokens> Backward(const EncodedTokens& grad_output) override {
    FL_RETURN_IF_ERROR(Begin());
    return Finished(RunBackward(grad_output));
  }

  Status Finish() override {
    core_->End(s_, Status::Ok(), /*record=*/false);
    return Status::Ok();
  }

  void Fail(const Status& status) override {
    if (s_->forward_batch == 0) return core_->End(s_, status, /*record=*/true);
    core_->End(
        s_, Status(status.code(), status.message() + " (mid-step: a Forward without its Backward)"),
        /*record=*/true);
  }

 private:
  // Starts a step: refuses one on an ended session (a server-side end is reported once,
  // as it was, then FailedPrecondition) and keeps the sweeper away while it runs.
  Status Begin() {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (s_->ended) {
      if (!s_->end.ok() && !s_->end_reported) {
        s_->end_reported = true;
        return s_->end;
      }
      return Status::FailedPrecondition(SessionName(*s_) + " has ended" +
                                        (s_->end.ok() ? "" : " (" + s_->end.ToString() + ")"));
    }
    s_->busy = true;
    s_->last_use_us = core_->env->NowMicros();
    return Status::Ok();
  }

  // Ends the step: an error ends the session (one ledger row).
  Result<EncodedTokens> Finished(Result<EncodedTokens> result) {
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      s_->busy = false;
      s_->last_use_us = core_->env->NowMicros();
      if (!result.ok()) s_->end_reported = true;  // the client gets this very status
    }
    if (!result.ok()) core_->End(s_, result.status(), /*record=*/true);
    return result;
  }

  // The checks every tensor from the client passes before the body sees it; `batch` is
  // the batch it must have (0: any from 1 to max_batch_samples), `tokens` its tokens
  // and `takes` who says so.
  Result<TokenTensor> Receive(const EncodedTokens& in, int64_t batch, int64_t tokens,
                              const char* takes, const char* what) {
    s_->bytes_received += in.values.size();
    FL_RETURN_IF_ERROR(core_->coordinator->CheckTrainingFor(s_->client_id, s_->round));
    const std::string name = std::string(what) + " of " + SessionName(*s_);
    if (in.encoding != s_->encoding) {
      return Status::InvalidArgument(name + " is encoded as " + EncodingName(in.encoding) +
                                     ", the session as " + EncodingName(s_->encoding));
    }
    if (in.tokens != tokens || in.width != width()) {
      return Status::InvalidArgument(name + " has " + std::to_string(in.tokens) +
                                     " tokens of width " + std::to_string(in.width) + "; " + takes +
                                     " takes " + std::to_string(tokens) + " of width " +
                                     std::to_string(width()));
    }
    if (batch == 0 && in.batch > max_batch()) {
      return Status::ResourceExhausted(name + " has a batch of " + std::to_string(in.batch) +
                                       ", over the server's limit of " +
                                       std::to_string(max_batch()));
    }
    if (batch != 0 && in.batch != batch) {
      return Status::InvalidArgument(name + " has a batch of " + std::to_string(in.batch) +
                                     ", its Forward had " + std::to_string(batch));
    }
    Result<TokenTensor> tensor = DecodeTokens(in);
    if (!tensor.ok()) return tensor.status().WithContext(name);
    return tensor;
  }

  Result<EncodedTokens> RunForward(const EncodedTokens& activations) {
    FL_ASSIGN_OR_RETURN(TokenTensor a, Receive(activations, 0, tokens(), "the body", "Forward"));
    FL_ASSIGN_OR_RETURN(TokenTensor z, ForwardTokens(*core_->body, s_->id, a, s_->ranges));
    s_->forward_batch = a.batch;
    return EncodeTokens(z, s_->encoding);
  }

  Result<EncodedTokens> RunBackward(const EncodedTokens& grad_output) {
    if (s_->forward_batch == 0) {
      return Status::FailedPrecondition(SessionName(*s_) + ": Backward without a Forward");
    }
    FL_ASSIGN_OR_RETURN(TokenTensor g, Receive(grad_output, s_->forward_batch, s_->ranges.output,
                                               "the session's output", "Backward"));
    FL_ASSIGN_OR_RETURN(TokenTensor grad_a, BackwardTokens(*core_->body, s_->id, g, s_->ranges));
    s_->forward_batch = 0;
    return EncodeTokens(grad_a, s_->encoding);
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<SessionState> s_;
};

class SplitServiceImpl final : public SplitService {
 public:
  explicit SplitServiceImpl(std::shared_ptr<Core> core) : core_(std::move(core)) {
    if (core_->options.sweep_interval.count() > 0) sweeper_ = std::thread([this] { Sweep(); });
  }

  ~SplitServiceImpl() override {
    std::vector<std::shared_ptr<SessionState>> open;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->stopped = true;
      for (const auto& [id, s] : core_->open) open.push_back(s);
    }
    { std::lock_guard<std::mutex> lock(sweep_mu_); }  // the sweeper waits or sees `stopped`
    sweep_cv_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
    for (const auto& s : open) {
      core_->End(s, Status::Aborted("the server stopped its split service"), /*record=*/false);
    }
  }

  // The body a client's cut expects must be the one served (empty: any).
  Status CheckBody(const std::string& expected) const {
    constexpr size_t kMaxBodyName = 256;
    if (expected.size() > kMaxBodyName) {
      return Status::InvalidArgument("split body name of " + std::to_string(expected.size()) +
                                     " bytes (at most " + std::to_string(kMaxBodyName) + ")");
    }
    if (expected.empty() || expected == core_->body_name) return Status::Ok();
    return Status::FailedPrecondition("this server's split body is " + core_->body_name +
                                      "; the client was cut for " + expected);
  }

  Result<std::unique_ptr<SplitServerSession>> Open(const Session& who,
                                                   const SplitSessionOptions& options) override {
    if (!IsDenseEncoding(options.encoding)) {
      return Status::InvalidArgument("split tensors travel as f32, f16 or bf16, not " +
                                     EncodingName(options.encoding));
    }
    FL_ASSIGN_OR_RETURN(SplitTokenRanges ranges,
                        ResolveTokenRanges(options, core_->body->tokens()));
    FL_RETURN_IF_ERROR(CheckBody(options.body));
    FL_RETURN_IF_ERROR(core_->coordinator->CheckTrainingFor(who.client_id, options.round));
    auto state = std::make_shared<SessionState>();
    state->ranges = ranges;
    state->client_id = who.client_id;
    state->round = options.round;
    state->encoding = options.encoding;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (core_->stopped) return Status::Aborted("the server stopped its split service");
      if (core_->clients.count(who.client_id) != 0) {
        return Status::ResourceExhausted("client " + std::to_string(who.client_id) +
                                         " already holds a split session");
      }
      if (core_->open.size() >= static_cast<size_t>(core_->options.max_sessions)) {
        return Status::ResourceExhausted("the server holds its maximum of " +
                                         std::to_string(core_->options.max_sessions) +
                                         " split sessions");
      }
      state->id = core_->next_id++;
      state->last_use_us = core_->env->NowMicros();
      core_->open[state->id] = state;
      core_->clients.insert(who.client_id);
      ++core_->stats.sessions_opened;
    }
    return std::unique_ptr<SplitServerSession>(new ServerSession(core_, std::move(state)));
  }

  int EndIdleSessions() override {
    const uint64_t now = core_->env->NowMicros();
    const uint64_t limit = static_cast<uint64_t>(core_->options.idle_timeout.count()) * 1000;
    const Status idle = Status::Aborted("no request for " +
                                        std::to_string(core_->options.idle_timeout.count() / 1000) +
                                        " s (idle timeout)");
    std::vector<std::shared_ptr<SessionState>> ended;
    {
      // Marked under the same lock that found them idle, so no step begins in between.
      std::lock_guard<std::mutex> lock(core_->mu);
      for (const auto& [id, s] : core_->open) {
        if (!s->busy && now - std::min(now, s->last_use_us) >= limit) ended.push_back(s);
      }
      for (const auto& s : ended) core_->MarkEndedLocked(s, idle, /*record=*/true);
      core_->stats.sessions_ended_idle += static_cast<int64_t>(ended.size());
    }
    for (const auto& s : ended) core_->Release(*s, idle, /*record=*/true);
    return static_cast<int>(ended.size());
  }

  SplitServiceStats Stats() const override {
    SplitServiceStats stats;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      stats = core_->stats;
      stats.open_sessions = static_cast<int64_t>(core_->open.size());
      for (const auto& [id, s] : core_->open) stats.steps_running += s->busy ? 1 : 0;
    }
    stats.body = core_->body->counts();
    return stats;
  }

 private:
  void Sweep() {
    std::unique_lock<std::mutex> lock(sweep_mu_);
    while (!sweep_cv_.wait_for(lock, core_->options.sweep_interval, [this] {
      std::lock_guard<std::mutex> core_lock(core_->mu);
      return core_->stopped;
    })) {
      lock.unlock();
      EndIdleSessions();
      lock.lock();
    }
  }

  std::shared_ptr<Core> core_;
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  std::thread sweeper_;
};

Status ValidateOptions(const SplitServiceOptions& o) {
  if (o.max_sessions < 1) return Status::InvalidArgument("split max_sessions must be >= 1");
  if (o.max_batch_samples < 1) {
    return Status::InvalidArgument("split max_batch_samples must be >= 1");
  }
  if (o.idle_timeout.count() <= 0) {
    return Status::InvalidArgument("split idle_timeout must be positive");
  }
  if (o.sweep_interval.count() < 0) {
    return Status::InvalidArgument("split sweep_interval must be >= 0");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<SplitService>> SplitService::Create(const SplitServiceOptions& options,
                                                           const ParamSet* backbone,
                                                           Coordinator* coordinator) {
  if (coordinator == nullptr) return Status::InvalidArgument("split service: no coordinator");
  FL_RETURN_IF_ERROR(ValidateOptions(options));
  auto core = std::make_shared<Core>();
  core->options = options;
  core->env = options.env != nullptr ? options.env : Env::Default();
  core->coordinator = coordinator;
  FL_ASSIGN_OR_RETURN(core->body, SplitBodyServer::Create(options.body, backbone));
  core->body_name = VitBodyName(options.body.vit, options.body.begin, options.body.end);
  return std::unique_ptr<SplitService>(new SplitServiceImpl(std::move(core)));
}

}  // namespace fl::internal
