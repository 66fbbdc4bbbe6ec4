// The gRPC transport end to end: a real Coordinator with the FedAvg strategy on real
// SQLite files, served over loopback TLS with freshly generated certificates, driven by
// GrpcLink and, for malformed streams that GrpcLink never produces, by a raw stub.

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "codec/param_io.h"
#include "grpc_fixture.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

class GrpcTransportTest : public GrpcFixture {
 protected:
  // Starts the server, joins client-a through GrpcLink and takes its round-1 task and
  // model: link_, task_, model_.
  void StartWithClientInRound1() {
    Start(Options());
    link_ = Joined("client-a");
    task_ = TrainTask(*link_);
    Result<ModelSnapshot> model = link_->FetchModel(task_.model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = model->params;
  }

  std::unique_ptr<GrpcLink> link_;
  Task task_;
  std::shared_ptr<const ParamSet> model_;
};

// Only keeps a broken run from hanging: the waits below end on an event long before.
constexpr std::chrono::seconds kSafetyCap(120);

// ---- authentication ----

TEST_F(GrpcTransportTest, JoinWithBadEnrollmentTokenIsUnauthenticated) {
  Start(Options());
  std::unique_ptr<GrpcLink> link = Link();
  Result<JoinReply> reply = link->Join("wrong", "client-a");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->GetStatus().clients_known, 0u);
}

TEST_F(GrpcTransportTest, CallsWithoutOrWithBogusSessionAreUnauthenticated) {
  Start(Options());
  auto stub = RawStub();
  const auto call = [&](const char* key, const std::string& value) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (key != nullptr) context.AddMetadata(key, value);
    v1::GetStatusResponse response;
    return stub->GetStatus(&context, v1::GetStatusRequest(), &response).error_code();
  };
  EXPECT_EQ(call(nullptr, ""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("authorization", "Bearer 0123456789abcdef"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("authorization", "Basic dXNlcjpwYXNz"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("x-fl-session", "bogus"), grpc::StatusCode::UNAUTHENTICATED);

  // Every other rpc goes through the same check.
  {
    grpc::ClientContext context;
    v1::PullTaskResponse response;
    EXPECT_EQ(stub->PullTask(&context, v1::PullTaskRequest(), &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    v1::HeartbeatResponse response;
    EXPECT_EQ(stub->Heartbeat(&context, v1::HeartbeatRequest(), &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    v1::ModelChunk chunk;
    auto reader = stub->FetchModel(&context, v1::FetchModelRequest());
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  // A real session works under either metadata key.
  grpc::ClientContext join_context;
  v1::JoinRequest join;
  join.set_enrollment_token(kEnrollment);
  join.set_client_name("client-a");
  v1::JoinResponse joined;
  ASSERT_TRUE(stub->Join(&join_context, join, &joined).ok());
  EXPECT_EQ(call("authorization", "Bearer " + joined.session_token()), grpc::StatusCode::OK);
  EXPECT_EQ(call("x-fl-session", joined.session_token()), grpc::StatusCode::OK);
}

// The codes fl/server_link.h documents, as GrpcLink returns them (CoordinatorTest checks
// the same ones for InProcessLink).
TEST_F(GrpcTransportTest, LinkReturnsTheDocumentedCodes) {
  Start(Options());
  std::unique_ptr<GrpcLink> link = Link();
  EXPECT_EQ(link->PullTask(milliseconds(0)).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->FetchModel(0).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->FetchModelOrReplay(1, 0).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->PushUpdate(Payload()).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->Heartbeat().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->GetStatus().status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link->Join(kEnrollment, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(link->Join(kEnrollment, std::string(129, 'x')).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(link->Join(kEnrollment, "tab\tname").status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(link->Join(kEnrollment, "client-a").ok());
  EXPECT_TRUE(link->Heartbeat().ok());
  EXPECT_TRUE(link->GetStatus().ok());
  EXPECT_EQ(link->FetchModel(3).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(link->FetchModel(0).ok());
}

// ---- bad updates: each rejected precisely, recorded, and harmless to the round ----

TEST_F(GrpcTransportTest, WrongLengthIsInvalidArgument) {
  Start(Options());
  Payload bad;
  bad.bytes.assign((kParams - 1) * sizeof(float), '\0');
  bad.meta.round = 1;
  bad.meta.weight = 1;
  bad.meta.sha256 = Sha256(bad.bytes);
  ExpectRejectedThenRecovers(bad, StatusCode::kInvalidArgument);
}

TEST_F(GrpcTransportTest, WrongLayoutHashIsInvalidArgument) {
  Start(Options());
  Layout other;
  other.Add("weight", {static_cast<int64_t>(kParams)});
  other.Add("extra", {1});
  ParamSet model(other);
  Task task;
  task.round = 1;
  Payload bad = GoodUpdate(task, model);
  bad.bytes.resize(kParams * sizeof(float));  // right length, wrong layout
  bad.meta.sha256 = Sha256(bad.bytes);
  ExpectRejectedThenRecovers(bad, StatusCode::kInvalidArgument);
}

Payload WithValue(float value) {
  std::vector<float> delta(kParams, 0.001f);
  delta[kParams / 2] = value;
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.round = 1;
  p.meta.weight = 1;
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

TEST_F(GrpcTransportTest, NaNIsInvalidArgument) {
  Start(Options());
  ExpectRejectedThenRecovers(WithValue(std::numeric_limits<float>::quiet_NaN()),
                             StatusCode::kInvalidArgument);
}

TEST_F(GrpcTransportTest, InfIsInvalidArgument) {
  Start(Options());
  ExpectRejectedThenRecovers(WithValue(-std::numeric_limits<float>::infinity()),
                             StatusCode::kInvalidArgument);
}

TEST_F(GrpcTransportTest, WrongRoundIsFailedPrecondition) {
  Start(Options());
  Payload bad = WithValue(0.5f);
  bad.meta.round = 2;
  ExpectRejectedThenRecovers(bad, StatusCode::kFailedPrecondition, /*ledger_round=*/2);
}

TEST_F(GrpcTransportTest, WrongBaseVersionIsFailedPrecondition) {
  Start(Options());
  Payload bad = WithValue(0.5f);
  bad.meta.base_version = 5;
  ExpectRejectedThenRecovers(bad, StatusCode::kFailedPrecondition);
}

TEST_F(GrpcTransportTest, OverSizeLimitIsResourceExhausted) {
  Start(Options());
  Payload bad;
  bad.bytes.assign(2 * kParams * sizeof(float), '\0');
  bad.meta.round = 1;
  bad.meta.weight = 1;
  bad.meta.sha256 = Sha256(bad.bytes);
  ExpectRejectedThenRecovers(bad, StatusCode::kResourceExhausted);
}

TEST_F(GrpcTransportTest, BadSha256IsDataLoss) {
  Start(Options());
  Payload bad = WithValue(0.5f);
  bad.meta.sha256 = Sha256("something else");
  ExpectRejectedThenRecovers(bad, StatusCode::kDataLoss);
}

// Uploads `data` as client-a through the raw stub, declaring `declared` bytes; returns
// the server's answer. A write may fail once the server has answered; Finish tells why.
grpc::Status RawPush(v1::FederatedLearning::Stub* stub, const UpdateMeta& meta,
                     uint64_t declared, std::string_view data) {
  RawUpload upload(stub, JoinRaw(stub, "client-a"));
  if (upload.Header(meta, declared)) upload.Data(data);
  return upload.Finish();
}

// The SHA-256 rule of crypto/update_digest.h over gRPC: a stream without a digest is
// refused (the server always verifies); GrpcLink fills a missing one, as InProcessLink does.
TEST_F(GrpcTransportTest, MissingSha256IsDataLossUnlessTheLinkFillsIt) {
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1());
  Payload unsealed = GoodUpdate(task_, *model_);
  unsealed.meta.sha256.clear();
  grpc::Status status =
      RawPush(RawStub().get(), unsealed.meta, unsealed.bytes.size(), unsealed.bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << status.error_message();
  EXPECT_TRUE(HasRejection(1, StatusCode::kDataLoss));
  Result<PushAck> ack = link_->PushUpdate(unsealed);
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_EQ(ack->round, task_.round);
}

TEST_F(GrpcTransportTest, TruncatedStreamIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1());
  Payload good = GoodUpdate(task_, *model_);
  grpc::Status status = RawPush(RawStub().get(), good.meta, good.bytes.size(),
                                std::string_view(good.bytes).substr(0, good.bytes.size() / 2));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("truncated"));
  EXPECT_TRUE(HasRejection(1, StatusCode::kDataLoss));
  FinishWithGoodUpdate(*link_, task_, *model_);
}

TEST_F(GrpcTransportTest, StreamLongerThanDeclaredIsResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1());
  Payload good = GoodUpdate(task_, *model_);
  grpc::Status status = RawPush(RawStub().get(), good.meta, good.bytes.size() / 2, good.bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_TRUE(HasRejection(1, StatusCode::kResourceExhausted));
  FinishWithGoodUpdate(*link_, task_, *model_);
}

TEST_F(GrpcTransportTest, UnselectedAndImpersonatingClientsAreRefused) {
  CoordinatorOptions o = Options();
  o.min_clients = 2;
  o.clients_per_round = 1;
  Start(o);
  std::unique_ptr<GrpcLink> a = Joined("client-a");
  std::unique_ptr<GrpcLink> b = Joined("client-b");
  Result<Task> task_a = a->PullTask(milliseconds(200));
  Result<Task> task_b = b->PullTask(milliseconds(200));
  ASSERT_TRUE(task_a.ok() && task_b.ok());
  ASSERT_NE(task_a->kind == TaskKind::kTrain, task_b->kind == TaskKind::kTrain)
      << "exactly one client must be selected";
  GrpcLink* selected = task_a->kind == TaskKind::kTrain ? a.get() : b.get();
  GrpcLink* other = selected == a.get() ? b.get() : a.get();
  const Task task = task_a->kind == TaskKind::kTrain ? *task_a : *task_b;
  Result<ModelSnapshot> model = selected->FetchModel(task.model_version);
  ASSERT_TRUE(model.ok()) << model.status().ToString();

  // The unselected client pushes a perfectly good update.
  Result<PushAck> unselected = other->PushUpdate(GoodUpdate(task, *model->params));
  ASSERT_FALSE(unselected.ok());
  EXPECT_EQ(unselected.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(unselected.status().message(), HasSubstr("not selected"));

  // The unselected client claims to be the selected one.
  Payload impersonation = GoodUpdate(task, *model->params);
  impersonation.meta.client_id = selected->client_id();
  Result<PushAck> impersonated = other->PushUpdate(impersonation);
  ASSERT_FALSE(impersonated.ok());
  EXPECT_EQ(impersonated.status().code(), StatusCode::kPermissionDenied);

  std::vector<LedgerEntry> rows = Ledger(1);
  int refused = 0;
  for (const LedgerEntry& e : rows) {
    EXPECT_EQ(e.client_id, other->client_id());
    if (e.status_code != 0) ++refused;
  }
  EXPECT_EQ(refused, 2);
  FinishWithGoodUpdate(*selected, task, *model->params);
}

TEST_F(GrpcTransportTest, RetriedUpdateIsAcknowledgedAsDuplicate) {
  CoordinatorOptions o = Options();
  o.min_clients = 2;  // keeps round 1 open after the first client's update
  Start(o);
  std::unique_ptr<GrpcLink> a = Joined("client-a");
  std::unique_ptr<GrpcLink> b = Joined("client-b");
  Task task = TrainTask(*a);
  Result<ModelSnapshot> model = a->FetchModel(task.model_version);
  ASSERT_TRUE(model.ok());
  Payload update = GoodUpdate(task, *model->params);
  Result<PushAck> first = a->PushUpdate(update);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(first->duplicate);
  Result<PushAck> again = a->PushUpdate(update);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(coordinator_->GetStatus().updates_in_round, 1u);
}

// Counts reads of the coordinator's clock. With the server's deadline ticker off, a read
// after Join means the coordinator is serving a call: here, the pending long poll.
class ClockReadCounter : public EnvWrapper {
 public:
  ClockReadCounter() : EnvWrapper(Env::Default()) {}
  uint64_t NowMicros() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++reads_;
    }
    read_.notify_all();
    return EnvWrapper::NowMicros();
  }
  uint64_t reads() {
    std::lock_guard<std::mutex> lock(mu_);
    return reads_;
  }
  // Waits until more than `n` reads happened; false after kSafetyCap.
  bool WaitForReadsAfter(uint64_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return read_.wait_for(lock, kSafetyCap, [&] { return reads_ > n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable read_;
  uint64_t reads_ = 0;
};

class GrpcShutdownTest : public GrpcFixture {
 protected:
  ClockReadCounter clock_;  // outlives coordinator_ (reset in TearDown)
};

TEST_F(GrpcShutdownTest, ShutdownAnswersPendingLongPolls) {
  CoordinatorOptions o = Options();
  o.min_clients = 2;  // with one client no round opens, so PullTask waits
  o.env = &clock_;
  Result<ParamSet> initial = SyntheticModel(kParams, o.seed);
  ASSERT_TRUE(initial.ok());
  auto coordinator = Coordinator::Create(o, FedAvg(), *initial);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  coordinator_ = std::move(coordinator).value();
  GrpcServerOptions s = TlsServerOptions(o);
  // Neither the poll's own wait nor the server's cap on it can end the poll during the
  // test: only Shutdown can. The ticker is off, so only calls read the clock.
  s.max_poll_wait = std::chrono::minutes(30);
  s.poll_interval = std::chrono::hours(1);
  auto server = StartGrpcServer(s, coordinator_.get());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(server).value();

  std::unique_ptr<GrpcLink> link = Joined("client-a");
  const uint64_t reads_after_join = clock_.reads();
  Result<Task> task = Status::Unknown("not run");
  std::thread poller([&] { task = link->PullTask(std::chrono::minutes(30)); });
  ASSERT_TRUE(clock_.WaitForReadsAfter(reads_after_join))
      << "the long poll never reached the coordinator (" << kSafetyCap.count()
      << " s safety cap)";
  // A server that waited for running calls instead of answering pending polls would
  // cancel the poll only at this deadline, and the poll would fail.
  server_->Shutdown(std::chrono::seconds(60));
  poller.join();
  ASSERT_TRUE(task.ok()) << "Shutdown did not answer the pending long poll: "
                         << task.status().ToString();
  EXPECT_EQ(task->kind, TaskKind::kWait);
  // The coordinator was not told the federation is over.
  EXPECT_FALSE(coordinator_->GetStatus().finished);
}

TEST_F(GrpcTransportTest, HealthCheckReportsServing) {
  Start(Options());
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = *Env::Default()->ReadFile(certs_.ca_cert);
  grpc::GenericStub stub(grpc::CreateChannel(Target(), grpc::SslCredentials(ssl)));
  // grpc.health.v1.HealthCheckRequest{service: ""} is the empty message; the answer
  // HealthCheckResponse{status: SERVING} is field 1 = 1, i.e. the bytes 08 01.
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

// ---- the client verifies what it downloads ----

// Serves FetchModel from a fixed ParamSet, corrupted in one chosen way.
class CorruptingService final : public v1::FederatedLearning::Service {
 public:
  enum class Mode { kIntact, kBadSha, kTruncated, kTooLong, kNoHeader, kWrongLayoutHash };
  explicit CorruptingService(const ParamSet& model)
      : bytes_(SerializeParamSet(model)), layout_hash_(model.layout().hash()) {}
  void set_mode(Mode mode) { mode_ = mode; }

  grpc::Status FetchModel(grpc::ServerContext*, const v1::FetchModelRequest* request,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override {
    std::string bytes = bytes_;
    std::string sha = Sha256(bytes);
    uint64_t declared = bytes.size();
    uint64_t layout_hash = layout_hash_;
    switch (mode_) {
      case Mode::kBadSha:
        bytes[bytes.size() / 2] ^= 1;
        break;
      case Mode::kTruncated:
        bytes.resize(bytes.size() - 1000);
        break;
      case Mode::kTooLong:
        bytes += "extra";
        break;
      case Mode::kWrongLayoutHash:
        layout_hash ^= 1;
        break;
      default:
        break;
    }
    v1::ModelChunk chunk;
    if (mode_ != Mode::kNoHeader) {
      chunk.mutable_header()->set_version(request->version());
      chunk.mutable_header()->set_total_bytes(declared);
      chunk.mutable_header()->set_sha256(sha);
      chunk.mutable_header()->set_layout_hash(layout_hash);
      writer->Write(chunk);
    }
    for (size_t off = 0; off < bytes.size(); off += kMaxChunkBytes) {
      chunk.set_data(bytes.substr(off, kMaxChunkBytes));
      if (!writer->Write(chunk)) break;
    }
    return grpc::Status::OK;
  }

 private:
  const std::string bytes_;
  const uint64_t layout_hash_;
  // Set by the test thread, read by gRPC's handler threads (atomic for TSan, which cannot
  // see the ordering that the RPC itself provides through uninstrumented gRPC).
  std::atomic<Mode> mode_{Mode::kIntact};
};

TEST_F(GrpcTransportTest, LinkRejectsCorruptModelDownloads) {
  // 3 MiB: the corruptions land in a multi-chunk stream.
  Result<ParamSet> model = SyntheticModel(3 << 18, 4);
  ASSERT_TRUE(model.ok());
  CorruptingService service(*model);
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*Env::Default()->ReadFile(certs_.server_key),
                                    *Env::Default()->ReadFile(certs_.server_cert)});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  GrpcLinkOptions o = LinkOptions();
  o.target = "localhost:" + std::to_string(port);
  auto link = GrpcLink::Create(o);
  ASSERT_TRUE(link.ok());

  using Mode = CorruptingService::Mode;
  Result<ModelSnapshot> intact = (*link)->FetchModel(3);
  ASSERT_TRUE(intact.ok()) << intact.status().ToString();
  EXPECT_EQ(intact->version, 3u);
  EXPECT_TRUE(std::equal(intact->params->values().begin(), intact->params->values().end(),
                         model->values().begin()));
  for (Mode mode :
       {Mode::kBadSha, Mode::kTruncated, Mode::kTooLong, Mode::kNoHeader, Mode::kWrongLayoutHash}) {
    service.set_mode(mode);
    Result<ModelSnapshot> bad = (*link)->FetchModel(3);
    ASSERT_FALSE(bad.ok()) << "mode " << static_cast<int>(mode);
    EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
  }
  server->Shutdown(std::chrono::system_clock::now());
}

// ---- transport security ----

TEST_F(GrpcTransportTest, PlaintextOnlyWhenExplicitlyEnabled) {
  Result<ParamSet> initial = SyntheticModel(kParams, 1);
  ASSERT_TRUE(initial.ok());
  auto coordinator = Coordinator::Create(Options(), FedAvg(), *initial);
  ASSERT_TRUE(coordinator.ok());
  coordinator_ = std::move(coordinator).value();

  GrpcServerOptions no_tls;
  no_tls.listen_address = "127.0.0.1:0";
  Result<std::unique_ptr<GrpcServer>> refused = StartGrpcServer(no_tls, coordinator_.get());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("insecure"));

  GrpcServerOptions ambiguous = TlsServerOptions(Options());
  ambiguous.insecure = true;
  EXPECT_EQ(StartGrpcServer(ambiguous, coordinator_.get()).status().code(),
            StatusCode::kInvalidArgument);

  GrpcLinkOptions link_ambiguous;
  link_ambiguous.target = "localhost:1";
  link_ambiguous.insecure = true;
  link_ambiguous.root_ca_path = certs_.ca_cert;
  EXPECT_EQ(GrpcLink::Create(link_ambiguous).status().code(), StatusCode::kInvalidArgument);

  no_tls.insecure = true;
  Result<std::unique_ptr<GrpcServer>> plain = StartGrpcServer(no_tls, coordinator_.get());
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  server_ = std::move(plain).value();

  // A default (TLS) link cannot talk to a plaintext server ...
  GrpcLinkOptions tls = LinkOptions();
  tls.max_attempts = 1;
  auto tls_link = GrpcLink::Create(tls);
  ASSERT_TRUE(tls_link.ok());
  EXPECT_EQ((*tls_link)->Join(kEnrollment, "client-a").status().code(), StatusCode::kUnavailable);

  // ... an explicitly insecure one can.
  GrpcLinkOptions insecure;
  insecure.target = Target();
  insecure.insecure = true;
  auto plain_link = GrpcLink::Create(insecure);
  ASSERT_TRUE(plain_link.ok());
  EXPECT_TRUE((*plain_link)->Join(kEnrollment, "client-a").ok());
}

TEST_F(GrpcTransportTest, MutualTlsRequiresAClientCertificate) {
  CoordinatorOptions o = Options();
  Result<ParamSet> initial = SyntheticModel(kParams, 1);
  ASSERT_TRUE(initial.ok());
  auto coordinator = Coordinator::Create(o, FedAvg(), *initial);
  ASSERT_TRUE(coordinator.ok());
  coordinator_ = std::move(coordinator).value();
  GrpcServerOptions s = TlsServerOptions(o);
  s.require_client_cert = true;
  EXPECT_EQ(StartGrpcServer(s, coordinator_.get()).status().code(), StatusCode::kInvalidArgument)
      << "mTLS without a CA must be refused";
  s.tls_ca_path = certs_.ca_cert;
  auto server = StartGrpcServer(s, coordinator_.get());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(server).value();

  GrpcLinkOptions without = LinkOptions();
  without.max_attempts = 1;
  auto anonymous = GrpcLink::Create(without);
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ((*anonymous)->Join(kEnrollment, "client-a").status().code(), StatusCode::kUnavailable);

  GrpcLinkOptions with = LinkOptions();
  with.client_cert_path = certs_.client_cert;
  with.client_key_path = certs_.client_key;
  auto authenticated = GrpcLink::Create(with);
  ASSERT_TRUE(authenticated.ok());
  EXPECT_TRUE((*authenticated)->Join(kEnrollment, "client-a").ok());
}

TEST_F(GrpcTransportTest, LinkRetriesUntilTheServerComesBack) {
  CoordinatorOptions o = Options();
  Result<ParamSet> initial = SyntheticModel(kParams, 1);
  ASSERT_TRUE(initial.ok());
  auto coordinator = Coordinator::Create(o, FedAvg(), *initial);
  ASSERT_TRUE(coordinator.ok());
  coordinator_ = std::move(coordinator).value();

  // Hold a port with a plain socket that drops every connection: the link's first
  // attempt fails and it backs off. Once that attempt has arrived, the socket goes and
  // the real server takes the port, so the link can only succeed by retrying.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t addr_len = sizeof(addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &addr_len), 0);
  const int port = ntohs(addr.sin_port);

  GrpcLinkOptions lo = LinkOptions();
  lo.target = "localhost:" + std::to_string(port);
  // Enough attempts that only the server's return, not the retry budget, ends the Join.
  lo.max_attempts = 1000;
  lo.initial_backoff = milliseconds(50);
  lo.max_backoff = milliseconds(200);
  auto link = GrpcLink::Create(lo);
  ASSERT_TRUE(link.ok());
  GrpcServerOptions s = TlsServerOptions(o);
  s.listen_address = "127.0.0.1:" + std::to_string(port);
  bool attempted = false;
  std::thread late_start([&] {
    pollfd p{listener, POLLIN, 0};
    attempted = ::poll(&p, 1, static_cast<int>(kSafetyCap.count() * 1000)) == 1;
    if (attempted) ::close(::accept(listener, nullptr, nullptr));
    ::close(listener);
    if (!attempted) return;
    auto server = StartGrpcServer(s, coordinator_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  });
  Result<JoinReply> reply = (*link)->Join(kEnrollment, "client-a");
  late_start.join();
  ASSERT_TRUE(attempted) << "the link never tried to connect (" << kSafetyCap.count()
                         << " s safety cap)";
  EXPECT_TRUE(reply.ok()) << reply.status().ToString();
}

}  // namespace
}  // namespace fl::internal
