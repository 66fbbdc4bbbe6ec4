#include "server/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "codec/param_io.h"
#include "core/logging.h"
#include "crypto/sha256.h"
#include "fl/env.h"
#include "fl/v1/fl.grpc.pb.h"
#include "proto/wire.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;

// Coordinator::PullTask is called in slices of at most this length, so a long poll
// notices a cancelled call or a server shutdown within a slice instead of holding its
// thread for the whole wait.
constexpr milliseconds kPollSlice{1000};
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

// The blocking calls (PullTask, FetchModel, PushUpdate) stay on the synchronous API but,
// like the callback ones, receive raw bytes and parse them with ParseRaw. Installed the
// way gRPC's generated "streamed" variants are: on the wire nothing changes (every
// HTTP/2 call is a stream); the handler reads the request messages itself.
template <class Base>
class WithRawBlockingMethods : public Base {
 public:
  using PullTaskStreamer = grpc::ServerUnaryStreamer<grpc::ByteBuffer, v1::PullTaskResponse>;
  using FetchModelStreamer = grpc::ServerSplitStreamer<grpc::ByteBuffer, v1::ModelChunk>;
  using PushUpdateStream = grpc::ServerReaderWriter<v1::PushUpdateResponse, grpc::ByteBuffer>;
  using SplitStream = grpc::ServerReaderWriter<v1::SplitResponse, grpc::ByteBuffer>;

  WithRawBlockingMethods() {
    // The indices are the rpcs' positions in fl.proto's service FederatedLearning.
    Base::MarkMethodStreamed(
        2, new grpc::internal::StreamedUnaryHandler<grpc::ByteBuffer, v1::PullTaskResponse>(
               [this](grpc::ServerContext* context, PullTaskStreamer* streamer) {
                 return RawPullTask(context, streamer);
               }));
    Base::MarkMethodStreamed(
        3, new grpc::internal::SplitServerStreamingHandler<grpc::ByteBuffer, v1::ModelChunk>(
               [this](grpc::ServerContext* context, FetchModelStreamer* streamer) {
                 return RawFetchModel(context, streamer);
               }));
    Base::MarkMethodStreamed(
        4, new grpc::internal::TemplatedBidiStreamingHandler<PushUpdateStream, false>(
               [this](grpc::ServerContext* context, PushUpdateStream* stream) {
                 return RawPushUpdate(context, stream);
               }));
    Base::MarkMethodStreamed(
        6, new grpc::internal::TemplatedBidiStreamingHandler<SplitStream, false>(
               [this](grpc::ServerContext* context, SplitStream* stream) {
                 return RawSplitStep(context, stream);
               }));
  }
  virtual grpc::Status RawPullTask(grpc::ServerContext* context, PullTaskStreamer* streamer) = 0;
  virtual grpc::Status RawFetchModel(grpc::ServerContext* context,
                                     FetchModelStreamer* streamer) = 0;
  virtual grpc::Status RawPushUpdate(grpc::ServerContext* context, PushUpdateStream* stream) = 0;
  virtual grpc::Status RawSplitStep(grpc::ServerContext* context, SplitStream* stream) = 0;

 private:
  // The typed handlers these replace are never installed.
  grpc::Status PullTask(grpc::ServerContext*, const v1::PullTaskRequest*,
                        v1::PullTaskResponse*) final {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  }
  grpc::Status FetchModel(grpc::ServerContext*, const v1::FetchModelRequest*,
                          grpc::ServerWriter<v1::ModelChunk>*) final {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  }
  grpc::Status PushUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UpdateChunk>*,
                          v1::PushUpdateResponse*) final {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  }
  grpc::Status SplitStep(grpc::ServerContext*,
                         grpc::ServerReaderWriter<v1::SplitResponse, v1::SplitRequest>*) final {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  }
};

// Join, Heartbeat and GetStatus never block, so they run on gRPC's callback API and
// receive raw bytes (see ParseRaw); the blocking calls stay synchronous (above).
using ServiceBase = WithRawBlockingMethods<v1::FederatedLearning::WithRawCallbackMethod_Join<
    v1::FederatedLearning::WithRawCallbackMethod_Heartbeat<
        v1::FederatedLearning::WithRawCallbackMethod_GetStatus<v1::FederatedLearning::Service>>>>;

// Uses the synchronous API on purpose: Coordinator::PullTask blocks (long poll) and
// Coordinator::PushUpdate blocks until the update is fsync'd, and the callback API
// forbids blocking on its event-engine threads. Running those calls on the callback
// API would need a hand-made thread pool behind every handler, which is exactly what
// the synchronous server already is; its blocking Read/Write also give the streams
// flow control for free.
class FederatedLearningService final : public ServiceBase {
 public:
  FederatedLearningService(Coordinator* coordinator, const GrpcServerOptions& options)
      : coordinator_(coordinator),
        env_(options.env != nullptr ? options.env : Env::Default()),
        max_poll_wait_(options.max_poll_wait),
        max_update_bytes_(options.max_update_bytes),
        idle_timeout_us_(static_cast<uint64_t>(options.stream_idle_timeout.count()) * 1000),
        max_inflight_bytes_(options.max_inflight_upload_bytes),
        max_calls_per_client_(options.max_calls_per_client),
        split_(options.split),
        serialized_versions_(static_cast<size_t>(std::max(1, options.serialized_versions))) {}

  // Cancels every stream that moved no message for stream_idle_timeout. Called by the
  // server's ticker.
  void CancelIdleStreams() {
    const uint64_t now = env_->NowMicros();
    std::lock_guard<std::mutex> lock(streams_mu_);
    for (auto& [context, watch] : streams_) {
      if (!watch.timed_out && now - std::min(now, watch.last_us) >= idle_timeout_us_) {
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
    stats.inflight_upload_bytes = inflight_bytes_.load();
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

  // Makes pending long polls answer at their next slice.
  void BeginShutdown() { shutting_down_.store(true); }

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

  grpc::Status RawPullTask(grpc::ServerContext* context, PullTaskStreamer* streamer) override {
    CallGuard guard(&active_calls_);
    Result<v1::PullTaskRequest> request = ReadRequest<v1::PullTaskRequest>(streamer, "PullTaskRequest");
    if (!request.ok()) return ToGrpcStatus(request.status());
    Result<Session> session = Authenticate(*context);
    if (!session.ok()) return ToGrpcStatus(session.status());
    ClientSlot slot(this, session->client_id);
    if (!slot.ok()) return ToGrpcStatus(slot.Refusal());
    v1::PullTaskResponse response;
    grpc::Status status = LongPoll(context, *session, *request, &response);
    if (status.ok() && !streamer->Write(response)) return Cancelled("task poll");
    return status;
  }

  grpc::Status LongPoll(grpc::ServerContext* context, const Session& session,
                        const v1::PullTaskRequest& request, v1::PullTaskResponse* response) {

    milliseconds wait = std::min(milliseconds(request.wait_ms()), max_poll_wait_);
    const auto until_deadline = std::chrono::duration_cast<milliseconds>(
        context->deadline() - std::chrono::system_clock::now() - kDeadlineMargin);
    wait = std::max(milliseconds(0), std::min(wait, until_deadline));

    const auto end = std::chrono::steady_clock::now() + wait;
    while (true) {
      const auto remaining =
          std::chrono::duration_cast<milliseconds>(end - std::chrono::steady_clock::now());
      const milliseconds slice = std::clamp(remaining, milliseconds(0), kPollSlice);
      Result<Task> task = coordinator_->PullTask(session, slice);
      if (!task.ok()) return ToGrpcStatus(task.status());
      if (task->kind != TaskKind::kWait || remaining <= slice || shutting_down_.load() ||
          context->IsCancelled()) {
        ToProto(*task, response->mutable_task());
        return grpc::Status::OK;
      }
    }
  }

  grpc::Status RawFetchModel(grpc::ServerContext* context, FetchModelStreamer* writer) override {
    CallGuard guard(&active_calls_);
    StreamWatch watch(this, context, "model download");
    Result<v1::FetchModelRequest> request =
        ReadRequest<v1::FetchModelRequest>(writer, "FetchModelRequest");
    if (!request.ok()) return ToGrpcStatus(request.status());
    Result<Session> session = Authenticate(*context);
    if (!session.ok()) return ToGrpcStatus(session.status());
    ClientSlot slot(this, session->client_id);
    if (!slot.ok()) return ToGrpcStatus(slot.Refusal());
    if (request->format() != v1::MODEL_FORMAT_UNSPECIFIED &&
        request->format() != v1::MODEL_FORMAT_PARAM_SET) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unsupported model format");
    }
    std::optional<uint64_t> have_version;
    if (request->has_have_version()) have_version = request->have_version();
    Result<ModelSnapshot> snapshot =
        coordinator_->FetchModel(*session, request->version(), have_version);
    if (!snapshot.ok()) return ToGrpcStatus(snapshot.status());

    v1::ModelChunk chunk;
    v1::ModelHeader* header = chunk.mutable_header();
    if (snapshot->is_replay()) {
      std::string records;
      records.reserve(snapshot->wire_bytes);
      for (const auto& record : snapshot->replay_records) {
        header->add_replay_record_bytes(record->size());
        records += *record;
      }
      header->set_version(snapshot->version);
      header->set_total_bytes(records.size());
      header->set_sha256(Sha256(records));
      header->set_format(v1::MODEL_FORMAT_REPLAY);
      header->set_replay_base_version(snapshot->replay_base_version);
      return SendBlob(context, writer, &chunk, records, &watch);
    }
    if (snapshot->params == nullptr) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "coordinator returned no model");
    }
    std::shared_ptr<const SerializedModel> model = Serialized(*snapshot);
    header->set_version(model->version);
    header->set_total_bytes(model->bytes.size());
    header->set_layout_hash(model->layout_hash);
    header->set_sha256(model->sha256);
    header->set_num_params(model->num_params);
    header->set_format(v1::MODEL_FORMAT_PARAM_SET);
    return SendBlob(context, writer, &chunk, model->bytes, &watch);
  }

  grpc::Status RawPushUpdate(grpc::ServerContext* context, PushUpdateStream* stream) override {
    v1::PushUpdateResponse response;
    grpc::Status status = ReceiveUpdate(context, stream, &response);
    if (status.ok() && !stream->Write(response)) return Cancelled("update upload");
    return status;
  }

  grpc::Status ReceiveUpdate(grpc::ServerContext* context, PushUpdateStream* reader,
                             v1::PushUpdateResponse* response) {
    CallGuard guard(&active_calls_);
    StreamWatch watch(this, context, "update upload");
    Result<Session> session = Authenticate(*context);
    if (!session.ok()) return ToGrpcStatus(session.status());
    ClientSlot slot(this, session->client_id);
    if (!slot.ok()) return Reject(*session, 0, slot.Refusal());

    v1::UpdateChunk chunk;
    Result<bool> got = ReadChunk(reader, &chunk);
    if (!got.ok()) return Reject(*session, 0, got.status());
    if (!*got) {
      return EndedEarly(context, *session, 0, watch, "before its header",
                        Status::InvalidArgument("empty update stream"));
    }
    watch.Touch();
    if (!chunk.has_header()) {
      return Reject(*session, 0,
                    Status::InvalidArgument("the first message of an update stream must be its header"));
    }
    const uint64_t round = chunk.header().round();
    const uint64_t declared = chunk.header().total_bytes();
    Result<UpdateMeta> meta = FromProto(chunk.header());
    if (!meta.ok()) return Reject(*session, round, meta.status());
    if (declared > max_update_bytes_) {
      return Reject(*session, round,
                    Status::ResourceExhausted("update of " + std::to_string(declared) +
                                              " bytes exceeds the limit of " +
                                              std::to_string(max_update_bytes_)));
    }

    Payload payload;
    payload.meta = std::move(meta).value();
    if (payload.meta.client_id == 0) payload.meta.client_id = session->client_id;
    // Nothing is reserved from the declared size: the buffer grows as bytes arrive, and
    // every byte held counts against the budget shared by all uploads.
    InflightBytes held(&inflight_bytes_);
    while (true) {
      got = ReadChunk(reader, &chunk);
      if (!got.ok()) return Reject(*session, round, got.status());
      if (!*got) break;
      watch.Touch();
      if (!chunk.has_data()) {
        return Reject(*session, round,
                      Status::InvalidArgument("update stream has a second header"));
      }
      const std::string& data = chunk.data();
      if (data.size() > kMaxChunkBytes) {
        return Reject(*session, round,
                      Status::ResourceExhausted("update chunk of " + std::to_string(data.size()) +
                                                " bytes exceeds the chunk limit of " +
                                                std::to_string(kMaxChunkBytes)));
      }
      // Checked before appending, so nothing beyond the declared size is ever buffered.
      if (data.size() > declared - payload.bytes.size()) {
        return Reject(*session, round,
                      Status::ResourceExhausted("update stream exceeds its declared size of " +
                                                std::to_string(declared) + " bytes"));
      }
      if (!held.Take(data.size(), max_inflight_bytes_)) {
        return Reject(*session, round,
                      Status::ResourceExhausted(
                          "server busy: uploads in flight already hold the budget of " +
                          std::to_string(max_inflight_bytes_) + " bytes; retry later"));
      }
      payload.bytes.append(data);
    }
    if (context->IsCancelled() || watch.timed_out() || payload.bytes.size() < declared) {
      return EndedEarly(context, *session, round, watch, "before its end",
                        Status::DataLoss("truncated update: received " +
                                         std::to_string(payload.bytes.size()) + " of " +
                                         std::to_string(declared) + " bytes"));
    }

    Result<PushAck> ack = coordinator_->PushUpdate(*session, payload);
    if (!ack.ok()) return ToGrpcStatus(ack.status());
    response->set_round(ack->round);
    response->set_duplicate(ack->duplicate);
    return grpc::Status::OK;
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
    StreamWatch(FederatedLearningService* service, grpc::ServerContext* context, const char* what)
        : service_(service), context_(context) {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      service_->streams_[context_] = Watched{service_->env_->NowMicros(), false, what};
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
    // True once the watchdog cancelled the call for idleness.
    bool timed_out() const {
      std::lock_guard<std::mutex> lock(service_->streams_mu_);
      return service_->streams_[context_].timed_out;
    }

   private:
    FederatedLearningService* service_;
    grpc::ServerContext* context_;
  };

  struct Watched {
    uint64_t last_us = 0;
    bool timed_out = false;
    const char* what = "";
  };

  // Upload bytes one stream holds against the shared budget; released when it ends.
  class InflightBytes {
   public:
    explicit InflightBytes(std::atomic<uint64_t>* total) : total_(total) {}
    ~InflightBytes() { total_->fetch_sub(held_); }
    // Takes `n` more bytes unless that would take the total beyond `budget`.
    bool Take(uint64_t n, uint64_t budget) {
      const uint64_t before = total_->fetch_add(n);
      if (before + n > budget) {
        total_->fetch_sub(n);
        return false;
      }
      held_ += n;
      return true;
    }

   private:
    std::atomic<uint64_t>* total_;
    uint64_t held_ = 0;
  };

  // An upload that ended before it was complete: stalled (the watchdog cancelled it:
  // DEADLINE_EXCEEDED), cancelled by the client or the connection (CANCELLED), or
  // half-closed early (`otherwise`). Each gets a ledger row with the status returned.
  grpc::Status EndedEarly(grpc::ServerContext* context, const Session& session, uint64_t round,
                          const StreamWatch& watch, const char* when, const Status& otherwise) {
    if (watch.timed_out()) {
      return Reject(session, round,
                    Status::DeadlineExceeded(
                        std::string("update stream stalled ") + when + ": no message for " +
                        std::to_string(idle_timeout_us_ / 1000000) + " s"));
    }
    if (context->IsCancelled()) {
      return Reject(session, round,
                    Status::Cancelled(std::string("update stream cancelled ") + when +
                                      " (by the client or the connection, or a message over "
                                      "gRPC's size limit)"));
    }
    return Reject(session, round, otherwise);
  }

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

  // The next message of an update stream: false at its end, InvalidArgument if malformed.
  static Result<bool> ReadChunk(PushUpdateStream* stream, v1::UpdateChunk* chunk) {
    grpc::ByteBuffer raw;
    if (!stream->Read(&raw)) return false;
    FL_ASSIGN_OR_RETURN(*chunk, ParseRaw<v1::UpdateChunk>(raw, "UpdateChunk"));
    return true;
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

  // Writes `header_chunk` (holding the header), then `bytes` in chunks of at most
  // kMaxChunkBytes.
  static grpc::Status SendBlob(grpc::ServerContext* context, FetchModelStreamer* writer,
                               v1::ModelChunk* header_chunk, const std::string& bytes,
                               StreamWatch* watch) {
    if (!writer->Write(*header_chunk)) return Cancelled("model download");
    watch->Touch();
    v1::ModelChunk chunk;
    for (size_t offset = 0; offset < bytes.size(); offset += kMaxChunkBytes) {
      if (context->IsCancelled()) return Cancelled("model download");
      const size_t n = std::min(kMaxChunkBytes, bytes.size() - offset);
      chunk.set_data(bytes.data() + offset, n);
      if (!writer->Write(chunk)) return Cancelled("model download");
      watch->Touch();
    }
    return grpc::Status::OK;
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

  Coordinator* const coordinator_;
  Env* const env_;
  const milliseconds max_poll_wait_;
  const uint64_t max_update_bytes_;
  const uint64_t idle_timeout_us_;
  const uint64_t max_inflight_bytes_;
  std::atomic<uint64_t> inflight_bytes_{0};
  const int max_calls_per_client_;
  SplitService* const split_;
  mutable std::mutex slots_mu_;
  std::map<uint64_t, int> calls_per_client_;  // guarded by slots_mu_
  uint64_t calls_refused_ = 0;                // guarded by slots_mu_
  mutable std::mutex streams_mu_;
  std::map<grpc::ServerContext*, Watched> streams_;  // guarded by streams_mu_
  uint64_t idle_cancelled_ = 0;                      // guarded by streams_mu_
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> active_calls_{0};
  const size_t serialized_versions_;
  std::mutex cache_mu_;
  // By version; the newest serialized_versions_ at most.
  std::map<uint64_t, std::shared_ptr<const SerializedModel>> cache_;  // guarded by cache_mu_
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
