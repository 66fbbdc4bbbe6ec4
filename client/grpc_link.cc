#include "client/grpc_link.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "codec/encoded_split_session.h"
#include "codec/param_io.h"
#include "core/logging.h"
#include "crypto/sha256.h"
#include "crypto/update_digest.h"
#include "fl/env.h"
#include "fl/v1/fl.grpc.pb.h"
#include "proto/wire.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;

bool IsRetryable(const Status& status) {
  return status.code() == StatusCode::kUnavailable ||
         status.code() == StatusCode::kDeadlineExceeded;
}

Result<std::string> ReadPem(const std::string& path, const char* what) {
  Result<std::string> pem = Env::Default()->ReadFile(path);
  if (!pem.ok()) return pem.status().WithContext(std::string("reading ") + what);
  if (pem->empty()) return Status::InvalidArgument(std::string(what) + " file is empty: " + path);
  return pem;
}

Result<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(const GrpcLinkOptions& options) {
  const bool any_tls = !options.root_ca_path.empty() || !options.client_cert_path.empty() ||
                       !options.client_key_path.empty();
  if (options.insecure) {
    if (any_tls) {
      return Status::InvalidArgument("insecure is set together with TLS settings; choose one");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (options.client_cert_path.empty() != options.client_key_path.empty()) {
    return Status::InvalidArgument("client certificate and key must be given together");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.root_ca_path.empty()) {
    FL_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.root_ca_path, "TLS CA"));
  }
  if (!options.client_cert_path.empty()) {
    FL_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                        ReadPem(options.client_cert_path, "client certificate"));
    FL_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.client_key_path, "client key"));
  }
  return grpc::SslCredentials(ssl);
}

Status ValidateOptions(const GrpcLinkOptions& o) {
  if (o.target.empty()) return Status::InvalidArgument("GrpcLinkOptions.target is empty");
  if (o.max_attempts < 1) return Status::InvalidArgument("max_attempts must be >= 1");
  if (o.call_timeout <= milliseconds(0) || o.transfer_timeout <= milliseconds(0) ||
      o.split_session_timeout <= milliseconds(0)) {
    return Status::InvalidArgument(
        "call_timeout, transfer_timeout and split_session_timeout must be positive");
  }
  if (o.initial_backoff < milliseconds(0) || o.max_backoff < o.initial_backoff) {
    return Status::InvalidArgument("need 0 <= initial_backoff <= max_backoff");
  }
  if (!(o.backoff_multiplier >= 1.0) || !(o.jitter >= 0.0 && o.jitter <= 1.0)) {
    return Status::InvalidArgument("need backoff_multiplier >= 1 and jitter in [0, 1]");
  }
  return Status::Ok();
}

// A split session's steps over one SplitStep stream. The stream's context lives here,
// so the session may be used while the link makes other calls (the channel is shared).
class GrpcSplitChannel final : public SplitChannel {
 public:
  using Stream = grpc::ClientReaderWriter<v1::SplitRequest, v1::SplitResponse>;

  // Sends `open` and reads `opened`; the server's status if it refuses.
  static Result<std::unique_ptr<GrpcSplitChannel>> Open(
      v1::FederatedLearning::Stub* stub, std::unique_ptr<grpc::ClientContext> context,
      const SplitSessionOptions& options, v1::SplitOpened* opened) {
    std::unique_ptr<GrpcSplitChannel> channel(new GrpcSplitChannel(std::move(context)));
    channel->stream_ = stub->SplitStep(channel->context_.get());
    v1::SplitRequest request;
    ToProto(options, request.mutable_open());
    v1::SplitResponse response;
    FL_RETURN_IF_ERROR(channel->Call(request, &response));
    if (!response.has_opened()) return channel->Refuse("the server answered open without opened");
    *opened = response.opened();
    return channel;
  }

  ~GrpcSplitChannel() override {
    if (!finished_) Abandon();
  }

  Result<EncodedTokens> Exchange(SplitStepKind kind, const EncodedTokens& tensor) override {
    v1::SplitRequest request;
    const bool forward = kind == SplitStepKind::kForward;
    ToProto(tensor, forward ? request.mutable_forward() : request.mutable_backward());
    v1::SplitResponse response;
    FL_RETURN_IF_ERROR(Call(request, &response));
    if (forward ? !response.has_output() : !response.has_input_grad()) {
      return Refuse(forward ? "the server answered forward without output"
                            : "the server answered backward without input_grad");
    }
    return FromProto(forward ? response.output() : response.input_grad());
  }

  Status Close() override {
    stream_->WritesDone();
    return EndStream();
  }

  void Abandon() override {
    if (finished_) return;
    context_->TryCancel();
    EndStream();
  }

 private:
  explicit GrpcSplitChannel(std::unique_ptr<grpc::ClientContext> context)
      : context_(std::move(context)) {}

  // One request and its answer; the server's status if the stream ended instead.
  Status Call(const v1::SplitRequest& request, v1::SplitResponse* response) {
    if (finished_) return Status::FailedPrecondition("the split stream has ended");
    if (stream_->Write(request) && stream_->Read(response)) return Status::Ok();
    Status status = EndStream();
    return status.ok() ? Status::DataLoss("the server ended the split stream without an answer")
                       : status;
  }

  Status EndStream() {
    if (finished_) return Status::Ok();
    finished_ = true;
    return FromGrpcStatus(stream_->Finish());
  }

  Status Refuse(const char* what) {
    Abandon();
    return Status::DataLoss(what);
  }

  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<Stream> stream_;
  bool finished_ = false;
};

}  // namespace

struct GrpcLink::Impl {
  GrpcLinkOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::FederatedLearning::Stub> stub;
  std::mt19937_64 rng;

  // Enrollment remembered for re-joining after the server forgot the session.
  std::string enrollment_token;
  std::string client_name;
  bool joined = false;
  uint64_t client_id = 0;
  std::string session_token;

  void Prepare(grpc::ClientContext* context, milliseconds timeout) const {
    context->set_deadline(std::chrono::system_clock::now() + timeout);
    if (!session_token.empty()) {
      context->AddMetadata(kAuthorizationKey, std::string(kBearerPrefix) + session_token);
    }
  }

  milliseconds Backoff(int retry) {
    const double base = static_cast<double>(options.initial_backoff.count()) *
                        std::pow(options.backoff_multiplier, retry - 1);
    const double capped = std::min(base, static_cast<double>(options.max_backoff.count()));
    std::uniform_real_distribution<double> factor(1.0 - options.jitter, 1.0);
    return milliseconds(static_cast<int64_t>(capped * factor(rng)));
  }

  // Runs `attempt` until it succeeds, fails with a non-retryable status, or the attempts
  // are used up. An UNAUTHENTICATED answer to a call made with a session is met by one
  // re-join (the server may have been restarted without its sessions).
  template <typename Attempt>
  Status Retry(const char* what, bool may_rejoin, Attempt&& attempt) {
    bool rejoined = false;
    for (int k = 1;; ++k) {
      Status status = attempt();
      if (status.ok()) return status;
      if (status.code() == StatusCode::kUnauthenticated && may_rejoin && joined && !rejoined) {
        rejoined = true;
        FL_LOG(INFO) << what << ": session refused, joining again as " << client_name;
        Status join = JoinWithRetries();
        if (!join.ok()) return join;
        continue;
      }
      if (!IsRetryable(status) || k >= options.max_attempts) return status;
      const milliseconds pause = Backoff(k);
      FL_LOG(WARNING) << what << " failed (" << status.ToString() << "); retry " << k << " of "
                      << options.max_attempts - 1 << " in " << pause.count() << " ms";
      std::this_thread::sleep_for(pause);
    }
  }

  Status JoinOnce() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options.call_timeout);
    v1::JoinRequest request;
    request.set_enrollment_token(enrollment_token);
    request.set_client_name(client_name);
    v1::JoinResponse response;
    Status status = FromGrpcStatus(stub->Join(&context, request, &response));
    if (!status.ok()) return status;
    if (response.session_token().empty()) return Status::DataLoss("Join answered no session token");
    client_id = response.client_id();
    session_token = response.session_token();
    joined = true;
    return Status::Ok();
  }

  Status JoinWithRetries() {
    return Retry("Join", /*may_rejoin=*/false, [&] { return JoinOnce(); });
  }

  Result<ModelSnapshot> FetchOnce(uint64_t version, std::optional<uint64_t> have_version) {
    grpc::ClientContext context;
    Prepare(&context, options.transfer_timeout);
    v1::FetchModelRequest request;
    request.set_version(version);
    request.set_format(v1::MODEL_FORMAT_PARAM_SET);
    if (have_version.has_value()) request.set_have_version(*have_version);
    std::unique_ptr<grpc::ClientReader<v1::ModelChunk>> reader =
        stub->FetchModel(&context, request);

    // Any local verdict cancels the call first: Finish() would otherwise wait for a
    // stream nobody reads any more.
    Status failure;
    v1::ModelChunk chunk;
    v1::ModelHeader header;
    bool have_header = false;
    std::string bytes;
    Sha256Hasher hasher;
    if (reader->Read(&chunk)) {
      if (!chunk.has_header()) {
        failure = Status::DataLoss("model stream does not start with a header");
      } else if (chunk.header().total_bytes() > options.max_model_bytes) {
        failure =
            Status::ResourceExhausted("model of " + std::to_string(chunk.header().total_bytes()) +
                                      " bytes exceeds max_model_bytes");
      } else {
        header = chunk.header();
        have_header = true;
        bytes.reserve(header.total_bytes());
        while (reader->Read(&chunk)) {
          if (!chunk.has_data()) {
            failure = Status::DataLoss("model stream has a second header");
            break;
          }
          if (chunk.data().size() > header.total_bytes() - bytes.size()) {
            failure = Status::DataLoss("model stream is longer than its announced " +
                                       std::to_string(header.total_bytes()) + " bytes");
            break;
          }
          hasher.Update(chunk.data());
          bytes.append(chunk.data());
        }
      }
    }
    if (!failure.ok()) context.TryCancel();
    Status status = FromGrpcStatus(reader->Finish());
    if (!failure.ok()) return failure;
    if (!status.ok()) return status;
    if (!have_header) return Status::DataLoss("model stream ended without a header");
    if (bytes.size() != header.total_bytes()) {
      return Status::DataLoss("truncated model: received " + std::to_string(bytes.size()) + " of " +
                              std::to_string(header.total_bytes()) + " bytes");
    }
    if (hasher.Finish() != header.sha256()) return Status::DataLoss("model SHA-256 mismatch");
    if (header.version() != version) {
      return Status::DataLoss("asked for model version " + std::to_string(version) + ", received " +
                              std::to_string(header.version()));
    }
    if (header.format() == v1::MODEL_FORMAT_REPLAY) {
      return SplitReplay(header, have_version, std::move(bytes));
    }
    if (header.format() != v1::MODEL_FORMAT_PARAM_SET &&
        header.format() != v1::MODEL_FORMAT_UNSPECIFIED) {
      return Status::DataLoss("model stream has unknown format " + std::to_string(header.format()));
    }
    Result<ParamSet> params = ParseParamSet(bytes);
    if (!params.ok()) return Status::DataLoss("model does not parse: " + params.status().message());
    if (params->layout().hash() != header.layout_hash()) {
      return Status::DataLoss("model layout hash differs from its header");
    }
    const uint64_t wire_bytes = bytes.size();
    std::string().swap(bytes);  // free the serialized copy before handing out the model
    ModelSnapshot snapshot;
    snapshot.version = version;
    snapshot.params = std::make_shared<const ParamSet>(std::move(params).value());
    snapshot.wire_bytes = wire_bytes;
    return snapshot;
  }

  // The records of a verified MODEL_FORMAT_REPLAY download, cut by the header's sizes.
  static Result<ModelSnapshot> SplitReplay(const v1::ModelHeader& header,
                                           std::optional<uint64_t> have_version,
                                           std::string bytes) {
    if (!have_version.has_value() || header.replay_base_version() != *have_version ||
        *have_version >= header.version()) {
      return Status::DataLoss("replay records from version " +
                              std::to_string(header.replay_base_version()) +
                              " do not start at the version this client holds");
    }
    const uint64_t count = header.version() - *have_version;
    if (static_cast<uint64_t>(header.replay_record_bytes_size()) != count) {
      return Status::DataLoss("replay from version " + std::to_string(*have_version) + " to " +
                              std::to_string(header.version()) + " needs " +
                              std::to_string(count) + " records, the header lists " +
                              std::to_string(header.replay_record_bytes_size()));
    }
    ModelSnapshot snapshot;
    snapshot.version = header.version();
    snapshot.replay_base_version = *have_version;
    snapshot.wire_bytes = bytes.size();
    size_t offset = 0;
    for (uint64_t size : header.replay_record_bytes()) {
      if (size == 0 || size > bytes.size() - offset) {
        return Status::DataLoss("replay record sizes do not add up to the announced bytes");
      }
      snapshot.replay_records.push_back(
          std::make_shared<const std::string>(bytes.substr(offset, size)));
      offset += size;
    }
    if (offset != bytes.size()) {
      return Status::DataLoss("replay record sizes do not add up to the announced bytes");
    }
    return snapshot;
  }

  Result<PushAck> PushOnce(const UpdateMeta& meta, const std::string& payload) {
    grpc::ClientContext context;
    Prepare(&context, options.transfer_timeout);
    v1::PushUpdateResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer =
        stub->PushUpdate(&context, &response);
    v1::UpdateChunk chunk;
    ToProto(meta, payload.size(), chunk.mutable_header());
    // A failed Write means the server already answered (e.g. a rejection); Finish()
    // then reports its status.
    bool ok = writer->Write(chunk);
    for (size_t offset = 0; ok && offset < payload.size(); offset += kMaxChunkBytes) {
      const size_t n = std::min(kMaxChunkBytes, payload.size() - offset);
      chunk.set_data(payload.data() + offset, n);
      ok = writer->Write(chunk);
    }
    if (ok) writer->WritesDone();
    Status status = FromGrpcStatus(writer->Finish());
    if (!status.ok()) return status;
    PushAck ack;
    ack.round = response.round();
    ack.duplicate = response.duplicate();
    return ack;
  }
};

GrpcLink::GrpcLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GrpcLink::~GrpcLink() = default;

Result<std::unique_ptr<GrpcLink>> GrpcLink::Create(const GrpcLinkOptions& options) {
  FL_RETURN_IF_ERROR(ValidateOptions(options));
  FL_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                      MakeCredentials(options));
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(kKeepaliveTime.count()));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(kKeepaliveTimeout.count()));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // The channel reconnects by itself; its default reconnect backoff grows to two
  // minutes, far longer than our own call backoff, so a restarted server would stay
  // unreachable for retries that have long given up. Keep both on the same scale.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::max<int64_t>(100, options.initial_backoff.count())));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::max<int64_t>(100, options.max_backoff.count())));
  // gRPC core also waits at least 20 s between connection attempts by default; a
  // restarted server must be reachable within our own backoff.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::max<int64_t>(100, options.initial_backoff.count())));
  // Retries are done here rather than by a service-config retry policy: gRPC's policy
  // cannot retry a client stream larger than its replay buffer, does not retry
  // DEADLINE_EXCEEDED, and cannot re-join when the server has lost a session.

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = grpc::CreateCustomChannel(options.target, credentials, args);
  impl->stub = v1::FederatedLearning::NewStub(impl->channel);
  impl->rng.seed(options.jitter_seed != 0 ? options.jitter_seed : std::random_device{}());
  return std::unique_ptr<GrpcLink>(new GrpcLink(std::move(impl)));
}

Result<JoinReply> GrpcLink::Join(const std::string& enrollment_token,
                                 const std::string& client_name) {
  impl_->enrollment_token = enrollment_token;
  impl_->client_name = client_name;
  impl_->joined = false;
  impl_->session_token.clear();
  FL_RETURN_IF_ERROR(impl_->JoinWithRetries());
  JoinReply reply;
  reply.client_id = impl_->client_id;
  reply.session_token = impl_->session_token;
  return reply;
}

Result<Task> GrpcLink::PullTask(milliseconds wait) {
  if (wait < milliseconds(0)) wait = milliseconds(0);
  Task task;
  Status status = impl_->Retry("PullTask", true, [&]() -> Status {
    grpc::ClientContext context;
    impl_->Prepare(&context, wait + impl_->options.call_timeout);
    v1::PullTaskRequest request;
    request.set_wait_ms(static_cast<uint32_t>(
        std::min<int64_t>(wait.count(), std::numeric_limits<uint32_t>::max())));
    v1::PullTaskResponse response;
    FL_RETURN_IF_ERROR(FromGrpcStatus(impl_->stub->PullTask(&context, request, &response)));
    if (!response.has_task()) return Status::DataLoss("PullTask answered no task");
    FL_ASSIGN_OR_RETURN(task, FromProto(response.task()));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  return task;
}

Result<ModelSnapshot> GrpcLink::FetchModel(uint64_t version) {
  ModelSnapshot snapshot;
  Status status = impl_->Retry("FetchModel", true, [&]() -> Status {
    FL_ASSIGN_OR_RETURN(snapshot, impl_->FetchOnce(version, std::nullopt));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  return snapshot;
}

Result<ModelSnapshot> GrpcLink::FetchModelOrReplay(uint64_t version, uint64_t have_version) {
  ModelSnapshot snapshot;
  Status status = impl_->Retry("FetchModel", true, [&]() -> Status {
    FL_ASSIGN_OR_RETURN(snapshot, impl_->FetchOnce(version, have_version));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  return snapshot;
}

Result<PushAck> GrpcLink::PushUpdate(const Payload& payload) {
  UpdateMeta meta = payload.meta;
  SealUpdateSha256(&meta, payload.bytes);
  if (meta.client_id == 0) meta.client_id = impl_->client_id;
  PushAck ack;
  Status status = impl_->Retry("PushUpdate", true, [&]() -> Status {
    FL_ASSIGN_OR_RETURN(ack, impl_->PushOnce(meta, payload.bytes));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  return ack;
}

Status GrpcLink::Heartbeat() {
  return impl_->Retry("Heartbeat", true, [&]() -> Status {
    grpc::ClientContext context;
    impl_->Prepare(&context, impl_->options.call_timeout);
    v1::HeartbeatResponse response;
    return FromGrpcStatus(impl_->stub->Heartbeat(&context, v1::HeartbeatRequest(), &response));
  });
}

Result<ServerStatusInfo> GrpcLink::GetStatus() {
  ServerStatusInfo info;
  Status status = impl_->Retry("GetStatus", true, [&]() -> Status {
    grpc::ClientContext context;
    impl_->Prepare(&context, impl_->options.call_timeout);
    v1::GetStatusResponse response;
    FL_RETURN_IF_ERROR(
        FromGrpcStatus(impl_->stub->GetStatus(&context, v1::GetStatusRequest(), &response)));
    info = FromProto(response);
    return Status::Ok();
  });
  if (!status.ok()) return status;
  return info;
}

Result<std::unique_ptr<SplitSession>> GrpcLink::OpenSplitSession(
    const SplitSessionOptions& options) {
  std::unique_ptr<GrpcSplitChannel> channel;
  v1::SplitOpened opened;
  Status status = impl_->Retry("OpenSplitSession", true, [&]() -> Status {
    auto context = std::make_unique<grpc::ClientContext>();
    impl_->Prepare(context.get(), impl_->options.split_session_timeout);
    FL_ASSIGN_OR_RETURN(channel, GrpcSplitChannel::Open(impl_->stub.get(), std::move(context),
                                                        options, &opened));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  constexpr uint64_t kMax = static_cast<uint64_t>(kMaxTokenTensorValues);
  if (opened.tokens() < 1 || opened.width() < 1 || opened.tokens() > kMax ||
      opened.width() > kMax / opened.tokens()) {
    return Status::DataLoss("the server opened a split session with a bad shape");
  }
  const auto tokens = static_cast<int64_t>(opened.tokens());
  FL_ASSIGN_OR_RETURN(SplitTokenRanges asked, ResolveTokenRanges(options, tokens));
  Result<SplitTokenRanges> served = FromProto(opened, tokens);
  // A server that predates token ranges serves all tokens, whatever was asked; the
  // session's user relies on the shapes it asked for.
  if (!served.ok() || *served != asked) {
    channel->Close();  // cleanly: the mismatch is the error to report
    return Status::FailedPrecondition(
        "the server does not serve the split token ranges asked for (output tokens " +
        std::to_string(asked.output) + ", input gradient tokens [" +
        std::to_string(asked.grad_begin) + ", " + std::to_string(asked.grad_end) + "))");
  }
  return std::unique_ptr<SplitSession>(new EncodedSplitSession(
      tokens, static_cast<int64_t>(opened.width()), asked, options.encoding, std::move(channel)));
}

uint64_t GrpcLink::client_id() const { return impl_->client_id; }

}  // namespace fl::internal
