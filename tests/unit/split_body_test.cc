// The split body server computes what the whole model does, for one session and for
// many sessions batched into one pass, and turns bad requests away without failing the
// good ones beside them. Passes are forced by sample counts and a wait no test reaches,
// so nothing here depends on timing.
#include "torch/split_body.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/testing/vit_split_reference.h"
#include "torch/models.h"
#include "torch/vit_model.h"

namespace fl::internal {
namespace {

constexpr int64_t kNever = 600'000'000;  // a wait (us) no test reaches

struct Fixture {
  TinyVit vit{nullptr};
  ParamSet backbone;
  std::unique_ptr<SplitBodyServer> server;
};

// The server gets the test model's weights as a backbone (its own seed differs).
Fixture Make(BodyBatchingOptions batching) {
  Fixture f;
  f.vit = *CreateTinyVit(SmallSplitVit(), 5);
  EXPECT_TRUE(ParamBridge(*f.vit).Read(&f.backbone).ok());
  SplitBodyOptions o;
  o.vit = SmallSplitVit();
  o.begin = 1;
  o.end = 3;
  o.init_seed = 99;
  o.batching = batching;
  Result<std::unique_ptr<SplitBodyServer>> s = SplitBodyServer::Create(o, &f.backbone);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  f.server = std::move(s).value();
  return f;
}

void ExpectNear(const TokenTensor& got, const torch::Tensor& want, const char* what) {
  ASSERT_EQ(got.batch, want.size(0)) << what;
  EXPECT_TRUE(torch::allclose(ToTensor(got), want, 1e-5, 1e-5))
      << what << ": max diff " << (ToTensor(got) - want).abs().max().item<float>();
}

TEST(SplitBodyTest, OneSessionMatchesTheWholeModel) {
  Fixture f = Make({.enabled = true, .max_batch_samples = 4, .max_wait_us = kNever});
  EXPECT_EQ(f.server->tokens(), 1 + 2 + 16);
  EXPECT_EQ(f.server->width(), 32);
  SplitReference r = WholeModelStep(f.vit, 4, 1);
  Result<TokenTensor> z = f.server->Forward(7, FromTensor(r.a));
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  ExpectNear(*z, r.z, "body output");
  Result<TokenTensor> g = f.server->Backward(7, FromTensor(r.grad_z));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ExpectNear(*g, r.grad_a, "input gradient");
}

// Eight sessions of batch 1..8 (36 samples); a pass runs once all 36 are queued, so
// each kind is one pass of eight requests.
TEST(SplitBodyTest, ConcurrentSessionsBatchedMatchTheWholeModel) {
  constexpr int kSessions = 8;
  Fixture f = Make({.enabled = true, .max_batch_samples = 36, .max_wait_us = kNever});
  std::vector<SplitReference> refs;
  for (int k = 0; k < kSessions; ++k) refs.push_back(WholeModelStep(f.vit, k + 1, 100 + k));
  std::vector<Result<TokenTensor>> outputs(kSessions, Status::Unknown("not run"));
  std::vector<Result<TokenTensor>> grads(kSessions, Status::Unknown("not run"));
  std::vector<std::thread> threads;
  for (int k = 0; k < kSessions; ++k) {
    threads.emplace_back([&, k] {
      outputs[k] = f.server->Forward(k, FromTensor(refs[k].a));
      if (outputs[k].ok()) grads[k] = f.server->Backward(k, FromTensor(refs[k].grad_z));
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < kSessions; ++k) {
    ASSERT_TRUE(outputs[k].ok()) << k << ": " << outputs[k].status().ToString();
    ASSERT_TRUE(grads[k].ok()) << k << ": " << grads[k].status().ToString();
    ExpectNear(*outputs[k], refs[k].z, "body output");
    ExpectNear(*grads[k], refs[k].grad_a, "input gradient");
  }
  BodyPassCounts c = f.server->counts();
  EXPECT_EQ(c.forward_passes, 1);
  EXPECT_EQ(c.backward_passes, 1);
  EXPECT_EQ(c.max_requests_in_a_pass, kSessions);
  EXPECT_GE(c.passes_with_several_requests, 1);
  EXPECT_EQ(c.samples, 2 * 36);
}

TEST(SplitBodyTest, WithoutBatchingEveryRequestRunsAlone) {
  Fixture f = Make({.enabled = false});
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      SplitReference r = [&] {
        static std::mutex mu;  // the reference model is not shared across threads
        std::lock_guard<std::mutex> lock(mu);
        return WholeModelStep(f.vit, 2, 200 + k);
      }();
      Result<TokenTensor> z = f.server->Forward(k, FromTensor(r.a));
      ASSERT_TRUE(z.ok()) << z.status().ToString();
      ExpectNear(*z, r.z, "body output");
    });
  }
  for (auto& t : threads) t.join();
  BodyPassCounts c = f.server->counts();
  EXPECT_EQ(c.forward_passes, 4);
  EXPECT_EQ(c.max_requests_in_a_pass, 1);
}

void ExpectError(const Result<TokenTensor>& r, StatusCode code, const std::string& part) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().ToString();
}

// A pass runs only once 6 samples are queued: good session 1's 3 and, after the bad
// requests, good session 6's 3. Bad requests of 3 samples each, sent while session 1
// waits, would have filled its pass had they been checked after batching.
TEST(SplitBodyTest, BadRequestsFailAloneWhileGoodSessionsSucceed) {
  Fixture f = Make({.enabled = true, .max_batch_samples = 6, .max_wait_us = kNever});
  SplitReference r = WholeModelStep(f.vit, 3, 300);
  SplitReference r6 = WholeModelStep(f.vit, 3, 306);
  auto step = [&](uint64_t session, const SplitReference& ref) {
    Result<TokenTensor> z = f.server->Forward(session, FromTensor(ref.a));
    ASSERT_TRUE(z.ok()) << z.status().ToString();
    ExpectNear(*z, ref.z, "body output");
    Result<TokenTensor> g = f.server->Backward(session, FromTensor(ref.grad_z));
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    ExpectNear(*g, ref.grad_a, "input gradient");
  };
  std::thread good([&] { step(1, r); });

  TokenTensor short_tokens = FromTensor(r.a.narrow(1, 0, 18));
  ExpectError(f.server->Forward(2, short_tokens), StatusCode::kInvalidArgument,
              "session 2 activations: shape [3, 18, 32], the body takes [b >= 1, 19, 32]");
  TokenTensor wrong_count = FromTensor(r.a);
  wrong_count.values.pop_back();
  ExpectError(f.server->Forward(3, wrong_count), StatusCode::kInvalidArgument,
              "session 3 activations: 1823 values for shape [3, 19, 32]");
  TokenTensor nan = FromTensor(r.a);
  nan.values[40] = std::nanf("");
  ExpectError(f.server->Forward(4, nan), StatusCode::kInvalidArgument,
              "session 4 activations: value 40 is not finite");
  ExpectError(f.server->Backward(5, FromTensor(r.grad_z)), StatusCode::kFailedPrecondition,
              "session 5: Backward without a prior Forward");
  std::thread second([&] { step(6, r6); });
  good.join();
  second.join();
  BodyPassCounts c = f.server->counts();
  EXPECT_EQ(c.requests, 4);  // only the good sessions' forwards and backwards ran
  EXPECT_EQ(c.forward_passes, 1);
  EXPECT_EQ(c.backward_passes, 1);

  ExpectError(f.server->Backward(1, FromTensor(r.grad_z.narrow(0, 0, 2))),
              StatusCode::kInvalidArgument,
              "session 1 output gradient: batch 2, its last Forward had 3");
  TokenTensor inf_grad = FromTensor(r.grad_z);
  inf_grad.values[0] = INFINITY;
  ExpectError(f.server->Backward(1, inf_grad), StatusCode::kInvalidArgument,
              "session 1 output gradient: value 0 is not finite");
  f.server->Close(1);
  ExpectError(f.server->Forward(1, FromTensor(r.a)), StatusCode::kFailedPrecondition,
              "session 1 is closed");
  ExpectError(f.server->Backward(1, FromTensor(r.grad_z)), StatusCode::kFailedPrecondition,
              "session 1 is closed");
  EXPECT_EQ(f.server->counts().requests, 4);
}

TEST(SplitBodyTest, CreateRefusesBadCutsAndBackbones) {
  SplitBodyOptions o;
  o.vit = SmallSplitVit();
  o.begin = 2;
  o.end = 2;
  Result<std::unique_ptr<SplitBodyServer>> s = SplitBodyServer::Create(o, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  o.begin = 1;
  o.end = 4;
  EXPECT_FALSE(SplitBodyServer::Create(o, nullptr).ok());
  o.end = 3;
  ParamSet wrong;
  TinyVit other = *CreateTinyVit(*ParseVitModelName("vit:width=16,depth=3,heads=2"), 1);
  ASSERT_TRUE(ParamBridge(*other).Read(&wrong).ok());
  s = SplitBodyServer::Create(o, &wrong);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("backbone"), std::string::npos) << s.status().ToString();
}

}  // namespace
}  // namespace fl::internal
