#include "server/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "codec/param_io.h"
#include "core/logging.h"
#include "crypto/sha256.h"
#include "fl/env.h"
#include "fl/v1/fl.grpc.pb.h"
#include "proto/wire.h"
#include "server/reaction_order.h"
#include "server/work_queue.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;

// Parked long polls ask the Coordinator again at least this often, for the changes it
// makes by the clock alone (async.task_timeout, client_timeout) and does not signal.
constexpr milliseconds kRescanInterval{1000};
// A long poll answers this long before the caller's deadline so the reply arrives.
constexpr milliseconds kDeadlineMargin{250};

// The serialized form of one model version, shared by all concurrent downloads.
struct SerializedModel {
  uint64_t version = 0;
  uint64_t layout_hash = 0;
  uint64_t num_params = 0;
  std::string bytes;
  std::string sha256;
};

// A callback reactor whose reactions are ordered for ThreadSanitizer
// (server/reaction_order.h): handing the call back to gRPC (Finish, StartRead,
// StartWrite) ends a reaction, since gRPC may run the next one on another thread at
// once; OnDone begins the last one and deletes the reactor.
template <class Base>
class OrderedReactor : public Base {
 public:
  void Finish(grpc::Status status) {
    ReactionEnds(this);
    Base::Finish(std::move(status));
  }
  void OnDone() override {
    ReactionBegins(this);
    delete this;
  }

 protected:
  template <class Message>
  void StartRead(Message* into) {
    ReactionEnds(this);
    Base::StartRead(into);
  }
  template <class Message>
  void StartWrite(const Message* chunk) {
    ReactionEnds(this);
    Base::StartWrite(chunk);
  }
};

// Parses a message received as raw bytes, so malformed input (not protobuf, or a
// string field that is not valid UTF-8) is INVALID_ARGUMENT with a message instead of
// gRPC's INTERNAL with none.
template <typename Message>
Result<Message> ParseRaw(const grpc::ByteBuffer& buffer, const char* what) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (buffer.Valid() && buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  Message message;
  if (!message.ParseFromString(bytes)) {
    return Status::InvalidArgument(std::string("malformed ") + what +
                                   " (not a valid protobuf message, or a string field "
                                   "that is not valid UTF-8)");
  }
  return message;
}

grpc::ByteBuffer SerializeRaw(const google::protobuf::MessageLite& message) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// The ModelChunk {data: blob[offset, offset + n)} without copying the data: the bytes go
// out as a slice of the shared blob, which the slice keeps alive until gRPC has sent it,
// so concurrent downloads of one model share its memory.
grpc::ByteBuffer DataChunk(const std::shared_ptr<const std::string>& blob, size_t offset,
                           size_t n) {
  char prefix[11];
  size_t len = 0;
  prefix[len++] = static_cast<char>((2 << 3) | 2);  // ModelChunk.data: field 2, bytes
  uint64_t v = n;  // its length, a varint
  for (; v >= 0x80; v >>= 7) prefix[len++] = static_cast<char>((v & 0x7f) | 0x80);
  prefix[len++] = static_cast<char>(v);
  auto* keep = new std::shared_ptr<const std::string>(blob);
  grpc::Slice slices[2] = {
      grpc::Slice(prefix, len),
      grpc::Slice(const_cast<char*>(blob->data() + offset), n,
                  [](void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); },
                  keep)};
  return grpc::ByteBuffer(slices, 2);
}

// SplitStep stays on the synchronous API (see FederatedLearningService) but, like the
// callback calls, receives raw bytes and parses them with ParseRaw. Installed the way
// gRPC's generated "streamed" variants are: on the wire nothing changes (every HTTP/2
// call is a stream); the handler reads the request messages itself.
template <class Base>
class WithRawSplitStep : public Base {
 public:
  using SplitStream = grpc::ServerReaderWriter<v1::SplitResponse, grpc::ByteBuffer>;

  WithRawSplitStep() {
    // The index is the rpc's position in fl.proto's service FederatedLearning.
    Base::MarkMethodStreamed(
        6, new grpc::internal::TemplatedBidiStreamingHandler<SplitStream, false>(
               [this](grpc::ServerContext* context, SplitStream* stream) {
                 return RawSplitStep(context, stream);
               }));
  }
  virtual grpc::Status RawSplitStep(grpc::ServerContext* context, SplitStream* stream) = 0;

 private:
  // The typed handler this replaces is never installed.
  grpc::Status SplitStep(grpc::ServerContext*,
                         grpc::ServerReaderWriter<v1::SplitResponse, v1::SplitRequest>*) final {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  }
};

// Every call but SplitStep runs on gRPC's callback API and receives raw bytes (see
// ParseRaw).
using ServiceBase = WithRawSplitStep<v1::FederatedLearning::WithRawCallbackMethod_Join<
    v1::FederatedLearning::WithRawCallbackMethod_Heartbeat<
        v1::FederatedLearning::WithRawCallbackMethod_PullTask<
            v1::FederatedLearning::WithRawCallbackMethod_FetchModel<
                v1::FederatedLearning::WithRawCallbackMethod_PushUpdate<
                    v1::FederatedLearning::WithRawCallbackMethod_GetStatus<
                        v1::FederatedLearning::Service>>>>>>>;

// Runs on gRPC's callback (reactor) API so that a call which waits holds no thread:
// thousands of clients keep a long poll or a slow upload open at once. The callback
// API forbids blocking on its threads, so nothing that waits runs there:
//  - PullTask answers at once when the Coordinator has an answer (PullTask with no
//    wait); otherwise the poll is parked (ParkedPolls). One thread answers parked polls
//    when the Coordinator signals a change (Coordinator::SetTaskListener), at their
//    deadline, on cancellation, and once a second for changes made by the clock alone.
//  - PushUpdate reads chunks as they arrive; the blocking parts (Coordinator::
//    PushUpdate waits for fsync; a ledger row for a refused upload is a SQLite write)
//    run on a few threads of their own (WorkQueue, GrpcServerOptions::upload_threads).
//    Bytes in flight are bounded by flow control: an upload is admitted (its declared
//    size counted against max_inflight_upload_bytes) before its data is read, and waits
//    without a read outstanding while the budget is spent, so HTTP/2 flow control holds
//    the client back (UploadBudget).
//  - FetchModel writes the cached serialized model chunk by chunk as the client takes it.
// SplitStep stays synchronous: each step runs the split body's forward or backward
// pass, real compute that would otherwise need a thread pool of its own.
class FederatedLearningService final : public ServiceBase {
 public:
  FederatedLearningService(Coordinator* coordinator, const GrpcServerOptions& options)
      : coordinator_(coordinator),
        env_(options.env != nullptr ? options.env : Env::Default()),
        max_poll_wait_(options.max_poll_wait),
        max_update_bytes_(options.max_update_bytes),
        idle_timeout_us_(static_cast<uint64_t>(options.stream_idle_timeout.count()) * 1000),
        max_calls_per_client_(options.max_calls_per_client),
        split_(options.split),
        serialized_versions_(static_cast<size_t>(std::max(1, options.serialized_versions))),
        uploads_(options.max_inflight_upload_bytes),
        work_(options.upload_threads) {
    coordinator_->SetTaskListener([this] { polls_.Changed(); });
  }
  ~FederatedLearningService() override { coordinator_->SetTaskListener(nullptr); }

  // Cancels every stream that moved no message for stream_idle_timeout. Called by the
  // server's ticker.
  void CancelIdleStreams() {
    const uint64_t now = env_->NowMicros();
    std::lock_guard<std::mutex> lock(streams_mu_);
    for (auto& [context, watch] : streams_) {
      if (!watch.timed_out && !watch.paused &&
          now - std::min(now, watch.last_us) >= idle_timeout_us_) {
        watch.timed_out = true;
        ++idle_cancelled_;
        FL_LOG(WARNING) << watch.what << " idle for "
                        << (now - watch.last_us) / 1000 << " ms: cancelled";
        context->TryCancel();
      }
    }
  }

  GrpcServerStats Stats() const {
    GrpcServerStats stats;
    stats.inflight_upload_bytes = uploads_.held();
    stats.uploads_waiting = uploads_.waiting();
    stats.parked_polls = polls_.size();
    stats.calls_in_flight = static_cast<uint64_t>(std::max(0, active_calls_.load()));
    {
      std::lock_guard<std::mutex> lock(slots_mu_);
      stats.calls_refused_per_client = calls_refused_;
    }
    std::lock_guard<std::mutex> lock(streams_mu_);
    stats.open_streams = streams_.size();
    stats.idle_streams_cancelled = idle_cancelled_;
    return stats;
  }

  // Answers parked long polls now, and later ones at once.
  void BeginShutdown() {
    shutting_down_.store(true);
    polls_.AnswerAll();
  }

  // Waits until no handler is running or `deadline` passes; true if idle.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) const {
    while (active_calls_.load() > 0) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return true;
  }

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) override {
    return ServeRaw<v1::JoinRequest>(
        context, raw, out, "JoinRequest", /*authenticate=*/false,
        [&](const v1::JoinRequest& request, const Session&) -> Result<v1::JoinResponse> {
          FL_ASSIGN_OR_RETURN(JoinReply reply, coordinator_->Join(request.enrollment_token(),
                                                                  request.client_name()));
          v1::JoinResponse response;
          response.set_client_id(reply.client_id);
          response.set_session_token(reply.session_token);
          return response;
        });
  }

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) override {
    return ServeRaw<v1::HeartbeatRequest>(
        context, raw, out, "HeartbeatRequest", /*authenticate=*/true,
        [&](const v1::HeartbeatRequest&, const Session& session) -> Result<v1::HeartbeatResponse> {
          FL_RETURN_IF_ERROR(coordinator_->Heartbeat(session));
          return v1::HeartbeatResponse();
        });
  }

  grpc::ServerUnaryReactor* PullTask(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) override {
    auto* poll = new LongPoll(this, context, out);
    poll->Start(*raw);
    return poll;
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchModel(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* raw) override {
    auto* download = new Download(this, context);
    download->Start(*raw);
    return download;
  }

  grpc::ServerReadReactor<grpc::ByteBuffer>* PushUpdate(grpc::CallbackServerContext* context,
                                                        grpc::ByteBuffer* out) override {
    auto* upload = new Upload(this, context, out);
    upload->Start();
    return upload;
  }

  // One split session per stream (SplitService does every check): `open`, then
  // forward/backward steps until the client half-closes (Finish) or the session fails.
  grpc::Status RawSplitStep(grpc::ServerContext* context, SplitStream* stream) override {
    CallGuard guard(&active_calls_);
    StreamWatch watch(this, context, "split session");
    Result<Session> session = Authenticate(*context);
    if (!session.ok()) return ToGrpcStatus(session.status());
    if (split_ == nullptr) {
      return ToGrpcStatus(Status::Unimplemented("this server serves no split body"));
    }
    Result<v1::SplitRequest> first = ReadRequest<v1::SplitRequest>(stream, "SplitRequest");
    if (!first.ok()) return ToGrpcStatus(first.status());
    watch.Touch();
    v1::SplitRequest request = std::move(first).value();
    if (!request.has_open()) {
      return ToGrpcStatus(
          Status::InvalidArgument("the first message of a split session must be open"));
    }
    Result<SplitSessionOptions> options = FromProto(request.open());
    if (!options.ok()) return ToGrpcStatus(options.status());
    Result<std::unique_ptr<SplitServerSession>> opened = split_->Open(*session, *options);
    if (!opened.ok()) return ToGrpcStatus(opened.status());
    SplitServerSession& split = **opened;
    v1::SplitResponse response;
    response.mutable_opened()->set_tokens(static_cast<uint64_t>(split.tokens()));
    response.mutable_opened()->set_width(static_cast<uint64_t>(split.width()));
    response.mutable_opened()->set_max_batch(static_cast<uint64_t>(split.max_batch()));
    ToProto(split.ranges(), response.mutable_opened());
    if (!stream->Write(response)) return SplitLost(&split, "before it opened");
    watch.Touch();
    grpc::ByteBuffer raw;
    while (stream->Read(&raw)) {
      watch.Touch();
      Result<v1::SplitRequest> parsed = ParseRaw<v1::SplitRequest>(raw, "SplitRequest");
      if (!parsed.ok()) {
        split.Fail(parsed.status());
        return ToGrpcStatus(parsed.status());
      }
      request = std::move(parsed).value();
      Result<EncodedTokens> answer = SplitAnswer(&split, request);
      if (!answer.ok()) return ToGrpcStatus(answer.status());
      response.Clear();
      ToProto(*answer, request.has_forward() ? response.mutable_output()
                                             : response.mutable_input_grad());
      if (!stream->Write(response)) return SplitLost(&split, "mid-step");
      watch.Touch();
    }
    if (context->IsCancelled() || watch.timed_out()) return SplitLost(&split, "between steps");
    return ToGrpcStatus(split.Finish());  // half-closed: the client's Finish
  }

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) override {
    return ServeRaw<v1::GetStatusRequest>(
        context, raw, out, "GetStatusRequest", /*authenticate=*/true,
        [&](const v1::GetStatusRequest&, const Session&) -> Result<v1::GetStatusResponse> {
          v1::GetStatusResponse response;
          ToProto(coordinator_->GetStatus(), &response);
          return response;
        });
  }

 private:
  // One of a client's blocking calls (PullTask, FetchModel, PushUpdate) in flight; at
  // most max_calls_per_client at once, so one client cannot hold the server's threads.
  class ClientSlot {
   public:
    ClientSlot(FederatedLearningService* service, uint64_t client_id)
        : service_(service), client_id_(client_id) {
      std::lock_guard<std::mutex> lock(service_->slots_mu_);
      int& n = service_->calls_per_client_[client_id_];
      ok_ = service_->max_calls_per_client_ == 0 || n < service_->max_calls_per_client_;
      if (ok_) {
        ++n;
      } else {
        ++service_->calls_refused_;
      }
    }
    ~ClientSlot() {
      std::lock_guard<std::mutex> lock(service_->slots_mu_);
      auto it = service_->calls_per_client_.find(client_id_);
      if (ok_) --it->second;
      if (it->second == 0) service_->calls_per_client_.erase(it);
    }
    bool ok() const { return ok_; }
    Status Refusal() const {
      return Status::ResourceExhausted("client " + std::to_string(client_id_) + " already has " +
                                       std::to_string(service_->max_calls_per_client_) +
                                       " calls in flight (server.max_calls_per_client)");
    }

   private:
    FederatedLearningService* service_;
    uint64_t client_id_;
    bool ok_ = false;
  };

  // Registers a streaming call for the idle watchdog while it runs.
  class StreamWatch {
   public:
    StreamWatch(FederatedLearningService* service, grpc::ServerContextBase* context,
                const char* what)
        : service_(service), context_(context) {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      service_->streams_[context_] = Watched{service_->env_->NowMicros(), false, false, what};
    }
    ~StreamWatch() {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      service_->streams_.erase(context_);
    }
    // A message moved: the idle clock restarts.
    void Touch() {
      const uint64_t now = service_->env_->NowMicros();
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      service_->streams_[context_].last_us = now;
    }
    // While the server itself holds the call back (an upload waiting for room in the
    // budget, or for its fold and fsync), the idle clock stops; Resume restarts it.
    void Pause() {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      service_->streams_[context_].paused = true;
    }
    void Resume() {
      const uint64_t now = service_->env_->NowMicros();
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      Watched& watched = service_->streams_[context_];
      watched.paused = false;
      watched.last_us = now;
    }
    // True once the watchdog cancelled the call for idleness.
    bool timed_out() const {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      return service_->streams_[context_].timed_out;
    }

   private:
    FederatedLearningService* service_;
    grpc::ServerContextBase* context_;
  };

  struct Watched {
    uint64_t last_us = 0;
    bool timed_out = false;
    bool paused = false;
    const char* what = "";
  };

  // Runs a raw callback call to completion: parses `raw` as a Request (INVALID_ARGUMENT
  // if malformed), checks the session token if `authenticate`, and answers with what
  // `body(request, session)` returns, a Result of the response message.
  template <typename Request, typename Body>
  grpc::ServerUnaryReactor* ServeRaw(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* raw, grpc::ByteBuffer* out,
                                     const char* what, bool authenticate, Body&& body) {
    CallGuard guard(&active_calls_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish([&]() -> grpc::Status {
      Result<Request> request = ParseRaw<Request>(*raw, what);
      if (!request.ok()) return ToGrpcStatus(request.status());
      Session session;
      if (authenticate) {
        Result<Session> checked = Authenticate(*context);
        if (!checked.ok()) return ToGrpcStatus(checked.status());
        session = *checked;
      }
      auto response = body(*request, session);
      if (!response.ok()) return ToGrpcStatus(response.status());
      *out = SerializeRaw(*response);
      return grpc::Status::OK;
    }());
    return reactor;
  }

  // Reads the one request message of a unary or server-streaming call.
  template <typename Request, typename Stream>
  static Result<Request> ReadRequest(Stream* stream, const char* what) {
    grpc::ByteBuffer raw;
    if (!stream->Read(&raw)) return Status::Cancelled(std::string(what) + " never arrived");
    return ParseRaw<Request>(raw, what);
  }

  // Counts running handlers, so Shutdown can tell when the server is idle.
  class CallGuard {
   public:
    explicit CallGuard(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
    ~CallGuard() { count_->fetch_sub(1); }

   private:
    std::atomic<int>* count_;
  };

  // The one place a call's session token is checked.
  Result<Session> Authenticate(const grpc::ServerContextBase& context) {
    std::optional<std::string> token = SessionTokenFromMetadata(context.client_metadata());
    if (!token.has_value()) {
      return Status::Unauthenticated("missing session token (authorization: Bearer ...)");
    }
    return coordinator_->Authenticate(*token);
  }

  // The answer to one step of a split session; a malformed step fails the session too.
  static Result<EncodedTokens> SplitAnswer(SplitServerSession* split,
                                           const v1::SplitRequest& request) {
    if (!request.has_forward() && !request.has_backward()) {
      Status refused =
          Status::InvalidArgument("after open, a split session sends forward or backward only");
      split->Fail(refused);
      return refused;
    }
    Result<EncodedTokens> tensor =
        FromProto(request.has_forward() ? request.forward() : request.backward());
    if (!tensor.ok()) {
      split->Fail(tensor.status());
      return tensor.status();
    }
    return request.has_forward() ? split->Forward(*tensor) : split->Backward(*tensor);
  }

  // A split stream cancelled by the client, the connection or the idle watchdog: the
  // session fails (one ledger row, unless it had already ended).
  static grpc::Status SplitLost(SplitServerSession* split, const char* when) {
    split->Fail(Status::Cancelled(std::string("stream cancelled ") + when +
                                  " (by the client, the connection or the idle watchdog)"));
    return Cancelled("split session");
  }

  // An update that failed in transport still gets its ledger row.
  grpc::Status Reject(const Session& session, uint64_t round, const Status& status) {
    Status recorded = coordinator_->RecordTransportFailure(session, round, status);
    return ToGrpcStatus(recorded.ok() ? status : recorded);
  }

  static grpc::Status Cancelled(const char* what) {
    return grpc::Status(grpc::StatusCode::CANCELLED, std::string(what) + " cancelled");
  }

  // Serializes each version once, however many clients download it at the same time;
  // keeps the newest serialized_versions_ of them.
  std::shared_ptr<const SerializedModel> Serialized(const ModelSnapshot& snapshot) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto cached = cache_.find(snapshot.version);
    if (cached != cache_.end()) return cached->second;
    // Room first: an evicted version's bytes are freed before the new ones exist.
    while (!cache_.empty() && cache_.size() >= serialized_versions_) {
      if (cache_.begin()->first > snapshot.version) return Serialize(snapshot);  // too old to keep
      cache_.erase(cache_.begin());
    }
    return cache_[snapshot.version] = Serialize(snapshot);
  }

  static std::shared_ptr<const SerializedModel> Serialize(const ModelSnapshot& snapshot) {
    auto model = std::make_shared<SerializedModel>();
    model->version = snapshot.version;
    model->layout_hash = snapshot.params->layout().hash();
    model->num_params = snapshot.params->size();
    model->bytes = SerializeParamSet(*snapshot.params);
    model->sha256 = Sha256(model->bytes);
    return model;
  }

  // One PullTask call: answered at once when the Coordinator has an answer, otherwise
  // parked in polls_, which alone answers it from then on.
  class LongPoll final : public OrderedReactor<grpc::ServerUnaryReactor> {
   public:
    LongPoll(FederatedLearningService* service, grpc::CallbackServerContext* context,
             grpc::ByteBuffer* out)
        : service_(service), context_(context), out_(out), guard_(&service->active_calls_) {}

    void Start(const grpc::ByteBuffer& raw) {
      ReactionScope reaction(this);
      Result<v1::PullTaskRequest> request = ParseRaw<v1::PullTaskRequest>(raw, "PullTaskRequest");
      if (!request.ok()) return Finish(ToGrpcStatus(request.status()));
      Result<Session> session = service_->Authenticate(*context_);
      if (!session.ok()) return Finish(ToGrpcStatus(session.status()));
      session_ = *session;
      slot_.emplace(service_, session_.client_id);
      if (!slot_->ok()) return Finish(ToGrpcStatus(slot_->Refusal()));
      milliseconds wait = std::min(milliseconds(request->wait_ms()), service_->max_poll_wait_);
      const auto until_deadline = std::chrono::duration_cast<milliseconds>(
          context_->deadline() - std::chrono::system_clock::now() - kDeadlineMargin);
      wait = std::max(milliseconds(0), std::min(wait, until_deadline));
      Result<Task> task = Ask();
      if (!task.ok() || task->kind != TaskKind::kWait || wait == milliseconds(0) ||
          service_->shutting_down_.load()) {
        return Answer(task);
      }
      service_->polls_.Park(this, std::chrono::steady_clock::now() + wait);
    }

    // The Coordinator's answer now, without waiting.
    Result<Task> Ask() { return service_->coordinator_->PullTask(session_, milliseconds(0)); }

    void Answer(const Result<Task>& task) {
      if (!task.ok()) return Finish(ToGrpcStatus(task.status()));
      v1::PullTaskResponse response;
      ToProto(*task, response.mutable_task());
      *out_ = SerializeRaw(response);
      Finish(grpc::Status::OK);
    }

    void OnCancel() override {
      ReactionScope reaction(this);
      cancelled_.store(true);
      service_->polls_.Cancel(this);
    }
    // Set before OnCancel looks for the poll, so one cancelled before it was parked is
    // still answered at once (ParkedPolls::Park checks it).
    bool cancelled() const { return cancelled_.load(); }

   private:
    FederatedLearningService* const service_;
    grpc::CallbackServerContext* const context_;
    grpc::ByteBuffer* const out_;
    std::atomic<bool> cancelled_{false};
    CallGuard guard_;
    Session session_;
    std::optional<ClientSlot> slot_;
  };

  // The long polls waiting for a task, each with the time its wait ends. One thread
  // answers them: those the Coordinator has a task (or an error) for after it signals a
  // change, and every second (for changes made by the clock alone); each at the end of
  // its wait with whatever PullTask says then; a cancelled one with CANCELLED; all of
  // them once the server begins shutting down. A parked poll costs no thread.
  class ParkedPolls {
   public:
    ParkedPolls() : thread_([this] { Loop(); }) {}
    ~ParkedPolls() {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      wake_.notify_all();
      thread_.join();
    }

    void Park(LongPoll* poll, std::chrono::steady_clock::time_point until) {
      std::lock_guard<std::mutex> lock(mu_);
      parked_[poll] = until;
      if (poll->cancelled()) cancelled_.insert(poll);
      wake_.notify_all();
    }
    // From the poll's OnCancel; nothing if it is not parked (already answered).
    void Cancel(LongPoll* poll) {
      std::lock_guard<std::mutex> lock(mu_);
      if (parked_.count(poll) == 0) return;
      cancelled_.insert(poll);
      wake_.notify_all();
    }
    // The Coordinator's task listener: cheap, called with its lock held.
    void Changed() {
      std::lock_guard<std::mutex> lock(mu_);
      changed_ = true;
      wake_.notify_all();
    }
    // Shutdown: parked polls are answered now, later ones as soon as they park.
    void AnswerAll() {
      std::lock_guard<std::mutex> lock(mu_);
      answer_all_ = true;
      wake_.notify_all();
    }
    size_t size() const {
      std::lock_guard<std::mutex> lock(mu_);
      return parked_.size();
    }

   private:
    void Loop() {
      std::unique_lock<std::mutex> lock(mu_);
      auto last_scan = std::chrono::steady_clock::now();
      while (!stop_) {
        auto wake_at = last_scan + kRescanInterval;
        for (const auto& [poll, until] : parked_) wake_at = std::min(wake_at, until);
        wake_.wait_until(lock, wake_at, [&] {
          return stop_ || changed_ || !cancelled_.empty() || (answer_all_ && !parked_.empty());
        });
        if (stop_) break;
        const auto now = std::chrono::steady_clock::now();
        std::vector<LongPoll*> cancelled, due, waiting;
        for (auto it = parked_.begin(); it != parked_.end();) {
          if (cancelled_.count(it->first) != 0) {
            cancelled.push_back(it->first);
          } else if (answer_all_ || it->second <= now) {
            due.push_back(it->first);
          } else {
            waiting.push_back(it->first);
            ++it;
            continue;
          }
          it = parked_.erase(it);
        }
        cancelled_.clear();
        const bool rescan = changed_ || now >= last_scan + kRescanInterval;
        changed_ = false;
        if (rescan) last_scan = now;
        lock.unlock();
        // Only this thread finishes a parked poll, so every pointer here is still live.
        for (LongPoll* poll : cancelled) poll->Finish(Cancelled("task poll"));
        for (LongPoll* poll : due) poll->Answer(poll->Ask());
        if (rescan) AnswerReady(waiting);
        lock.lock();
      }
    }

    // Answers each of `polls` the Coordinator now has more than "wait" for.
    void AnswerReady(const std::vector<LongPoll*>& polls) {
      for (LongPoll* poll : polls) {
        Result<Task> task = poll->Ask();
        if (task.ok() && task->kind == TaskKind::kWait) continue;
        {
          std::lock_guard<std::mutex> lock(mu_);
          parked_.erase(poll);
          cancelled_.erase(poll);
        }
        poll->Answer(task);
      }
    }

    mutable std::mutex mu_;
    std::condition_variable wake_;
    std::map<LongPoll*, std::chrono::steady_clock::time_point> parked_;  // guarded by mu_
    std::set<LongPoll*> cancelled_;  // parked ones whose call was cancelled; guarded by mu_
    bool changed_ = false;           // guarded by mu_
    bool answer_all_ = false;        // guarded by mu_
    bool stop_ = false;              // guarded by mu_
    std::thread thread_;             // last: starts once the rest is built
  };

  class Upload;

  // What admitted uploads may hold at once: each is admitted with its declared size
  // (so an admitted upload can always complete; nothing is allocated for it until its
  // bytes arrive). An upload that does not fit waits, in arrival order, with no read
  // outstanding, so HTTP/2 flow control holds its client back.
  class UploadBudget {
   public:
    explicit UploadBudget(uint64_t limit) : limit_(limit) {}

    // True if `bytes` are taken now; otherwise `upload` waits, and its Admitted() runs
    // (on the thread that frees the room) once they are taken for it.
    bool Admit(Upload* upload, uint64_t bytes) {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty() && held_ + bytes <= limit_) {
        held_ += bytes;
        return true;
      }
      waiting_.push_back({upload, bytes});
      return false;
    }
    // Takes a waiting upload out of the line; false if it is not waiting.
    bool Withdraw(Upload* upload) {
      std::vector<Upload*> admitted;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = std::find_if(waiting_.begin(), waiting_.end(),
                               [&](const Waiting& w) { return w.upload == upload; });
        if (it == waiting_.end()) return false;
        waiting_.erase(it);
        AdmitWaitingLocked(&admitted);
      }
      for (Upload* next : admitted) next->Admitted();
      return true;
    }
    void Release(uint64_t bytes) {
      std::vector<Upload*> admitted;
      {
        std::lock_guard<std::mutex> lock(mu_);
        held_ -= bytes;
        AdmitWaitingLocked(&admitted);
      }
      for (Upload* next : admitted) next->Admitted();
    }
    uint64_t held() const {
      std::lock_guard<std::mutex> lock(mu_);
      return held_;
    }
    size_t waiting() const {
      std::lock_guard<std::mutex> lock(mu_);
      return waiting_.size();
    }

   private:
    struct Waiting {
      Upload* upload;
      uint64_t bytes;
    };

    void AdmitWaitingLocked(std::vector<Upload*>* admitted) {
      while (!waiting_.empty() && held_ + waiting_.front().bytes <= limit_) {
        held_ += waiting_.front().bytes;
        admitted->push_back(waiting_.front().upload);
        waiting_.pop_front();
      }
    }

    const uint64_t limit_;
    mutable std::mutex mu_;
    uint64_t held_ = 0;             // guarded by mu_
    std::deque<Waiting> waiting_;   // guarded by mu_
  };

  // One PushUpdate call: reads the header, waits for admission (uploads_), reads the
  // data chunks as they come, then hands the blocking parts to work_.
  class Upload final : public OrderedReactor<grpc::ServerReadReactor<grpc::ByteBuffer>> {
   public:
    Upload(FederatedLearningService* service, grpc::CallbackServerContext* context,
           grpc::ByteBuffer* out)
        : service_(service),
          context_(context),
          out_(out),
          guard_(&service->active_calls_),
          watch_(service, context, "update upload") {}
    ~Upload() override { DropPayload(); }

    void Start() {
      ReactionScope reaction(this);
      Result<Session> session = service_->Authenticate(*context_);
      if (!session.ok()) return Finish(ToGrpcStatus(session.status()));
      session_ = *session;
      slot_.emplace(service_, session_.client_id);
      if (!slot_->ok()) return Reject(slot_->Refusal());
      StartRead(&raw_);
    }

    void OnReadDone(bool ok) override {
      ReactionScope reaction(this);
      if (!ok) return Ended();
      watch_.Touch();
      Result<v1::UpdateChunk> chunk = ParseRaw<v1::UpdateChunk>(raw_, "UpdateChunk");
      raw_.Clear();
      if (!chunk.ok()) return Reject(chunk.status());
      if (!has_header_) return OnHeader(*chunk);
      OnData(*chunk);
    }

    // Called by uploads_ once the declared size is taken for this upload.
    void Admitted() {
      admitted_bytes_ = declared_;
      watch_.Resume();
      payload_.bytes.reserve(declared_);  // pages become resident only as bytes arrive
      StartRead(&raw_);
    }

    void OnCancel() override {
      ReactionScope reaction(this);
      cancelled_.store(true);
      // Waiting for admission there is no read to fail, so the end is recorded here.
      if (service_->uploads_.Withdraw(this)) EndedEarly("before its data", Truncated());
    }

   private:
    void OnHeader(const v1::UpdateChunk& chunk) {
      if (!chunk.has_header()) {
        return Reject(
            Status::InvalidArgument("the first message of an update stream must be its header"));
      }
      round_ = chunk.header().round();
      declared_ = chunk.header().total_bytes();
      Result<UpdateMeta> meta = FromProto(chunk.header());
      if (!meta.ok()) return Reject(meta.status());
      if (declared_ > service_->max_update_bytes_) {
        return Reject(Status::ResourceExhausted(
            "update of " + std::to_string(declared_) + " bytes exceeds the limit of " +
            std::to_string(service_->max_update_bytes_)));
      }
      payload_.meta = std::move(meta).value();
      if (payload_.meta.client_id == 0) payload_.meta.client_id = session_.client_id;
      has_header_ = true;
      // Waiting for room is the server's doing, not the client's: no idle clock meanwhile.
      watch_.Pause();
      if (service_->uploads_.Admit(this, declared_)) Admitted();
    }

    void OnData(const v1::UpdateChunk& chunk) {
      if (!chunk.has_data()) {
        return Reject(Status::InvalidArgument("update stream has a second header"));
      }
      const std::string& data = chunk.data();
      if (data.size() > kMaxChunkBytes) {
        return Reject(Status::ResourceExhausted(
            "update chunk of " + std::to_string(data.size()) +
            " bytes exceeds the chunk limit of " + std::to_string(kMaxChunkBytes)));
      }
      // Checked before appending, so nothing beyond the declared size is ever buffered.
      if (data.size() > declared_ - payload_.bytes.size()) {
        return Reject(Status::ResourceExhausted("update stream exceeds its declared size of " +
                                                std::to_string(declared_) + " bytes"));
      }
      payload_.bytes.append(data);
      StartRead(&raw_);
    }

    // The client half-closed, or the call ended.
    void Ended() {
      if (!has_header_) {
        return EndedEarly("before its header", Status::InvalidArgument("empty update stream"));
      }
      if (cancelled_.load() || watch_.timed_out() || payload_.bytes.size() < declared_) {
        return EndedEarly("before its end", Truncated());
      }
      // Complete: from here on the server is the one taking time (its fold and fsync
      // queue), so the idle clock stops and the answer is never cut off by it.
      watch_.Pause();
      service_->work_.Post([this] {
        Result<PushAck> ack = service_->coordinator_->PushUpdate(session_, payload_);
        DropPayload();
        if (!ack.ok()) return Finish(ToGrpcStatus(ack.status()));
        v1::PushUpdateResponse response;
        response.set_round(ack->round);
        response.set_duplicate(ack->duplicate);
        *out_ = SerializeRaw(response);
        Finish(grpc::Status::OK);
      });
    }

    Status Truncated() const {
      return Status::DataLoss("truncated update: received " +
                              std::to_string(payload_.bytes.size()) + " of " +
                              std::to_string(declared_) + " bytes");
    }

    // An upload that ended before it was complete: stalled (the watchdog cancelled it:
    // DEADLINE_EXCEEDED), cancelled by the client or the connection (CANCELLED), or
    // half-closed early (`otherwise`). Each gets a ledger row with the status returned.
    void EndedEarly(const char* when, const Status& otherwise) {
      if (watch_.timed_out()) {
        return Reject(Status::DeadlineExceeded(
            std::string("update stream stalled ") + when + ": no message for " +
            std::to_string(service_->idle_timeout_us_ / 1000000) + " s"));
      }
      if (cancelled_.load()) {
        return Reject(Status::Cancelled(std::string("update stream cancelled ") + when +
                                        " (by the client or the connection, or a message over "
                                        "gRPC's size limit)"));
      }
      Reject(otherwise);
    }

    // Ends the call with `status`, after its ledger row (a store write: on work_).
    void Reject(const Status& status) {
      DropPayload();
      service_->work_.Post(
          [this, status] { Finish(service_->Reject(session_, round_, status)); });
    }

    // Frees the bytes and their room in the budget.
    void DropPayload() {
      payload_.bytes = std::string();
      if (admitted_bytes_ == 0) return;
      service_->uploads_.Release(admitted_bytes_);
      admitted_bytes_ = 0;
    }

    FederatedLearningService* const service_;
    grpc::CallbackServerContext* const context_;
    grpc::ByteBuffer* const out_;
    CallGuard guard_;
    StreamWatch watch_;
    Session session_;
    std::optional<ClientSlot> slot_;
    grpc::ByteBuffer raw_;
    bool has_header_ = false;
    uint64_t round_ = 0;
    uint64_t declared_ = 0;
    uint64_t admitted_bytes_ = 0;  // taken from uploads_
    Payload payload_;
    std::atomic<bool> cancelled_{false};
  };

  // One FetchModel call: the header, then the model (or replay records) in chunks of
  // at most kMaxChunkBytes, each written once the previous one is taken.
  class Download final : public OrderedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
   public:
    Download(FederatedLearningService* service, grpc::CallbackServerContext* context)
        : service_(service),
          context_(context),
          guard_(&service->active_calls_),
          watch_(service, context, "model download") {}

    void Start(const grpc::ByteBuffer& raw) {
      ReactionScope reaction(this);
      Result<v1::ModelChunk> header = Header(raw);
      if (!header.ok()) return Finish(ToGrpcStatus(header.status()));
      out_ = SerializeRaw(*header);
      StartWrite(&out_);
    }

    void OnWriteDone(bool ok) override {
      ReactionScope reaction(this);
      if (!ok || cancelled_.load()) return Finish(Cancelled("model download"));
      watch_.Touch();
      if (offset_ >= blob_->size()) return Finish(grpc::Status::OK);
      const size_t n = std::min(kMaxChunkBytes, blob_->size() - offset_);
      out_ = DataChunk(blob_, offset_, n);
      offset_ += n;
      StartWrite(&out_);
    }

    void OnCancel() override {
      ReactionScope reaction(this);
      cancelled_.store(true);
    }

   private:
    // Checks the request and picks what to send (blob_); returns the header chunk.
    Result<v1::ModelChunk> Header(const grpc::ByteBuffer& raw) {
      FL_ASSIGN_OR_RETURN(v1::FetchModelRequest request,
                          ParseRaw<v1::FetchModelRequest>(raw, "FetchModelRequest"));
      FL_ASSIGN_OR_RETURN(Session session, service_->Authenticate(*context_));
      slot_.emplace(service_, session.client_id);
      if (!slot_->ok()) return slot_->Refusal();
      if (request.format() != v1::MODEL_FORMAT_UNSPECIFIED &&
          request.format() != v1::MODEL_FORMAT_PARAM_SET) {
        return Status::Unimplemented("unsupported model format");
      }
      std::optional<uint64_t> have_version;
      if (request.has_have_version()) have_version = request.have_version();
      FL_ASSIGN_OR_RETURN(ModelSnapshot snapshot, service_->coordinator_->FetchModel(
                                                      session, request.version(), have_version));
      v1::ModelChunk chunk;
      v1::ModelHeader* header = chunk.mutable_header();
      if (snapshot.is_replay()) {
        auto records = std::make_shared<std::string>();
        records->reserve(snapshot.wire_bytes);
        for (const auto& record : snapshot.replay_records) {
          header->add_replay_record_bytes(record->size());
          *records += *record;
        }
        header->set_version(snapshot.version);
        header->set_total_bytes(records->size());
        header->set_sha256(Sha256(*records));
        header->set_format(v1::MODEL_FORMAT_REPLAY);
        header->set_replay_base_version(snapshot.replay_base_version);
        blob_ = std::move(records);
        return chunk;
      }
      if (snapshot.params == nullptr) return Status::Internal("coordinator returned no model");
      std::shared_ptr<const SerializedModel> model = service_->Serialized(snapshot);
      header->set_version(model->version);
      header->set_total_bytes(model->bytes.size());
      header->set_layout_hash(model->layout_hash);
      header->set_sha256(model->sha256);
      header->set_num_params(model->num_params);
      header->set_format(v1::MODEL_FORMAT_PARAM_SET);
      blob_ = std::shared_ptr<const std::string>(model, &model->bytes);
      return chunk;
    }

    FederatedLearningService* const service_;
    grpc::CallbackServerContext* const context_;
    CallGuard guard_;
    StreamWatch watch_;
    std::optional<ClientSlot> slot_;
    std::shared_ptr<const std::string> blob_;
    size_t offset_ = 0;
    grpc::ByteBuffer out_;  // the chunk being written
    std::atomic<bool> cancelled_{false};
  };

  Coordinator* const coordinator_;
  Env* const env_;
  const milliseconds max_poll_wait_;
  const uint64_t max_update_bytes_;
  const uint64_t idle_timeout_us_;
  const int max_calls_per_client_;
  SplitService* const split_;
  mutable std::mutex slots_mu_;
  std::map<uint64_t, int> calls_per_client_;  // guarded by slots_mu_
  uint64_t calls_refused_ = 0;                // guarded by slots_mu_
  mutable std::mutex streams_mu_;
  std::map<grpc::ServerContextBase*, Watched> streams_;  // guarded by streams_mu_
  uint64_t idle_cancelled_ = 0;                      // guarded by streams_mu_
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> active_calls_{0};
  const size_t serialized_versions_;
  std::mutex cache_mu_;
  // By version; the newest serialized_versions_ at most.
  std::map<uint64_t, std::shared_ptr<const SerializedModel>> cache_;  // guarded by cache_mu_
  UploadBudget uploads_;
  ParkedPolls polls_;
  // Last: destroyed (its threads joined) first.
  WorkQueue work_;
};

class GrpcServerImpl final : public GrpcServer {
 public:
  GrpcServerImpl(Coordinator* coordinator, std::unique_ptr<FederatedLearningService> service,
                 milliseconds poll_interval, int max_threads)
      : coordinator_(coordinator),
        service_(std::move(service)),
        poll_interval_(poll_interval),
        max_threads_(max_threads) {}

  ~GrpcServerImpl() override { Shutdown(milliseconds(0)); }

  Status Start(const std::string& address, std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, std::move(credentials), &port);
    builder.RegisterService(service_.get());
    // Room for a few chunks, so a message over kMaxChunkBytes reaches PushUpdate, which
    // refuses it with RESOURCE_EXHAUSTED and a ledger row; gRPC cuts off larger ones.
    builder.SetMaxReceiveMessageSize(4 * kMaxMessageBytes);
    if (max_threads_ > 0) {
      grpc::ResourceQuota quota("fl-server");
      quota.SetMaxThreads(max_threads_);
      builder.SetResourceQuota(quota);
    }
    builder.SetMaxSendMessageSize(kMaxMessageBytes);
    // The upload budget holds only if bytes the service has not asked for stay with the
    // client: with bandwidth-delay probing, gRPC grows a stream's receive window to tens
    // of MB on loopback and buffers unread uploads itself (measured: 200 uploads of 40 MB
    // waiting for room held 6.5 GB). Without it each stream's window stays at HTTP/2's
    // default, and a waiting upload holds about that much.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    // Accept the client's keepalive pings (kKeepaliveTime apart) even between calls,
    // instead of answering them with GOAWAY "too_many_pings".
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               static_cast<int>(kServerMinPingInterval.count()));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                               2 * static_cast<int>(kKeepaliveTime.count()));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                               static_cast<int>(kKeepaliveTimeout.count()));
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port == 0) {
      server_.reset();
      return Status::Unavailable("cannot listen on " + address);
    }
    port_ = port;
    if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(true);
    ticker_ = std::thread([this] { Tick(); });
    return Status::Ok();
  }

  int port() const override { return port_; }
  GrpcServerStats Stats() const override { return service_->Stats(); }

  void Shutdown(milliseconds deadline) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (shutdown_started_) {
        done_cv_.wait(lock, [this] { return shutdown_done_; });
        return;
      }
      shutdown_started_ = true;
    }
    if (server_ != nullptr) {
      if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
      service_->BeginShutdown();
      // gRPC's own Shutdown(deadline) also waits for idle client connections to go away,
      // which connected clients never do by themselves: it would always take the full
      // deadline. Waiting here for the running calls only, then cancelling whatever is
      // left, ends as soon as the work is done.
      service_->WaitIdle(std::chrono::steady_clock::now() + deadline);
      server_->Shutdown(std::chrono::system_clock::now());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ticker_ = true;
    }
    tick_cv_.notify_all();
    if (ticker_.joinable()) ticker_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_done_ = true;
    }
    done_cv_.notify_all();
  }

  void Wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return shutdown_done_; });
  }

 private:
  void Tick() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_ticker_) {
      tick_cv_.wait_for(lock, poll_interval_, [this] { return stop_ticker_; });
      if (stop_ticker_) break;
      lock.unlock();
      coordinator_->Poll();
      service_->CancelIdleStreams();
      lock.lock();
    }
  }

  Coordinator* const coordinator_;
  std::unique_ptr<FederatedLearningService> service_;
  const milliseconds poll_interval_;
  const int max_threads_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::thread ticker_;

  std::mutex mu_;
  std::condition_variable tick_cv_;
  std::condition_variable done_cv_;
  bool stop_ticker_ = false;       // guarded by mu_
  bool shutdown_started_ = false;  // guarded by mu_
  bool shutdown_done_ = false;     // guarded by mu_
};

Result<std::string> ReadPem(const std::string& path, const char* what) {
  Result<std::string> pem = Env::Default()->ReadFile(path);
  if (!pem.ok()) return pem.status().WithContext(std::string("reading ") + what);
  if (pem->empty()) return Status::InvalidArgument(std::string(what) + " file is empty: " + path);
  return pem;
}

Result<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const GrpcServerOptions& options) {
  if (options.insecure) {
    FL_LOG(WARNING) << "serving without TLS (insecure): session tokens and models travel "
                       "in plaintext";
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(
      options.require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  FL_ASSIGN_OR_RETURN(pair.private_key, ReadPem(options.tls_key_path, "TLS key"));
  FL_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(options.tls_cert_path, "TLS certificate"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.tls_ca_path.empty()) {
    FL_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_ca_path, "TLS CA"));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

Status ValidateGrpcServerOptions(const GrpcServerOptions& options) {
  if (options.listen_address.empty()) return Status::InvalidArgument("empty listen address");
  if (options.poll_interval <= milliseconds(0) || options.max_poll_wait < milliseconds(0)) {
    return Status::InvalidArgument("poll_interval must be positive, max_poll_wait >= 0");
  }
  if (options.stream_idle_timeout <= milliseconds(0)) {
    return Status::InvalidArgument("stream_idle_timeout must be positive");
  }
  if (options.max_inflight_upload_bytes < options.max_update_bytes) {
    return Status::InvalidArgument(
        "the upload budget (server.max_inflight_upload_mb) must be at least one update's "
        "size limit (coordinator.max_update_mb)");
  }
  if (options.max_threads < 0) return Status::InvalidArgument("max_threads must be >= 0");
  if (options.upload_threads < 1) return Status::InvalidArgument("upload_threads must be >= 1");
  if (options.serialized_versions < 1) {
    return Status::InvalidArgument("serialized_versions must be >= 1");
  }
  if (options.max_calls_per_client < 0) {
    return Status::InvalidArgument("max_calls_per_client must be >= 0");
  }
  const bool any_tls = !options.tls_cert_path.empty() || !options.tls_key_path.empty() ||
                       !options.tls_ca_path.empty() || options.require_client_cert;
  if (options.insecure) {
    if (any_tls) {
      return Status::InvalidArgument("insecure is set together with TLS settings; choose one");
    }
    return Status::Ok();
  }
  if (options.tls_cert_path.empty() || options.tls_key_path.empty()) {
    return Status::InvalidArgument(
        "TLS certificate and key are required (server.tls.cert, server.tls.key); "
        "set insecure explicitly to serve plaintext");
  }
  if (options.require_client_cert && options.tls_ca_path.empty()) {
    return Status::InvalidArgument("require_client_cert needs a CA bundle (server.tls.ca)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<GrpcServer>> StartGrpcServer(const GrpcServerOptions& options,
                                                    Coordinator* coordinator) {
  if (coordinator == nullptr) return Status::InvalidArgument("no coordinator");
  FL_RETURN_IF_ERROR(ValidateGrpcServerOptions(options));
  FL_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      MakeCredentials(options));
  auto service = std::make_unique<FederatedLearningService>(coordinator, options);
  auto server =
      std::make_unique<GrpcServerImpl>(coordinator, std::move(service), options.poll_interval,
                                       options.max_threads);
  FL_RETURN_IF_ERROR(server->Start(options.listen_address, std::move(credentials)));
  FL_LOG(INFO) << "serving fl.v1 on port " << server->port()
               << (options.insecure ? " (plaintext)" : " (TLS)")
               << (options.require_client_cert ? " with client certificates" : "");
  return std::unique_ptr<GrpcServer>(std::move(server));
}

}  // namespace fl::internal
