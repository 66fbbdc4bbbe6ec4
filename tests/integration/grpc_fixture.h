#ifndef FL_TESTS_INTEGRATION_GRPC_FIXTURE_H_
#define FL_TESTS_INTEGRATION_GRPC_FIXTURE_H_

// A real Coordinator (FedAvg, SQLite files in a temp dir) behind a real gRPC server on
// loopback TLS with freshly generated certificates, plus helpers to drive it through
// GrpcLink or through a raw stub.

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "client/grpc_link.h"
#include "codec/dense_codec.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "fl/env.h"
#include "fl/v1/fl.grpc.pb.h"
#include "proto/wire.h"
#include "server/coordinator.h"
#include "server/coordinator_config.h"
#include "server/dev_certs.h"
#include "server/grpc_service.h"
#include "store/store.h"

namespace fl::internal {

using std::chrono::milliseconds;

inline constexpr uint64_t kParams = 1000;
inline constexpr char kEnrollment[] = "let-me-in";

// A clock that moves only when told to (both the monotonic and the wall clock), for
// the coordinator's and the server's time limits; files go to the real Env.
class FakeClockEnv : public EnvWrapper {
 public:
  FakeClockEnv() : EnvWrapper(Env::Default()) {}
  uint64_t NowMicros() override { return now_us_.load(); }
  int64_t NowUnixSeconds() override {
    return kEpoch + static_cast<int64_t>(now_us_.load() / 1000000);
  }
  void Advance(std::chrono::milliseconds by) { now_us_ += static_cast<uint64_t>(by.count()) * 1000; }

 private:
  static constexpr int64_t kEpoch = 1700000000;
  std::atomic<uint64_t> now_us_{1000000};
};

// Streams GrpcLink never sends, written with the raw stub.
class RawUpload {
 public:
  RawUpload(v1::FederatedLearning::Stub* stub, const std::string& session,
            std::chrono::seconds deadline = std::chrono::seconds(30)) {
    context_.set_deadline(std::chrono::system_clock::now() + deadline);
    context_.AddMetadata("authorization", "Bearer " + session);
    writer_ = stub->PushUpdate(&context_, &response_);
  }
  bool Header(const UpdateMeta& meta, uint64_t declared) {
    v1::UpdateChunk chunk;
    ToProto(meta, declared, chunk.mutable_header());
    return writer_->Write(chunk);
  }
  bool Data(std::string_view bytes) {
    v1::UpdateChunk chunk;
    chunk.set_data(bytes.data(), bytes.size());
    return writer_->Write(chunk);
  }
  bool Write(const v1::UpdateChunk& chunk) { return writer_->Write(chunk); }
  grpc::Status Finish() {
    writer_->WritesDone();
    return writer_->Finish();
  }
  // Waits for the server's answer without half-closing the stream (a stalled upload).
  grpc::Status Await() { return writer_->Finish(); }
  // Ends the call from the client side without waiting for the server.
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  v1::PushUpdateResponse response_;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer_;
};

// An update stream whose messages are arbitrary bytes (not necessarily an UpdateChunk).
class ByteUpload {
 public:
  ByteUpload(grpc::Channel* channel, const std::string& session) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    context_.AddMetadata("authorization", "Bearer " + session);
    writer_.reset(grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
        channel,
        grpc::internal::RpcMethod("/fl.v1.FederatedLearning/PushUpdate",
                                  grpc::internal::RpcMethod::CLIENT_STREAMING),
        &context_, &response_));
  }
  bool Write(const google::protobuf::MessageLite& message) {
    return Bytes(message.SerializeAsString());
  }
  bool Bytes(const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    return writer_->Write(buffer);
  }
  grpc::Status Finish() {
    writer_->WritesDone();
    return writer_->Finish();
  }

 private:
  grpc::ClientContext context_;
  grpc::ByteBuffer response_;
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer_;
};

// Joins `name` with kEnrollment through the raw stub; the session token goes to `token`.
inline grpc::Status JoinWithStub(v1::FederatedLearning::Stub* stub, const std::string& name,
                                 std::string* token = nullptr) {
  grpc::ClientContext context;
  v1::JoinRequest request;
  request.set_enrollment_token(kEnrollment);
  request.set_client_name(name);
  v1::JoinResponse response;
  grpc::Status status = stub->Join(&context, request, &response);
  if (token != nullptr) *token = response.session_token();
  return status;
}

inline std::string JoinRaw(v1::FederatedLearning::Stub* stub, const std::string& name) {
  std::string token;
  grpc::Status status = JoinWithStub(stub, name, &token);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return token;
}

class GrpcFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_grpc_transport_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Result<DevCertPaths> certs = MakeDevCerts((dir_ / "certs").string());
    ASSERT_TRUE(certs.ok()) << certs.status().ToString();
    certs_ = *certs;
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(milliseconds(2000));
    server_.reset();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.state_dir = (dir_ / "state").string();
    o.num_rounds = 3;
    o.min_clients = 1;
    o.enrollment_token = kEnrollment;
    o.max_update_bytes = kParams * sizeof(float);
    o.seed = 11;
    return o;
  }

  std::unique_ptr<Strategy> FedAvg() {
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", {});
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(*config);
    EXPECT_TRUE(strategy.ok()) << strategy.status().ToString();
    return std::move(strategy).value();
  }

  GrpcServerOptions TlsServerOptions(const CoordinatorOptions& o) {
    GrpcServerOptions s;
    s.listen_address = "127.0.0.1:0";
    s.tls_cert_path = certs_.server_cert;
    s.tls_key_path = certs_.server_key;
    s.max_update_bytes = o.max_update_bytes;
    s.max_poll_wait = milliseconds(2000);
    return s;
  }

  void Start(const CoordinatorOptions& o, uint64_t num_params = kParams) {
    Start(o, TlsServerOptions(o), num_params);
  }

  void Start(const CoordinatorOptions& o, const GrpcServerOptions& s,
             uint64_t num_params = kParams) {
    Result<ParamSet> initial = SyntheticModel(num_params, o.seed);
    ASSERT_TRUE(initial.ok()) << initial.status().ToString();
    auto coordinator = Coordinator::Create(o, FedAvg(), *initial);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
    coordinator_ = std::move(coordinator).value();
    auto server = StartGrpcServer(s, coordinator_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    ASSERT_GT(server_->port(), 0);
  }

  std::string Target() const { return "localhost:" + std::to_string(server_->port()); }

  GrpcLinkOptions LinkOptions() const {
    GrpcLinkOptions o;
    if (server_ != nullptr) o.target = Target();
    o.root_ca_path = certs_.ca_cert;
    o.call_timeout = milliseconds(10000);
    o.transfer_timeout = milliseconds(120000);
    o.max_attempts = 2;
    o.initial_backoff = milliseconds(50);
    o.max_backoff = milliseconds(200);
    return o;
  }

  std::unique_ptr<GrpcLink> Link() {
    Result<std::unique_ptr<GrpcLink>> link = GrpcLink::Create(LinkOptions());
    EXPECT_TRUE(link.ok()) << link.status().ToString();
    return std::move(link).value();
  }

  std::unique_ptr<GrpcLink> Joined(const std::string& name) {
    std::unique_ptr<GrpcLink> link = Link();
    Result<JoinReply> reply = link->Join(kEnrollment, name);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return link;
  }

  // A TLS channel to the server, for calls GrpcLink never makes.
  std::shared_ptr<grpc::Channel> RawChannel() {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *Env::Default()->ReadFile(certs_.ca_cert);
    return grpc::CreateChannel(Target(), grpc::SslCredentials(ssl));
  }
  std::unique_ptr<v1::FederatedLearning::Stub> RawStub() {
    return v1::FederatedLearning::NewStub(RawChannel());
  }

  // A well-formed dense f32 update for `task`: delta[i] = scale * (i % 7 - 3).
  Payload GoodUpdate(const Task& task, const ParamSet& model, float scale = 0.01f) {
    std::vector<float> delta(model.size());
    for (size_t i = 0; i < delta.size(); ++i)
      delta[i] = scale * static_cast<float>(i % 7) - 3 * scale;
    Payload p;
    EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = task.round;
    p.meta.base_version = task.model_version;
    p.meta.weight = 10;
    p.meta.num_examples = 10;
    p.meta.train_loss = 0.5;
    p.meta.layout_hash = model.layout().hash();
    p.meta.encoding = Encoding::kDenseF32;
    p.meta.sha256 = Sha256(p.bytes);
    return p;
  }

  Task TrainTask(ServerLink& link) {
    Result<Task> task = link.PullTask(milliseconds(2000));
    EXPECT_TRUE(task.ok()) << task.status().ToString();
    EXPECT_EQ(task->kind, TaskKind::kTrain);
    return *task;
  }

  // The ledger rows of `round`, read from the server's SQLite file through a second
  // connection, exactly as an operator would inspect it.
  std::vector<LedgerEntry> Ledger(uint64_t round) {
    StoreOptions so;
    so.path = (dir_ / "state" / "state.db").string();
    Result<std::unique_ptr<Store>> store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    Result<std::vector<LedgerEntry>> rows = (*store)->LedgerForRound(round);
    EXPECT_TRUE(rows.ok()) << rows.status().ToString();
    return *rows;
  }

  bool HasRejection(uint64_t round, StatusCode code) {
    for (const LedgerEntry& e : Ledger(round)) {
      if (e.status_code == static_cast<int>(code)) return true;
    }
    return false;
  }

  // Pushes a rejected update and checks its code, its ledger row, and that a good update
  // from the same client still completes the round afterwards.
  void ExpectRejectedThenRecovers(Payload bad, StatusCode code, uint64_t ledger_round = 1) {
    std::unique_ptr<GrpcLink> link = Joined("client-a");
    Task task = TrainTask(*link);
    ASSERT_EQ(task.round, 1u);
    Result<ModelSnapshot> model = link->FetchModel(task.model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    if (bad.meta.layout_hash == 0) bad.meta.layout_hash = model->params->layout().hash();
    Result<PushAck> rejected = link->PushUpdate(bad);
    ASSERT_FALSE(rejected.ok());
    EXPECT_EQ(rejected.status().code(), code) << rejected.status().ToString();
    EXPECT_TRUE(HasRejection(ledger_round, code)) << "no ledger row for the rejection";
    FinishWithGoodUpdate(*link, task, *model->params);
  }

  void FinishWithGoodUpdate(GrpcLink& link, const Task& task, const ParamSet& model) {
    Result<PushAck> ack = link.PushUpdate(GoodUpdate(task, model));
    ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    EXPECT_EQ(ack->round, task.round);
    EXPECT_FALSE(ack->duplicate);
    Result<ServerStatusInfo> status = link.GetStatus();
    ASSERT_TRUE(status.ok()) << status.status().ToString();
    EXPECT_EQ(status->model_version, task.model_version + 1) << "the round did not complete";
  }

  std::filesystem::path dir_;
  DevCertPaths certs_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<GrpcServer> server_;
};

}  // namespace fl::internal

#endif  // FL_TESTS_INTEGRATION_GRPC_FIXTURE_H_
