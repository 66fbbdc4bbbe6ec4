// What a client can cost the server, against a real TLS server on loopback: enrollment
// caps and the join rate limit, session expiry and revocation, stalled streams, the
// upload budget, the per-client cap on rejected ledger rows, and the precise status
// (with its ledger row) of every refused stream. Time limits run on a FakeClockEnv
// shared by the coordinator and the server; nothing here waits for wall-clock time to
// pass, only for events (bounded by a safety cap so a broken run cannot hang).

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "grpc_fixture.h"
#include "server/running_server.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::IsEmpty;

constexpr std::chrono::seconds kSafetyCap(60);

class GrpcLimitsTest : public GrpcFixture {
 protected:
  CoordinatorOptions LimitedOptions() {
    CoordinatorOptions o = Options();
    o.env = &clock_;
    return o;
  }
  GrpcServerOptions ServerOptions(const CoordinatorOptions& o) {
    GrpcServerOptions s = TlsServerOptions(o);
    s.env = &clock_;
    s.poll_interval = milliseconds(20);
    s.stream_idle_timeout = std::chrono::seconds(30);
    return s;
  }

  // Waits (event: a condition on the server's state) until `pred` holds.
  template <typename Pred>
  bool Eventually(Pred pred) {
    const auto give_up = std::chrono::steady_clock::now() + kSafetyCap;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

  // Starts the server and takes client-a (through GrpcLink) into round 1: link_, task_,
  // model_ and a good update for it, good_.
  void StartWithClientInRound1(const CoordinatorOptions& o, const GrpcServerOptions& s) {
    Start(o, s);
    link_ = Joined("client-a");
    task_ = TrainTask(*link_);
    Result<ModelSnapshot> model = link_->FetchModel(task_.model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = model->params;
    good_ = GoodUpdate(task_, *model_);
  }
  void FinishRound() { FinishWithGoodUpdate(*link_, task_, *model_); }

  grpc::Status StatusWith(v1::FederatedLearning::Stub* stub, const std::string& token) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::GetStatusResponse response;
    return stub->GetStatus(&context, v1::GetStatusRequest(), &response);
  }

  // Ledger rows of `round` with `code` from `client`.
  size_t Rows(uint64_t round, StatusCode code, uint64_t client = 0) {
    size_t n = 0;
    for (const LedgerEntry& e : Ledger(round)) {
      if (e.status_code == static_cast<int>(code) && (client == 0 || e.client_id == client)) ++n;
    }
    return n;
  }

  // Sends raw bytes as the one request message of `method` (with `session` as its token
  // unless empty); returns the status.
  grpc::Status RawUnary(const std::string& method, const std::string& bytes,
                        const std::string& session = "") {
    grpc::GenericStub stub(RawChannel());
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    if (!session.empty()) context.AddMetadata("authorization", "Bearer " + session);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status status) { done.set_value(status); });
    return done.get_future().get();
  }

  FakeClockEnv clock_;
  std::unique_ptr<GrpcLink> link_;
  Task task_;
  std::shared_ptr<const ParamSet> model_;
  Payload good_;
};

// Finding: one enrollment token joined 2,000 fresh names.
TEST_F(GrpcLimitsTest, EnrollmentCapRefusesNewNamesButNotKnownOnes) {
  CoordinatorOptions o = LimitedOptions();
  o.max_clients = 3;
  Start(o, ServerOptions(o));
  auto stub = RawStub();
  for (const char* name : {"c-1", "c-2", "c-3"}) {
    ASSERT_TRUE(JoinWithStub(stub.get(), name).ok()) << name;
  }
  grpc::Status full = JoinWithStub(stub.get(), "c-4");
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_THAT(full.error_message(), HasSubstr("3 clients"));
  EXPECT_TRUE(JoinWithStub(stub.get(), "c-2").ok()) << "a known name re-joins";
  EXPECT_EQ(coordinator_->GetRefusals().joins_over_max_clients, 1u);
  EXPECT_EQ(coordinator_->GetStatus().clients_known, 3u);
}

// Finding: ~375 joins/s were accepted.
TEST_F(GrpcLimitsTest, JoinRateLimitIsUnavailableWithRetryHintUntilTheClockRefills) {
  CoordinatorOptions o = LimitedOptions();
  o.joins_per_second = 0.5;  // one token every 2 s of the fake clock
  o.join_burst = 2;
  Start(o, ServerOptions(o));
  auto stub = RawStub();
  EXPECT_TRUE(JoinWithStub(stub.get(), "a").ok());
  EXPECT_TRUE(JoinWithStub(stub.get(), "b").ok());
  grpc::Status limited = JoinWithStub(stub.get(), "c");
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::UNAVAILABLE) << limited.error_message();
  EXPECT_THAT(limited.error_message(), HasSubstr("retry after 2000 ms"));
  // Re-joins of known names spend the bucket too (each one mints a session).
  EXPECT_EQ(JoinWithStub(stub.get(), "a").error_code(), grpc::StatusCode::UNAVAILABLE);
  clock_.Advance(milliseconds(2000));
  EXPECT_TRUE(JoinWithStub(stub.get(), "c").ok());
  EXPECT_EQ(JoinWithStub(stub.get(), "d").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(coordinator_->GetRefusals().joins_rate_limited, 3u);
}

// Finding: a re-join did not revoke the old token (one name held 303 live sessions).
TEST_F(GrpcLimitsTest, RejoinRevokesTheNamesEarlierSessions) {
  CoordinatorOptions o = LimitedOptions();
  Start(o, ServerOptions(o));
  auto stub = RawStub();
  std::string first, second, other;
  ASSERT_TRUE(JoinWithStub(stub.get(), "dev", &first).ok());
  ASSERT_TRUE(JoinWithStub(stub.get(), "peer", &other).ok());
  ASSERT_TRUE(StatusWith(stub.get(), first).ok());
  ASSERT_TRUE(JoinWithStub(stub.get(), "dev", &second).ok());
  grpc::Status revoked = StatusWith(stub.get(), first);
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED) << revoked.error_message();
  EXPECT_TRUE(StatusWith(stub.get(), second).ok());
  EXPECT_TRUE(StatusWith(stub.get(), other).ok()) << "another name's session is untouched";

  // The store holds one session per name, so a restarted server agrees.
  StoreOptions so;
  so.path = (dir_ / "state" / "state.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_FALSE((*store)->GetSession(HexEncode(Sha256(first))).value().has_value());
  EXPECT_TRUE((*store)->GetSession(HexEncode(Sha256(second))).value().has_value());
}

// Finding: sessions never expired.
TEST_F(GrpcLimitsTest, SessionsExpireAfterTheirTtlAndTheLinkRejoins) {
  CoordinatorOptions o = LimitedOptions();
  o.session_ttl = std::chrono::seconds(60);
  Start(o, ServerOptions(o));
  auto stub = RawStub();
  std::string token;
  ASSERT_TRUE(JoinWithStub(stub.get(), "raw", &token).ok());
  std::unique_ptr<GrpcLink> link = Joined("linked");
  clock_.Advance(milliseconds(59000));
  EXPECT_TRUE(StatusWith(stub.get(), token).ok());
  clock_.Advance(milliseconds(1000));
  grpc::Status expired = StatusWith(stub.get(), token);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::UNAUTHENTICATED) << expired.error_message();
  EXPECT_THAT(expired.error_message(), HasSubstr("expired"));
  // GrpcLink answers UNAUTHENTICATED by joining again under its name.
  Result<ServerStatusInfo> status = link->GetStatus();
  EXPECT_TRUE(status.ok()) << status.status().ToString();
}

// Finding: an upload that sent a header and then nothing held its thread forever.
TEST_F(GrpcLimitsTest, StalledUploadIsCancelledAndRecordedAsDeadlineExceeded) {
  CoordinatorOptions o = LimitedOptions();
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1(o, ServerOptions(o)));

  auto stub = RawStub();
  const std::string session = JoinRaw(stub.get(), "client-a");
  RawUpload stalled(stub.get(), session, std::chrono::seconds(600));
  ASSERT_TRUE(stalled.Header(good_.meta, good_.bytes.size()));
  ASSERT_TRUE(stalled.Data(std::string_view(good_.bytes).substr(0, 100)));
  // The server has the stream and its first 100 bytes; the upload was admitted with its
  // declared size.
  ASSERT_TRUE(Eventually([&] { return server_->Stats().inflight_upload_bytes == good_.bytes.size(); }));
  EXPECT_EQ(server_->Stats().open_streams, 1u);
  clock_.Advance(milliseconds(29000));
  EXPECT_EQ(server_->Stats().idle_streams_cancelled, 0u);
  clock_.Advance(milliseconds(1000));
  grpc::Status status = stalled.Await();  // returns once the server cancelled the call
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(server_->Stats().idle_streams_cancelled, 1u);
  EXPECT_TRUE(Eventually([&] { return server_->Stats().open_streams == 0; }));
  EXPECT_EQ(server_->Stats().inflight_upload_bytes, 0u);
  EXPECT_EQ(Rows(task_.round, StatusCode::kDeadlineExceeded), 1u);

  // A stream that never sends its header stalls the same way (ledger round 0).
  RawUpload silent(stub.get(), JoinRaw(stub.get(), "client-a"), std::chrono::seconds(600));
  ASSERT_TRUE(Eventually([&] { return server_->Stats().open_streams == 1; }));
  clock_.Advance(milliseconds(30000));
  EXPECT_FALSE(silent.Await().ok());
  EXPECT_TRUE(Eventually([&] { return server_->Stats().open_streams == 0; }));
  EXPECT_EQ(Rows(0, StatusCode::kDeadlineExceeded), 1u);
  FinishRound();
}

// Finding: 4 stalled uploads took the server from 47 MB to 401 MB (declared sizes were
// reserved up front, and nothing bounded the total). Uploads beyond the budget are now
// held back by flow control instead of refused: one waits, unread, until another ends.
TEST_F(GrpcLimitsTest, UploadsBeyondTheInflightBudgetWaitForRoom) {
  CoordinatorOptions o = LimitedOptions();
  o.num_rounds = 1;
  GrpcServerOptions s = ServerOptions(o);
  s.max_inflight_upload_bytes = o.max_update_bytes;  // room for exactly one update
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1(o, s));
  const uint64_t size = good_.bytes.size();

  auto stub = RawStub();
  const std::string session = JoinRaw(stub.get(), "client-a");
  // Admitted with its declared size, then silent.
  RawUpload holder(stub.get(), session, std::chrono::seconds(600));
  ASSERT_TRUE(holder.Header(good_.meta, o.max_update_bytes));
  ASSERT_TRUE(holder.Data(std::string_view(good_.bytes).substr(0, 3000)));
  ASSERT_TRUE(Eventually([&] { return server_->Stats().inflight_upload_bytes == o.max_update_bytes; }));
  // The whole honest update is sent, but the server does not read it yet.
  RawUpload waiter(stub.get(), session, std::chrono::seconds(600));
  ASSERT_TRUE(waiter.Header(good_.meta, size));
  ASSERT_TRUE(waiter.Data(good_.bytes));
  std::future<grpc::Status> waited = std::async(std::launch::async, [&] { return waiter.Finish(); });
  ASSERT_TRUE(Eventually([&] { return server_->Stats().uploads_waiting == 1; }));
  EXPECT_EQ(server_->Stats().inflight_upload_bytes, o.max_update_bytes);
  EXPECT_EQ(Rows(task_.round, StatusCode::kResourceExhausted), 0u) << "nothing is refused";

  // The idle clock runs for the admitted upload only: the holder is cut off, which
  // frees its room, and the waiter is admitted, read and acknowledged.
  clock_.Advance(s.stream_idle_timeout);
  EXPECT_FALSE(holder.Await().ok());
  grpc::Status status = waited.get();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Rows(task_.round, StatusCode::kDeadlineExceeded), 1u);
  EXPECT_EQ(Rows(task_.round, StatusCode::kOk), 1u) << "the waiting update is accepted";
  ASSERT_TRUE(Eventually([&] { return server_->Stats().open_streams == 0; }));
  EXPECT_EQ(server_->Stats().inflight_upload_bytes, 0u);
  EXPECT_EQ(server_->Stats().uploads_waiting, 0u);
}

// One client cannot hold more than max_calls_per_client of the server's threads.
TEST_F(GrpcLimitsTest, CallsPerClientAreCapped) {
  CoordinatorOptions o = LimitedOptions();
  GrpcServerOptions s = ServerOptions(o);
  s.max_calls_per_client = 3;
  Start(o, s);
  auto stub = RawStub();
  const std::string session = JoinRaw(stub.get(), "greedy");
  std::vector<std::unique_ptr<RawUpload>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawUpload>(stub.get(), session, std::chrono::seconds(600)));
  }
  ASSERT_TRUE(Eventually([&] { return server_->Stats().open_streams == 3; }));
  RawUpload fourth(stub.get(), session);
  grpc::Status refused = fourth.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("max_calls_per_client"));
  EXPECT_EQ(server_->Stats().calls_refused_per_client, 1u);
  EXPECT_EQ(Rows(0, StatusCode::kResourceExhausted), 1u);
  // Another client is not affected.
  std::unique_ptr<GrpcLink> other = Joined("other");
  EXPECT_TRUE(other->PullTask(milliseconds(0)).ok());
  for (auto& upload : held) upload->Cancel();
  ASSERT_TRUE(Eventually([&] { return server_->Stats().open_streams == 0; }));
  RawUpload again(stub.get(), session);
  EXPECT_NE(again.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "slots are released when calls end";
}

// Finding: one client could add unbounded rejected rows per round.
TEST_F(GrpcLimitsTest, RejectedRowsPerClientAndRoundAreCapped) {
  CoordinatorOptions o = LimitedOptions();
  o.max_rejected_rows_per_client = 3;
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1(o, ServerOptions(o)));
  Payload bad = good_;
  bad.meta.base_version = 7;
  for (int i = 0; i < 8; ++i) {
    Result<PushAck> refused = link_->PushUpdate(bad);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(Rows(task_.round, StatusCode::kFailedPrecondition), 3u);
  EXPECT_EQ(coordinator_->GetRefusals().rejected_rows_suppressed, 5u);
  FinishRound();
  // The next round starts a fresh allowance.
  Task next = TrainTask(*link_);
  bad.meta.round = next.round;
  EXPECT_FALSE(link_->PushUpdate(bad).ok());
  EXPECT_EQ(Rows(next.round, StatusCode::kFailedPrecondition), 1u);
}

// Finding: empty streams and streams without a header got no ledger row, and a
// message over the size limit was recorded as DATA_LOSS.
TEST_F(GrpcLimitsTest, EveryRefusedStreamGetsALedgerRowWithItsStatus) {
  CoordinatorOptions o = LimitedOptions();
  o.max_rejected_rows_per_client = 100;
  ASSERT_NO_FATAL_FAILURE(StartWithClientInRound1(o, ServerOptions(o)));
  auto stub = RawStub();
  const std::string session = JoinRaw(stub.get(), "client-a");

  struct Case {
    const char* what;
    std::function<grpc::Status()> run;
    grpc::StatusCode code;
    uint64_t ledger_round;
  };
  const std::vector<Case> cases = {
      {"empty stream", [&] { return RawUpload(stub.get(), session).Finish(); },
       grpc::StatusCode::INVALID_ARGUMENT, 0},
      {"no header",
       [&] {
         RawUpload u(stub.get(), session);
         u.Data("abc");
         return u.Finish();
       },
       grpc::StatusCode::INVALID_ARGUMENT, 0},
      {"bad header",
       [&] {
         RawUpload u(stub.get(), session);
         v1::UpdateChunk chunk;
         ToProto(good_.meta, good_.bytes.size(), chunk.mutable_header());
         chunk.mutable_header()->set_encoding(static_cast<v1::Encoding>(999));
         u.Write(chunk);
         u.Data(good_.bytes);
         return u.Finish();
       },
       grpc::StatusCode::INVALID_ARGUMENT, task_.round},
      {"over-size message",
       [&] {
         RawUpload u(stub.get(), session);
         u.Header(good_.meta, good_.bytes.size());
         u.Data(std::string(kMaxChunkBytes + 1, 'x'));
         return u.Finish();
       },
       grpc::StatusCode::RESOURCE_EXHAUSTED, task_.round},
      {"malformed chunk after the header",
       [&] {
         ByteUpload u(RawChannel().get(), session);
         v1::UpdateChunk header;
         ToProto(good_.meta, good_.bytes.size(), header.mutable_header());
         u.Write(header);
         u.Bytes(std::string("\x12\x64" "abc", 5));  // data field: 100 bytes declared, 3 sent
         return u.Finish();
       },
       grpc::StatusCode::INVALID_ARGUMENT, task_.round},
      {"truncated",
       [&] {
         RawUpload u(stub.get(), session);
         u.Header(good_.meta, good_.bytes.size());
         u.Data(std::string_view(good_.bytes).substr(0, 10));
         return u.Finish();
       },
       grpc::StatusCode::DATA_LOSS, task_.round},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const size_t before = Rows(c.ledger_round, static_cast<StatusCode>(c.code));
    grpc::Status status = c.run();
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), Not(IsEmpty()));
    EXPECT_EQ(Rows(c.ledger_round, static_cast<StatusCode>(c.code)), before + 1);
  }
  FinishRound();
}

// Finding: malformed protobuf got INTERNAL with an empty message, and a client name with
// invalid UTF-8 got INTERNAL.
TEST_F(GrpcLimitsTest, MalformedRequestsAndBadNamesAreInvalidArgumentWithAMessage) {
  CoordinatorOptions o = LimitedOptions();
  Start(o, ServerOptions(o));
  // Field 1 declared 100 bytes long, 3 present.
  grpc::Status garbage = RawUnary("/fl.v1.FederatedLearning/Join", std::string("\x0a\x64" "abc", 5));
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(garbage.error_message(), HasSubstr("malformed JoinRequest"));
  // JoinRequest{enrollment_token: kEnrollment, client_name: "\xff\xfe"}.
  std::string join = std::string("\x0a") + static_cast<char>(sizeof(kEnrollment) - 1) +
                     kEnrollment + std::string("\x12\x02\xff\xfe", 4);
  grpc::Status utf8 = RawUnary("/fl.v1.FederatedLearning/Join", join);
  EXPECT_EQ(utf8.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << utf8.error_message();
  EXPECT_THAT(utf8.error_message(), Not(IsEmpty()));
  // Every method, also the blocking ones (a long poll, the model download), with and
  // without a valid session.
  std::string session;
  ASSERT_TRUE(JoinWithStub(RawStub().get(), "client-m", &session).ok());
  for (const char* call : {"Heartbeat", "GetStatus", "PullTask", "FetchModel"}) {
    for (const std::string& token : {std::string(), session}) {
      grpc::Status status = RawUnary(std::string("/fl.v1.FederatedLearning/") + call,
                                     std::string("\xff\xff\xff", 3), token);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << call;
      EXPECT_THAT(status.error_message(), HasSubstr(std::string("malformed ") + call));
    }
  }

  auto stub = RawStub();
  for (const std::string& name : {std::string("has space"), std::string("semi;colon"),
                                  std::string(129, 'a'), std::string("\xc3\xa9t\xc3\xa9")}) {
    grpc::Status status = JoinWithStub(stub.get(), name);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_THAT(status.error_message(), Not(IsEmpty()));
  }
  EXPECT_TRUE(JoinWithStub(stub.get(), std::string(128, 'a')).ok());
  EXPECT_TRUE(JoinWithStub(stub.get(), "Dev_1.edge-7").ok());
}

TEST(GrpcLimitsConfigTest, ServerKeysHaveDefaultsAndRefuseBadValues) {
  auto options = [](std::vector<std::string> overrides) -> Result<GrpcServerOptions> {
    overrides.push_back("server.insecure=true");
    FL_ASSIGN_OR_RETURN(Config config, Config::Build(ServerConfigDefaults(), "", overrides));
    FL_ASSIGN_OR_RETURN(CoordinatorOptions coordinator, CoordinatorOptionsFromConfig(config));
    return GrpcServerOptionsFromConfig(config, coordinator);
  };
  Result<GrpcServerOptions> d = options({});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const GrpcServerOptions defaults;
  EXPECT_EQ(d->stream_idle_timeout, defaults.stream_idle_timeout);
  EXPECT_EQ(d->max_inflight_upload_bytes, defaults.max_inflight_upload_bytes);
  EXPECT_EQ(d->max_threads, defaults.max_threads);
  EXPECT_EQ(d->upload_threads, defaults.upload_threads);
  EXPECT_EQ(d->max_calls_per_client, defaults.max_calls_per_client);
  Result<GrpcServerOptions> set = options({"server.stream_idle_timeout_s=2.5",
                                           "server.max_inflight_upload_mb=4096",
                                           "server.max_threads=0", "server.max_calls_per_client=2",
                                           "server.upload_threads=2"});
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->stream_idle_timeout, milliseconds(2500));
  EXPECT_EQ(set->max_inflight_upload_bytes, 4096ull << 20);
  EXPECT_EQ(set->max_threads, 0);
  EXPECT_EQ(set->max_calls_per_client, 2);
  EXPECT_EQ(set->upload_threads, 2);
  for (const char* bad : {"server.stream_idle_timeout_s=0", "server.max_threads=-1",
                          "server.upload_threads=0",
                          "server.max_calls_per_client=-1", "server.max_inflight_upload_mb=0"}) {
    Result<GrpcServerOptions> o = options({bad});
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument) << bad;
    const std::string key = std::string(bad).substr(0, std::string(bad).find('='));
    EXPECT_THAT(o.status().message(), HasSubstr(key)) << bad;
  }
  // The budget must hold at least one whole update.
  Result<GrpcServerOptions> small =
      options({"coordinator.max_update_mb=64", "server.max_inflight_upload_mb=32"});
  EXPECT_EQ(small.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fl::internal
