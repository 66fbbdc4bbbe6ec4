// Staleness weights, the CO2 gap penalty, per-tensor scaling of dense updates, and the
// FedAvg family's outer momentum clipping.

#include "server/staleness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "algorithms/fedavg/fedavg_strategy.h"
#include "codec/dense_codec.h"
#include "server/update_policy.h"

namespace fl::internal {
namespace {

TEST(StalenessTest, WeightFunctions) {
  AsyncOptions o;
  o.staleness_weight = StalenessWeight::kConstant;
  EXPECT_EQ(StalenessFactor(o, 0), 1.0);
  EXPECT_EQ(StalenessFactor(o, 50), 1.0);

  o.staleness_weight = StalenessWeight::kPolynomial;
  o.staleness_exponent = 0.5;
  EXPECT_EQ(StalenessFactor(o, 0), 1.0);
  EXPECT_DOUBLE_EQ(StalenessFactor(o, 3), 0.5);  // (1 + 3)^-1/2
  o.staleness_exponent = 1;
  EXPECT_DOUBLE_EQ(StalenessFactor(o, 4), 0.2);
  o.staleness_exponent = 0;
  EXPECT_EQ(StalenessFactor(o, 9), 1.0);

  o.staleness_weight = StalenessWeight::kHinge;
  o.hinge_a = 2;
  o.hinge_b = 3;
  EXPECT_EQ(StalenessFactor(o, 0), 1.0);
  EXPECT_EQ(StalenessFactor(o, 3), 1.0);
  EXPECT_DOUBLE_EQ(StalenessFactor(o, 4), 1.0 / 3);  // 1 / (2 (4 - 3) + 1)
  EXPECT_DOUBLE_EQ(StalenessFactor(o, 8), 1.0 / 11);
}

TEST(StalenessTest, NamesRoundTripAndBadOptionsNameTheirKey) {
  for (StalenessWeight w :
       {StalenessWeight::kConstant, StalenessWeight::kPolynomial, StalenessWeight::kHinge}) {
    EXPECT_EQ(ParseStalenessWeight(StalenessWeightName(w)).value(), w);
  }
  EXPECT_EQ(ParseStalenessWeight("linear").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateAsyncOptions(AsyncOptions()).ok());
  auto message = [](AsyncOptions o) { return ValidateAsyncOptions(o).message(); };
  AsyncOptions o;
  o.concurrency = 0;
  EXPECT_NE(message(o).find("async.concurrency"), std::string::npos);
  o = AsyncOptions();
  o.buffer_size = 0;
  EXPECT_NE(message(o).find("async.buffer_size"), std::string::npos);
  o = AsyncOptions();
  o.gap_penalty = std::nan("");
  EXPECT_NE(message(o).find("async.gap_penalty"), std::string::npos);
  o = AsyncOptions();
  o.staleness_exponent = -1;
  EXPECT_NE(message(o).find("async.staleness_exponent"), std::string::npos);
}

TEST(StalenessTest, GapPenaltyGrowsWithHowFarTheModelMoved) {
  StepNormHistory history(4);
  // Two tensors; the second never moves.
  history.Add(1, {1.0, 0.0});
  history.Add(2, {3.0, 0.0});
  history.Add(3, {2.0, 0.0});
  // Mean step norm of tensor 0: 2. Based on version 1 at version 3: gap = 3 + 2 = 5.
  std::vector<double> p = history.GapPenalty(/*rho=*/1, /*base=*/1, /*current=*/3, 2);
  EXPECT_DOUBLE_EQ(p[0], 2.5);
  EXPECT_EQ(p[1], 1.0);
  EXPECT_DOUBLE_EQ(history.GapPenalty(2, 1, 3, 2)[0], 1.25);
  EXPECT_EQ(history.GapPenalty(4, 1, 3, 2)[0], 1.0) << "never below 1";
  EXPECT_EQ(history.GapPenalty(0, 0, 3, 2)[0], 1.0) << "rho 0: off";
  EXPECT_EQ(history.GapPenalty(1, 3, 3, 2)[0], 1.0) << "a fresh update is not penalised";
  // Only the newest `capacity` steps are kept: the mean and gap forget version 1.
  history.Add(4, {2.0, 0.0});
  history.Add(5, {2.0, 0.0});
  EXPECT_DOUBLE_EQ(history.GapPenalty(1, 0, 5, 2)[0], 9.0 / 2.25);
}

TEST(StalenessTest, HistogramJson) {
  EXPECT_EQ(StalenessHistogramJson({}), "{}");
  EXPECT_EQ(StalenessHistogramJson({{0, 3}, {2, 1}}), R"({"0":3,"2":1})");
}

TEST(StalenessTest, ScaleDenseUpdateTensorsScalesEachTensorAlone) {
  Layout layout;
  layout.Add("a", {3});
  layout.Add("b", {2});
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseBF16}) {
    Payload p;
    p.meta.encoding = e;
    ASSERT_TRUE(EncodeDense(std::vector<float>{1, 2, 4, 8, 16}, e, &p.bytes).ok());
    ASSERT_TRUE(ScaleDenseUpdateTensors(layout, {0.5, 0.25}, &p).ok());
    std::vector<float> out(5);
    ASSERT_TRUE(DecodeDense(p.bytes, e, out).ok());
    EXPECT_EQ(out, (std::vector<float>{0.5, 1, 2, 2, 4}));
    EXPECT_EQ(ScaleDenseUpdateTensors(layout, {0.5}, &p).code(), StatusCode::kInvalidArgument);
  }
  Payload ferret;
  ferret.meta.encoding = Encoding::kFerret;
  ferret.bytes = std::string(20, '\0');
  EXPECT_EQ(ScaleDenseUpdateTensors(layout, {1, 1}, &ferret).code(), StatusCode::kInvalidArgument);
}

// Tensor norms of the step the strategy takes from a zero model.
std::vector<double> StepNorms(FedAvgStrategy& s, const Layout& layout, float delta) {
  AggregateReport report;
  report.mean_delta = ParamSet(layout);
  for (size_t i = 0; i < report.mean_delta.size(); ++i) report.mean_delta.data()[i] = delta;
  report.count = 1;
  report.total_weight = 1;
  ParamSet model(layout);
  EXPECT_TRUE(s.ApplyRound(std::move(report), &model).ok());
  std::vector<double> norms;
  for (const TensorSpec& t : layout.tensors()) {
    double sum = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) sum += double{model.data()[i]} * model.data()[i];
    norms.push_back(std::sqrt(sum));
  }
  return norms;
}

TEST(MomentumClipTest, FixedClipBoundsEachTensorsStep) {
  Layout layout;
  layout.Add("w", {100});
  layout.Add("b", {1});
  FedAvgOptions o;
  o.server_momentum = 0.5;
  o.momentum_clip = 0.3;
  FedAvgStrategy clipped(o);
  for (int step = 0; step < 5; ++step) {
    std::vector<double> norms = StepNorms(clipped, layout, 1.0f);
    // ||m|| is 10 and more for "w" and 1 and more for "b": both are clipped to 0.3.
    EXPECT_NEAR(norms[0], 0.3, 1e-6);
    EXPECT_NEAR(norms[1], 0.3, 1e-6);
    EXPECT_EQ(clipped.LastRoundStats().at("momentum.clipped_tensors"), 2);
  }
  o.momentum_clip = 0;
  FedAvgStrategy plain(o);
  EXPECT_NEAR(StepNorms(plain, layout, 1.0f)[0], 10.0, 1e-5);
  EXPECT_TRUE(plain.LastRoundStats().empty());
  EXPECT_TRUE(plain.SaveState().size() > 0);
}

TEST(MomentumClipTest, AdaptiveClipFollowsTheRunningMeanAndSurvivesARestart) {
  Layout layout;
  layout.Add("w", {4});
  FedAvgOptions o;
  o.server_optimizer = ServerOptimizer::kAdam;
  o.server_lr = 0.1;
  o.momentum_clip_adaptive = 1.5;
  FedAvgStrategy a(o);
  (void)StepNorms(a, layout, 0.1f);  // first step: no mean yet, not clipped
  EXPECT_EQ(a.LastRoundStats().at("momentum.clipped_tensors"), 0);
  FedAvgStrategy b(o);
  ASSERT_TRUE(b.LoadState(a.SaveState()).ok());
  // A sudden large delta: m jumps far beyond 1.5x its mean and is clipped, in both.
  const std::vector<double> from_a = StepNorms(a, layout, 100.0f);
  EXPECT_EQ(a.LastRoundStats().at("momentum.clipped_tensors"), 1);
  EXPECT_EQ(StepNorms(b, layout, 100.0f), from_a);
  FedAvgStrategy c(o);
  std::string truncated = a.SaveState();
  truncated.pop_back();
  EXPECT_EQ(c.LoadState(truncated).code(), StatusCode::kDataLoss);
  o.momentum_clip = -1;
  EXPECT_NE(ValidateFedAvgOptions(o).message().find("algorithm.momentum_clip"), std::string::npos);
}

}  // namespace
}  // namespace fl::internal
