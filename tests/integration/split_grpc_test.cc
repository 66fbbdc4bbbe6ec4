// SFPrompt's split sessions end to end: a real TLS loopback server with a real SQLite
// store serving a small ViT's body to GrpcLink clients and raw streams, and the same
// SplitService serving InProcessLink. The body's answers equal the whole model's in one
// process, batched or not; bad input, clients that leave mid-step and idle sessions each
// end only their own session, with one ledger row. Body passes are forced by sample
// counts and a wait no test reaches, idle time by a fake clock; every wait here is for
// an event, never a timing.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "codec/token_codec.h"
#include "fl/client.h"
#include "grpc_fixture.h"
#include "server/running_server.h"
#include "server/split_config.h"
#include "server/split_service.h"
#include "simulations/in_process_link.h"
#include "tests/testing/vit_split_reference.h"
#include "torch/models.h"
#include "torch/vit_model.h"

namespace fl::internal {
namespace {

constexpr int64_t kNever = 600'000'000;  // a body pass wait (us) no test reaches
constexpr int64_t kTokens = 19;
constexpr int64_t kWidth = 32;

template <typename Predicate>
void WaitUntil(Predicate done) {
  while (!done()) std::this_thread::sleep_for(milliseconds(5));
}

void ExpectNear(const Result<TokenTensor>& got, const torch::Tensor& want, double tol,
                const char* what) {
  ASSERT_TRUE(got.ok()) << what << ": " << got.status().ToString();
  ASSERT_EQ(got->batch, want.size(0)) << what;
  const double diff = (ToTensor(*got) - want).abs().max().item<float>();
  EXPECT_LE(diff, tol) << what;
}

// One f32 session of all tokens on `link`: one step answers `ref`'s output and input
// gradient (within 1e-5), then Finish.
void ExpectWholeModelStep(ServerLink* link, uint64_t round, const SplitReference& ref) {
  Result<std::unique_ptr<SplitSession>> session =
      link->OpenSplitSession({round, Encoding::kDenseF32});
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ExpectNear((*session)->Forward(FromTensor(ref.a)), ref.z, 1e-5, "body output");
  ExpectNear((*session)->Backward(FromTensor(ref.grad_z)), ref.grad_a, 1e-5, "input gradient");
  EXPECT_TRUE((*session)->Finish().ok());
}

// A SplitStep stream written by hand, for messages GrpcLink never sends.
class RawSplit {
 public:
  RawSplit(v1::FederatedLearning::Stub* stub, const std::string& token) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    context_.AddMetadata("authorization", "Bearer " + token);
    stream_ = stub->SplitStep(&context_);
  }
  // Opens the session; false if the server refused (then Finish() says why).
  bool Open(uint64_t round, Encoding encoding) {
    v1::SplitRequest request;
    request.mutable_open()->set_round(round);
    request.mutable_open()->set_encoding(ToProto(encoding));
    v1::SplitResponse response;
    return stream_->Write(request) && stream_->Read(&response) && response.has_opened();
  }
  bool SendForward(const EncodedTokens& tensor) {
    v1::SplitRequest request;
    ToProto(tensor, request.mutable_forward());
    return stream_->Write(request);
  }
  bool Send(const v1::SplitRequest& request) { return stream_->Write(request); }
  bool Read(v1::SplitResponse* response) { return stream_->Read(response); }
  void Cancel() { context_.TryCancel(); }
  grpc::Status Finish() { return stream_->Finish(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SplitRequest, v1::SplitResponse>> stream_;
};

EncodedTokens Encoded(const torch::Tensor& t, Encoding encoding = Encoding::kDenseF32) {
  Result<EncodedTokens> e = EncodeTokens(FromTensor(t), encoding);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return *e;
}

class SplitGrpcTest : public GrpcFixture {
 protected:
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(milliseconds(2000));
    server_.reset();
    split_.reset();
    GrpcFixture::TearDown();
  }

  // Body passes of exactly `pass_samples` (0: every request alone).
  SplitServiceOptions SplitOptions(int64_t pass_samples) {
    SplitServiceOptions o;
    o.body.vit = SmallSplitVit();
    o.body.begin = 1;
    o.body.end = 3;
    o.body.init_seed = 99;  // the backbone, not the seed, must decide the weights
    o.body.batching = {.enabled = pass_samples > 0,
                       .max_batch_samples = pass_samples > 0 ? pass_samples : 64,
                       .max_wait_us = kNever};
    o.sweep_interval = milliseconds(0);  // idle sessions end only when a test says so
    return o;
  }

  // A coordinator whose first round selects `clients` clients, the body of a test ViT
  // on it and the TLS server for both.
  void StartSplit(uint32_t clients, SplitServiceOptions split, Env* env = nullptr) {
    vit_ = *CreateTinyVit(SmallSplitVit(), 5);
    ASSERT_TRUE(ParamBridge(*vit_).Read(&backbone_).ok());
    CoordinatorOptions o = Options();
    o.min_clients = clients;
    o.env = env;
    Result<ParamSet> initial = SyntheticModel(kParams, o.seed);
    ASSERT_TRUE(initial.ok());
    auto coordinator = Coordinator::Create(o, FedAvg(), *initial);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
    coordinator_ = std::move(coordinator).value();
    split.env = env;
    auto service = SplitService::Create(split, &backbone_, coordinator_.get());
    ASSERT_TRUE(service.ok()) << service.status().ToString();
    split_ = std::move(service).value();
    GrpcServerOptions s = TlsServerOptions(o);
    s.split = split_.get();
    auto server = StartGrpcServer(s, coordinator_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }

  // Each row is a split refusal: never an accepted update, its reason marked.
  void ExpectSplitRows(const std::vector<LedgerEntry>& rows, size_t n, StatusCode code) {
    ASSERT_EQ(rows.size(), n);
    for (const LedgerEntry& e : rows) {
      EXPECT_EQ(e.status_code, static_cast<int>(code)) << e.reason;
      EXPECT_THAT(e.reason, ::testing::StartsWith("split session: "));
    }
  }

  TinyVit vit_{nullptr};
  ParamSet backbone_;
  std::unique_ptr<SplitService> split_;
};

// (a) Three sessions of batch 1, 2 and 3 over TLS, batched into one body pass each way:
// each gets the whole model's output and input gradient (f32, within 1e-5).
TEST_F(SplitGrpcTest, F32StepsMatchTheWholeModelWhenBatched) {
  StartSplit(3, SplitOptions(/*pass_samples=*/6));
  std::vector<std::unique_ptr<GrpcLink>> links;
  for (int k = 0; k < 3; ++k) links.push_back(Joined("client-" + std::to_string(k)));
  std::vector<uint64_t> rounds;
  for (auto& link : links) rounds.push_back(TrainTask(*link).round);
  std::vector<SplitReference> refs;
  for (int k = 0; k < 3; ++k) refs.push_back(WholeModelStep(vit_, k + 1, 100 + k));

  std::vector<Result<TokenTensor>> outputs(3, Status::Unknown("not run"));
  std::vector<Result<TokenTensor>> grads(3, Status::Unknown("not run"));
  std::vector<SplitTraffic> traffic(3);
  std::vector<std::thread> threads;
  for (int k = 0; k < 3; ++k) {
    threads.emplace_back([&, k] {
      Result<std::unique_ptr<SplitSession>> session =
          links[k]->OpenSplitSession({rounds[k], Encoding::kDenseF32});
      ASSERT_TRUE(session.ok()) << session.status().ToString();
      EXPECT_EQ((*session)->tokens(), kTokens);
      EXPECT_EQ((*session)->width(), kWidth);
      outputs[k] = (*session)->Forward(FromTensor(refs[k].a));
      if (outputs[k].ok()) grads[k] = (*session)->Backward(FromTensor(refs[k].grad_z));
      EXPECT_TRUE((*session)->Finish().ok());
      traffic[k] = (*session)->traffic();
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < 3; ++k) {
    ExpectNear(outputs[k], refs[k].z, 1e-5, "body output");
    ExpectNear(grads[k], refs[k].grad_a, 1e-5, "input gradient");
    const uint64_t tensor = static_cast<uint64_t>((k + 1) * kTokens * kWidth * 4);
    EXPECT_EQ(traffic[k].bytes_up, kSplitFramingBytes + 2 * (tensor + kSplitFramingBytes));
    EXPECT_EQ(traffic[k].bytes_down, traffic[k].bytes_up);
    EXPECT_EQ(traffic[k].steps, 2u);
  }
  SplitServiceStats stats = split_->Stats();
  EXPECT_EQ(stats.body.forward_passes, 1);
  EXPECT_EQ(stats.body.backward_passes, 1);
  EXPECT_EQ(stats.body.max_requests_in_a_pass, 3);
  EXPECT_EQ(stats.open_sessions, 0);
  EXPECT_EQ(stats.sessions_failed, 0);
  EXPECT_TRUE(Ledger(rounds[0]).empty());
}

// The token ranges of a client without head or tail blocks: CLS out, the prompts'
// input gradient back.
SplitSessionOptions Reduced(uint64_t round, Encoding encoding = Encoding::kDenseF32) {
  SplitSessionOptions o{round, encoding};
  o.output_tokens = 1;
  o.grad_begin = 1;
  o.grad_end = 3;
  return o;
}

// (a) A session with reduced token ranges (CLS out, the prompts' gradient back) batched
// with a full one into one body pass each way: each gets its slices of the whole
// model's answers (f32, within 1e-5), and the reduced one moves only those tokens.
// The reference's tail reads only CLS, so its output gradient at CLS is all of it.
TEST_F(SplitGrpcTest, ReducedTokenRangesMatchTheWholeModelsSlices) {
  StartSplit(2, SplitOptions(/*pass_samples=*/5));
  std::unique_ptr<GrpcLink> reduced = Joined("reduced");
  std::unique_ptr<GrpcLink> full = Joined("full");
  const uint64_t round = TrainTask(*reduced).round;
  EXPECT_EQ(TrainTask(*full).round, round);
  SplitReference r3 = WholeModelStep(vit_, 3, 11);
  SplitReference r2 = WholeModelStep(vit_, 2, 12);

  Result<TokenTensor> z3 = Status::Unknown("not run"), g3 = Status::Unknown("not run");
  SplitTraffic traffic;
  std::thread first([&] {
    Result<std::unique_ptr<SplitSession>> session = reduced->OpenSplitSession(Reduced(round));
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    EXPECT_EQ((*session)->tokens(), kTokens);
    z3 = (*session)->Forward(FromTensor(r3.a));
    if (z3.ok()) g3 = (*session)->Backward(FromTensor(r3.grad_z.narrow(1, 0, 1)));
    EXPECT_TRUE((*session)->Finish().ok());
    traffic = (*session)->traffic();
  });
  WaitUntil([&] { return split_->Stats().steps_running == 1; });  // queued in the body
  ExpectWholeModelStep(full.get(), round, r2);
  first.join();

  ExpectNear(z3, r3.z.narrow(1, 0, 1), 1e-5, "CLS of the body output");
  ExpectNear(g3, r3.grad_a.narrow(1, 1, 2), 1e-5, "input gradient at the prompts");
  ASSERT_TRUE(z3.ok() && g3.ok());
  EXPECT_EQ(z3->tokens, 1);
  EXPECT_EQ(g3->tokens, 2);
  const uint64_t token = 3 * kWidth * 4;  // one token of the batch, f32
  EXPECT_EQ(traffic.bytes_up, kSplitFramingBytes + (kTokens * token + kSplitFramingBytes) +
                                  (1 * token + kSplitFramingBytes));
  EXPECT_EQ(traffic.bytes_down, kSplitFramingBytes + (1 * token + kSplitFramingBytes) +
                                    (2 * token + kSplitFramingBytes));
  SplitServiceStats stats = split_->Stats();
  EXPECT_EQ(stats.body.forward_passes, 1);
  EXPECT_EQ(stats.body.backward_passes, 1);
  EXPECT_EQ(stats.body.max_requests_in_a_pass, 2);
  EXPECT_EQ(stats.sessions_failed, 0);
  EXPECT_TRUE(Ledger(round).empty());
}

// (b) Token ranges outside the body's 19 tokens are refused on open with
// INVALID_ARGUMENT (no session, no ledger row). A negative value travels as a uint64
// beyond int64.
TEST_F(SplitGrpcTest, BadTokenRangesAreRefusedOnOpen) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> link = Joined("ranges");
  const uint64_t round = TrainTask(*link).round;
  struct Bad {
    int64_t output, begin, end;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {20, 0, 0, "output_tokens 20 outside [0, 19]"},
      {-1, 0, 0, "split token range beyond int64"},
      {0, 3, 3, "gradient tokens [3, 3) are not a non-empty range within [0, 19)"},
      {0, 2, 1, "gradient tokens [2, 1)"},
      {0, 0, 20, "gradient tokens [0, 20)"},
      {0, -1, 2, "split token range beyond int64"},
      {0, 1, 0, "gradient tokens [1, 0)"}};
  for (const Bad& b : bad) {
    SplitSessionOptions o{round, Encoding::kDenseF32, b.output, b.begin, b.end};
    Result<std::unique_ptr<SplitSession>> session = link->OpenSplitSession(o);
    ASSERT_FALSE(session.ok()) << b.message;
    EXPECT_EQ(session.status().code(), StatusCode::kInvalidArgument) << session.status().ToString();
    EXPECT_THAT(session.status().message(), ::testing::HasSubstr(b.message));
  }
  EXPECT_EQ(split_->Stats().sessions_opened, 0);
  EXPECT_TRUE(Ledger(round).empty());
}

// (b) A session that asked for the CLS output only sends a Backward of all 19 tokens:
// INVALID_ARGUMENT, the session ends and has one ledger row.
TEST_F(SplitGrpcTest, FullTokenBackwardOnAReducedSessionIsRefused) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> link = Joined("full-backward");
  const uint64_t round = TrainTask(*link).round;
  SplitReference ref = WholeModelStep(vit_, 2, 13);
  Result<std::unique_ptr<SplitSession>> session = link->OpenSplitSession(Reduced(round));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ExpectNear((*session)->Forward(FromTensor(ref.a)), ref.z.narrow(1, 0, 1), 1e-5, "CLS output");
  Result<TokenTensor> g = (*session)->Backward(FromTensor(ref.grad_z));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
  EXPECT_THAT(g.status().message(),
              ::testing::HasSubstr("has 19 tokens of width 32; the session's output takes 1 of "
                                   "width 32"));
  EXPECT_EQ((*session)->Forward(FromTensor(ref.a)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(split_->Stats().sessions_failed, 1);
  std::vector<LedgerEntry> rows = Ledger(round);
  ExpectSplitRows(rows, 1, StatusCode::kInvalidArgument);
  EXPECT_EQ(rows[0].client_id, link->client_id());
}

// (a) f16 and bf16: both ways rounded, so the answers are the whole model's within the
// encodings' rounding: max |error| <= 2e-3 (f16, 11-bit significand) and 2e-2 (bf16,
// 8-bit) for this model's activations and gradients (magnitudes below ~4).
TEST_F(SplitGrpcTest, NarrowEncodingsMatchWithinTheirRounding) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> link = Joined("narrow");
  const uint64_t round = TrainTask(*link).round;
  SplitReference ref = WholeModelStep(vit_, 4, 7);
  for (auto [encoding, tol] :
       {std::pair{Encoding::kDenseF16, 2e-3}, std::pair{Encoding::kDenseBF16, 2e-2}}) {
    Result<std::unique_ptr<SplitSession>> session = link->OpenSplitSession({round, encoding});
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    ExpectNear((*session)->Forward(FromTensor(ref.a)), ref.z, tol, "body output");
    ExpectNear((*session)->Backward(FromTensor(ref.grad_z)), ref.grad_a, tol, "input gradient");
    const uint64_t tensor = static_cast<uint64_t>(4 * kTokens * kWidth * 2);
    EXPECT_EQ((*session)->traffic().bytes_up,
              kSplitFramingBytes + 2 * (tensor + kSplitFramingBytes));
    EXPECT_TRUE((*session)->Finish().ok());
  }
}

// (b) Wrong shape, wrong encoding, wrong byte length and NaN each end their own session
// with INVALID_ARGUMENT and one ledger row, while two good sessions batched together
// (a pass of 4 samples runs only once both are queued) complete.
TEST_F(SplitGrpcTest, BadInputEndsOnlyItsSession) {
  StartSplit(6, SplitOptions(/*pass_samples=*/4));
  std::unique_ptr<GrpcLink> good1 = Joined("good-1");
  std::unique_ptr<GrpcLink> good2 = Joined("good-2");
  std::unique_ptr<v1::FederatedLearning::Stub> stub = RawStub();
  std::vector<std::string> bad_tokens;
  for (int k = 0; k < 4; ++k) bad_tokens.push_back(JoinRaw(stub.get(), "bad-" + std::to_string(k)));
  const uint64_t round = TrainTask(*good1).round;
  EXPECT_EQ(TrainTask(*good2).round, round);
  SplitReference r1 = WholeModelStep(vit_, 2, 1);
  SplitReference r2 = WholeModelStep(vit_, 2, 2);

  std::thread first([&] { ExpectWholeModelStep(good1.get(), round, r1); });
  WaitUntil([&] { return split_->Stats().steps_running == 1; });  // queued in the body

  EncodedTokens short_tokens = Encoded(r1.a.narrow(1, 0, 18));
  EncodedTokens relabeled = Encoded(r1.a, Encoding::kDenseF16);  // session opened as f32
  EncodedTokens truncated = Encoded(r1.a);
  truncated.values.resize(truncated.values.size() - 4);
  torch::Tensor with_nan = r1.a.clone();
  with_nan[1][3][5] = NAN;
  EncodedTokens nan = Encoded(with_nan);
  const std::vector<std::pair<EncodedTokens, std::string>> bad = {
      {short_tokens, "has 18 tokens of width 32; the body takes 19 of width 32"},
      {relabeled, "is encoded as f16, the session as f32"},
      {truncated, "takes 4864 bytes, got 4860"},
      {nan, "non-finite value at index 709 (as f32)"}};
  for (size_t k = 0; k < bad.size(); ++k) {
    RawSplit raw(stub.get(), bad_tokens[k]);
    ASSERT_TRUE(raw.Open(round, Encoding::kDenseF32));
    ASSERT_TRUE(raw.SendForward(bad[k].first));
    v1::SplitResponse response;
    EXPECT_FALSE(raw.Read(&response));
    grpc::Status status = raw.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr(bad[k].second));
  }
  std::thread second([&] { ExpectWholeModelStep(good2.get(), round, r2); });
  first.join();
  second.join();

  SplitServiceStats stats = split_->Stats();
  EXPECT_EQ(stats.body.requests, 4);  // the good sessions' forwards and backwards only
  EXPECT_EQ(stats.body.max_requests_in_a_pass, 2);
  EXPECT_EQ(stats.sessions_failed, 4);
  std::vector<LedgerEntry> rows = Ledger(round);
  ExpectSplitRows(rows, 4, StatusCode::kInvalidArgument);
  std::set<uint64_t> refused;
  for (const LedgerEntry& e : rows) refused.insert(e.client_id);
  EXPECT_EQ(refused.size(), 4u);
  EXPECT_EQ(refused.count(good1->client_id()) + refused.count(good2->client_id()), 0u);
}

// (b) Messages out of protocol end the session with a ledger row too: a second open, a
// message without a step, a Backward without a Forward, a dimension beyond int64.
TEST_F(SplitGrpcTest, OutOfProtocolMessagesEndTheSession) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> link = Joined("confused");
  const uint64_t round = TrainTask(*link).round;
  std::unique_ptr<v1::FederatedLearning::Stub> stub = RawStub();
  const std::string token = JoinRaw(stub.get(), "confused");  // the same client id
  v1::SplitRequest second_open;
  second_open.mutable_open()->set_round(round);
  v1::SplitRequest backward;
  ToProto(Encoded(WholeModelStep(vit_, 1, 3).grad_z), backward.mutable_backward());
  v1::SplitRequest huge;
  ToProto(Encoded(WholeModelStep(vit_, 1, 3).a), huge.mutable_forward());
  huge.mutable_forward()->set_batch(~uint64_t{0});
  const std::vector<std::pair<v1::SplitRequest, std::pair<grpc::StatusCode, std::string>>> cases = {
      {second_open, {grpc::StatusCode::INVALID_ARGUMENT, "forward or backward only"}},
      {v1::SplitRequest(), {grpc::StatusCode::INVALID_ARGUMENT, "forward or backward only"}},
      {backward, {grpc::StatusCode::FAILED_PRECONDITION, "Backward without a Forward"}},
      {huge, {grpc::StatusCode::INVALID_ARGUMENT, "dimension beyond int64"}}};
  for (const auto& [request, want] : cases) {
    RawSplit raw(stub.get(), token);
    ASSERT_TRUE(raw.Open(round, Encoding::kDenseF32));
    ASSERT_TRUE(raw.Send(request));
    v1::SplitResponse response;
    EXPECT_FALSE(raw.Read(&response));
    grpc::Status status = raw.Finish();
    EXPECT_EQ(status.error_code(), want.first) << status.error_message();
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr(want.second));
  }
  std::vector<LedgerEntry> rows = Ledger(round);
  ASSERT_EQ(rows.size(), cases.size());
  for (const LedgerEntry& e : rows) {
    EXPECT_NE(e.status_code, 0);
    EXPECT_THAT(e.reason, ::testing::StartsWith("split session: "));
  }
}

// (b) A client that drops its session after a Forward (the stream is cancelled
// mid-step) and one that vanishes while its Forward waits in a body pass each get a
// CANCELLED ledger row; the session batched with the vanished one completes.
TEST_F(SplitGrpcTest, ClientsLeavingMidStepAreRecorded) {
  StartSplit(3, SplitOptions(/*pass_samples=*/4));
  std::unique_ptr<GrpcLink> leaver = Joined("leaver");
  std::unique_ptr<GrpcLink> good = Joined("good");
  std::unique_ptr<v1::FederatedLearning::Stub> stub = RawStub();
  const std::string vanisher = JoinRaw(stub.get(), "vanisher");
  const uint64_t round = TrainTask(*leaver).round;
  SplitReference r4 = WholeModelStep(vit_, 4, 4);
  SplitReference r2 = WholeModelStep(vit_, 2, 2);

  {
    Result<std::unique_ptr<SplitSession>> session =
        leaver->OpenSplitSession({round, Encoding::kDenseF32});
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    ExpectNear((*session)->Forward(FromTensor(r4.a)), r4.z, 1e-5, "body output");
  }  // dropped without Backward or Finish: the link cancels the stream
  WaitUntil([&] { return split_->Stats().sessions_failed == 1; });
  std::vector<LedgerEntry> rows = Ledger(round);
  ExpectSplitRows(rows, 1, StatusCode::kCancelled);
  EXPECT_THAT(rows[0].reason, ::testing::HasSubstr("a Forward without its Backward"));
  EXPECT_EQ(rows[0].client_id, leaver->client_id());

  RawSplit raw(stub.get(), vanisher);
  ASSERT_TRUE(raw.Open(round, Encoding::kDenseF32));
  ASSERT_TRUE(raw.SendForward(Encoded(r2.a)));
  WaitUntil([&] { return split_->Stats().steps_running == 1; });  // waiting for a pass
  raw.Cancel();
  EXPECT_EQ(raw.Finish().error_code(), grpc::StatusCode::CANCELLED);
  Result<std::unique_ptr<SplitSession>> session =
      good->OpenSplitSession({round, Encoding::kDenseF32});
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ExpectNear((*session)->Forward(FromTensor(r2.a)), r2.z, 1e-5, "batched beside the vanished");
  EXPECT_TRUE((*session)->Finish().ok());
  WaitUntil([&] { return split_->Stats().sessions_failed == 2; });
  EXPECT_EQ(split_->Stats().body.max_requests_in_a_pass, 2);
  ExpectSplitRows(Ledger(round), 2, StatusCode::kCancelled);
}

// (b) Refused opens: a client not selected, a round that is not open, an encoding that
// is not dense, a second session of the same client. None ends a session: no rows.
TEST_F(SplitGrpcTest, OpenRefusesClientsOutsideTheRoundAndSecondSessions) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> selected = Joined("selected");
  const uint64_t round = TrainTask(*selected).round;
  std::unique_ptr<GrpcLink> late = Joined("late");  // joined after the round opened

  auto code = [](const Result<std::unique_ptr<SplitSession>>& r) {
    return r.ok() ? StatusCode::kOk : r.status().code();
  };
  EXPECT_EQ(code(late->OpenSplitSession({round, Encoding::kDenseF32})),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(selected->OpenSplitSession({round + 1, Encoding::kDenseF32})),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(selected->OpenSplitSession({round, Encoding::kFerret})),
            StatusCode::kInvalidArgument);
  // A client cut for another body (here: one block fewer) is refused, naming both.
  SplitSessionOptions other_cut{round, Encoding::kDenseF32};
  other_cut.body = VitBodyName(SmallSplitVit(), 1, 2);
  Result<std::unique_ptr<SplitSession>> wrong_body = selected->OpenSplitSession(other_cut);
  EXPECT_EQ(code(wrong_body), StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong_body.status().message(), ::testing::HasSubstr("blocks [1, 3)"));
  other_cut.body = std::string(300, 'v');
  EXPECT_EQ(code(selected->OpenSplitSession(other_cut)), StatusCode::kInvalidArgument);
  SplitSessionOptions this_cut{round, Encoding::kDenseF32};
  this_cut.body = VitBodyName(SmallSplitVit(), 1, 3);
  Result<std::unique_ptr<SplitSession>> first = selected->OpenSplitSession(this_cut);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  Result<std::unique_ptr<SplitSession>> second =
      selected->OpenSplitSession({round, Encoding::kDenseF32});
  EXPECT_EQ(code(second), StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), ::testing::HasSubstr("already holds a split session"));
  EXPECT_TRUE((*first)->Finish().ok());
  Result<std::unique_ptr<SplitSession>> again =
      selected->OpenSplitSession({round, Encoding::kDenseF32});
  EXPECT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)->Finish().ok());
  EXPECT_TRUE(Ledger(round).empty());
}

// (b) A session idle for idle_timeout (on the injected clock) is ended by the sweep:
// its activations are freed at once, its client's next step is ABORTED, the one after
// FAILED_PRECONDITION, and it has one ledger row.
TEST_F(SplitGrpcTest, IdleSessionIsAbortedAndFreed) {
  FakeClockEnv clock;
  SplitServiceOptions options = SplitOptions(/*pass_samples=*/0);
  options.idle_timeout = std::chrono::seconds(10);
  StartSplit(1, options, &clock);
  std::unique_ptr<GrpcLink> link = Joined("idle");
  const uint64_t round = TrainTask(*link).round;
  SplitReference ref = WholeModelStep(vit_, 2, 9);
  Result<std::unique_ptr<SplitSession>> session =
      link->OpenSplitSession({round, Encoding::kDenseF32});
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ASSERT_TRUE((*session)->Forward(FromTensor(ref.a)).ok());
  EXPECT_EQ(split_->Stats().body.saved_sessions, 1);

  clock.Advance(milliseconds(9999));
  EXPECT_EQ(split_->EndIdleSessions(), 0);
  clock.Advance(milliseconds(1));
  EXPECT_EQ(split_->EndIdleSessions(), 1);
  SplitServiceStats stats = split_->Stats();
  EXPECT_EQ(stats.body.saved_sessions, 0);
  EXPECT_EQ(stats.open_sessions, 0);
  EXPECT_EQ(stats.sessions_ended_idle, 1);

  Result<TokenTensor> late = (*session)->Backward(FromTensor(ref.grad_z));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kAborted) << late.status().ToString();
  EXPECT_EQ((*session)->Forward(FromTensor(ref.a)).status().code(),
            StatusCode::kFailedPrecondition);
  ExpectSplitRows(Ledger(round), 1, StatusCode::kAborted);
}

// (c) InProcessLink's sessions answer bit for bit what GrpcLink's do, and count the same
// traffic, for f32 and f16, with all tokens and with reduced token ranges.
TEST_F(SplitGrpcTest, InProcessLinkMatchesGrpcLinkBitwise) {
  StartSplit(2, SplitOptions(/*pass_samples=*/0));
  std::unique_ptr<GrpcLink> remote = Joined("remote");
  InProcessLink local(coordinator_.get(), split_.get());
  ASSERT_TRUE(local.Join(kEnrollment, "local").ok());
  const uint64_t round = TrainTask(*remote).round;
  EXPECT_EQ(TrainTask(local).round, round);
  SplitReference ref = WholeModelStep(vit_, 3, 5);
  for (bool reduced : {false, true}) {
    for (Encoding encoding : {Encoding::kDenseF32, Encoding::kDenseF16}) {
      SCOPED_TRACE(std::string(EncodingName(encoding)) + (reduced ? ", reduced" : ", all"));
      const SplitSessionOptions options =
          reduced ? Reduced(round, encoding) : SplitSessionOptions{round, encoding};
      const torch::Tensor grad_z = reduced ? ref.grad_z.narrow(1, 0, 1) : ref.grad_z;
      std::vector<std::vector<float>> answers[2];
      SplitTraffic traffic[2];
      ServerLink* links[2] = {remote.get(), &local};
      for (int k = 0; k < 2; ++k) {
        Result<std::unique_ptr<SplitSession>> session = links[k]->OpenSplitSession(options);
        ASSERT_TRUE(session.ok()) << session.status().ToString();
        Result<TokenTensor> z = (*session)->Forward(FromTensor(ref.a));
        ASSERT_TRUE(z.ok()) << z.status().ToString();
        EXPECT_EQ(z->tokens, reduced ? 1 : kTokens);
        Result<TokenTensor> g = (*session)->Backward(FromTensor(grad_z));
        ASSERT_TRUE(g.ok()) << g.status().ToString();
        EXPECT_EQ(g->tokens, reduced ? 2 : kTokens);
        answers[k] = {z->values, g->values};
        EXPECT_TRUE((*session)->Finish().ok());
        traffic[k] = (*session)->traffic();
      }
      EXPECT_EQ(answers[0], answers[1]);
      EXPECT_EQ(traffic[0].bytes_up, traffic[1].bytes_up);
      EXPECT_EQ(traffic[0].bytes_down, traffic[1].bytes_down);
      EXPECT_EQ(traffic[0].steps, traffic[1].steps);
    }
  }
}

// (b) Without a body, SplitStep answers UNIMPLEMENTED (and so does an InProcessLink
// without a SplitService).
TEST_F(SplitGrpcTest, NoBodyIsUnimplemented) {
  Start(Options());
  std::unique_ptr<GrpcLink> link = Joined("no-body");
  Result<std::unique_ptr<SplitSession>> session = link->OpenSplitSession({1, Encoding::kDenseF32});
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), StatusCode::kUnimplemented) << session.status().ToString();
  InProcessLink local(coordinator_.get());
  ASSERT_TRUE(local.Join(kEnrollment, "local").ok());
  EXPECT_EQ(local.OpenSplitSession({1, Encoding::kDenseF32}).status().code(),
            StatusCode::kUnimplemented);
}

// fl-server's split keys: no body by default, bad values refused naming their key, and
// a configured body served by RunningServer (what fl-server runs) to a GrpcLink client.
TEST_F(SplitGrpcTest, FlServerHostsTheConfiguredBody) {
  nlohmann::json defaults = ServerConfigDefaults();
  defaults.update(SplitConfigDefaults());
  auto factory = [&](std::vector<std::string> overrides) {
    Result<Config> config = Config::Build(defaults, "", overrides);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    return SplitFactoryFromConfig(*config);
  };
  Result<RunningServer::SplitFactory> none = factory({});
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(*none);
  const std::string model = "split.model=vit:width=32,depth=3,heads=2,prompts=2";
  for (const auto& [bad, key] : std::vector<std::pair<std::string, std::string>>{
           {"split.model=vit:widht=3", "split.model"},
           {"split.cut=2,1", "split.cut"},
           {"split.cut=1", "split.cut"},
           {"split.batching=maybe", "split.batching"},
           {"split.max_batch=0", "split.max_batch"},
           {"split.max_sessions=0", "split.max_sessions"},
           {"split.idle_timeout_s=0", "split.idle_timeout_s"},
           {"split.threads=-1", "split.threads"}}) {
    Result<RunningServer::SplitFactory> refused = factory({model, bad});
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(refused.status().message(), ::testing::HasSubstr(key)) << bad;
  }

  Result<Config> config = Config::Build(
      defaults, "",
      {model, "split.cut=1,3", "server.listen=127.0.0.1:0", "server.tls.cert=" + certs_.server_cert,
       "server.tls.key=" + certs_.server_key, "run.state_dir=" + (dir_ / "state").string(),
       "model.name=random:100", std::string("coordinator.enrollment_token=") + kEnrollment});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Result<RunningServer::SplitFactory> make_split = SplitFactoryFromConfig(*config);
  ASSERT_TRUE(make_split.ok()) << make_split.status().ToString();
  Result<std::unique_ptr<RunningServer>> server =
      RunningServer::Start(*config, std::nullopt, {}, *make_split);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  GrpcLinkOptions o = LinkOptions();
  o.target = "localhost:" + std::to_string((*server)->port());
  Result<std::unique_ptr<GrpcLink>> link = GrpcLink::Create(o);
  ASSERT_TRUE(link.ok());
  ASSERT_TRUE((*link)->Join(kEnrollment, "cli").ok());
  const uint64_t round = TrainTask(**link).round;
  Result<std::unique_ptr<SplitSession>> session =
      (*link)->OpenSplitSession({round, Encoding::kDenseBF16});
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ((*session)->tokens(), kTokens);
  TokenTensor a{2, kTokens, kWidth, std::vector<float>(2 * kTokens * kWidth, 0.25f)};
  Result<TokenTensor> z = (*session)->Forward(a);
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  EXPECT_EQ(z->batch, 2);
  EXPECT_TRUE((*session)->Finish().ok());
  (*server)->Shutdown(milliseconds(2000));
}

// An app's own Trainer, reaching the server's body through the public fl::Client: one
// split step per task on the client's connection, the answers kept for the test.
class SplitStepTrainer final : public Trainer {
 public:
  SplitStepTrainer(Client* client, ParamSet params, const SplitReference* ref)
      : client_(client), params_(std::move(params)), ref_(ref) {}
  const Layout& layout() const override { return params_.layout(); }
  Status GetParameters(ParamSet* out) override {
    *out = params_;
    return Status::Ok();
  }
  Status SetParameters(const ParamSet& params) override {
    params_ = params;
    return Status::Ok();
  }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken&) override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<SplitSession> session,
                        client_->OpenSplitSession({config.round, Encoding::kDenseF32}));
    output = session->Forward(FromTensor(ref_->a));
    if (output.ok()) grad = session->Backward(FromTensor(ref_->grad_z));
    FL_RETURN_IF_ERROR(session->Finish());
    TrainStats stats;
    stats.num_examples = stats.dataset_size = 1;
    return stats;
  }
  Result<EvalStats> Evaluate() override { return EvalStats{}; }

  Result<TokenTensor> output = Status::Unknown("not trained");
  Result<TokenTensor> grad = Status::Unknown("not trained");

 private:
  Client* client_;
  ParamSet params_;
  const SplitReference* ref_;
};

TEST_F(SplitGrpcTest, PublicClientOpensSplitSessionsForItsTrainer) {
  StartSplit(1, SplitOptions(/*pass_samples=*/0));
  const SplitReference ref = WholeModelStep(vit_, 2, 7);
  ClientOptions options;
  options.server = Target();
  options.tls_ca_file = certs_.ca_cert;
  options.enrollment_token = kEnrollment;
  options.name = "app";
  Result<std::unique_ptr<Client>> client = Client::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Result<ParamSet> initial = SyntheticModel(kParams, Options().seed);
  ASSERT_TRUE(initial.ok());
  SplitStepTrainer trainer(client->get(), *initial, &ref);
  ClientRunOptions run;
  run.max_tasks = 1;
  Status ran = (*client)->Run(trainer, run);
  ASSERT_TRUE(ran.ok()) << ran.ToString();
  ExpectNear(trainer.output, ref.z, 1e-5, "body output");
  ExpectNear(trainer.grad, ref.grad_a, 1e-5, "input gradient");
  EXPECT_EQ(split_->Stats().sessions_opened, 1);
}

}  // namespace
}  // namespace fl::internal
