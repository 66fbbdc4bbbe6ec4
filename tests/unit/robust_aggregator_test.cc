#include "algorithms/robust/robust_aggregator.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "algorithms/fedavg/fedavg_strategy.h"
#include "codec/dense_codec.h"
#include "crypto/sha256.h"
#include "fl/algorithm.h"

namespace fl::internal {
namespace {

constexpr uint64_t kRound = 3;

std::shared_ptr<const Layout> TestLayout(size_t d = 4) {
  auto l = std::make_shared<Layout>();
  l->Add("w", {static_cast<int64_t>(d)});
  return l;
}

Payload MakePayload(const std::vector<float>& delta, double weight = 1.0, double loss = 1.0) {
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.round = kRound;
  p.meta.weight = weight;
  p.meta.layout_hash = TestLayout(delta.size())->hash();
  p.meta.encoding = Encoding::kDenseF32;
  p.meta.sha256 = Sha256(p.bytes);
  p.meta.train_loss = loss;
  return p;
}

AggregationOptions Rule(AggregationRule rule) {
  AggregationOptions o;
  o.rule = rule;
  return o;
}

std::vector<float> Aggregate(const AggregationOptions& options,
                             const std::vector<std::vector<float>>& updates,
                             const std::vector<double>& weights = {}) {
  Result<std::unique_ptr<RoundAggregator>> agg =
      NewDenseRoundAggregator(options, TestLayout(updates[0].size()), kRound);
  EXPECT_TRUE(agg.ok()) << agg.status().ToString();
  for (size_t i = 0; i < updates.size(); ++i) {
    Status s = (*agg)->Accumulate(MakePayload(updates[i], weights.empty() ? 1.0 : weights[i]));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  Result<AggregateReport> r = std::move(**agg).Report();
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {};
  EXPECT_EQ(r->count, updates.size());
  return std::vector<float>(r->mean_delta.values().begin(), r->mean_delta.values().end());
}

TEST(RobustAggregatorTest, MedianOfKnownInputs) {
  // Odd n: the middle value per coordinate; even n: the mean of the two middle values.
  EXPECT_EQ(Aggregate(Rule(AggregationRule::kMedian),
                      {{1, 5, -2, 0}, {3, 4, -1, 7}, {2, 6, -3, 1}}),
            (std::vector<float>{2, 5, -2, 1}));
  EXPECT_EQ(Aggregate(Rule(AggregationRule::kMedian),
                      {{1, 5, -2, 0}, {3, 4, -1, 7}, {2, 6, -3, 1}, {10, 0, 0, 2}}),
            (std::vector<float>{2.5f, 4.5f, -1.5f, 1.5f}));
}

TEST(RobustAggregatorTest, TrimmedMeanOfKnownInputs) {
  AggregationOptions o = Rule(AggregationRule::kTrimmedMean);
  o.trim_beta = 0.2;  // 5 updates: drop 1 at each end
  EXPECT_EQ(Aggregate(o, {{1, 10, 0, 0}, {2, 20, 0, 0}, {3, 30, 0, 0}, {4, 40, 0, 0},
                          {100, -100, 0, 0}}),
            (std::vector<float>{3, 20, 0, 0}));
  o.trim_beta = 0.0;  // the unweighted mean
  EXPECT_EQ(Aggregate(o, {{1, 2, 3, 4}, {3, 4, 5, 6}}), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(TrimCount(0.1, 10), 1u);
  EXPECT_EQ(TrimCount(0.3, 10), 3u);
  EXPECT_EQ(TrimCount(0.29, 100), 29u);
  EXPECT_EQ(TrimCount(0.49, 3), 1u);
}

TEST(RobustAggregatorTest, OneOutlierCannotMoveMedianOrTrimmedMean) {
  std::vector<std::vector<float>> honest = {{1, 1, 1, 1}, {1.2f, 0.8f, 1, 1.1f},
                                            {0.9f, 1.1f, 1, 0.9f}, {1.1f, 1, 1, 1},
                                            {1, 0.9f, 1, 1}};
  AggregationOptions trimmed = Rule(AggregationRule::kTrimmedMean);
  trimmed.trim_beta = 0.2;
  for (float outlier : {1e6f, -1e6f, 3e38f}) {
    std::vector<std::vector<float>> attacked = honest;
    attacked[4] = {outlier, outlier, outlier, outlier};
    for (const AggregationOptions& o : {Rule(AggregationRule::kMedian), trimmed}) {
      std::vector<float> out = Aggregate(o, attacked, {1, 1, 1, 1, 1e9});
      for (float v : out) {
        EXPECT_GE(v, 0.8f) << outlier;
        EXPECT_LE(v, 1.2f) << outlier;
      }
    }
  }
  // The plain weighted mean follows the outlier's claimed weight.
  std::vector<std::vector<float>> attacked = honest;
  attacked[4] = {-100, -100, -100, -100};
  EXPECT_LT(Aggregate(Rule(AggregationRule::kMean), attacked, {1, 1, 1, 1, 1e9})[0], -99.0f);
}

TEST(RobustAggregatorTest, MultiKrumPicksTheHonestCluster) {
  // 7 honest updates near (1, 1, 1, 1), 2 attackers far away but close to each other.
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  std::vector<std::vector<float>> updates;
  for (int i = 0; i < 7; ++i) {
    updates.push_back({1 + noise(rng), 1 + noise(rng), 1 + noise(rng), 1 + noise(rng)});
  }
  updates.push_back({-5, -5, -5, -5});
  updates.push_back({-5.1f, -5, -5, -5});
  std::vector<const float*> ptrs;
  for (const auto& u : updates) ptrs.push_back(u.data());
  std::vector<size_t> chosen = MultiKrumSelect(ptrs, 4, /*f=*/2);
  ASSERT_EQ(chosen.size(), 7u);
  for (size_t i : chosen) EXPECT_LT(i, 7u);
  // The aggregate is the mean of the honest cluster, far from the attackers.
  AggregationOptions o = Rule(AggregationRule::kMultiKrum);
  o.krum_f = 2;
  std::vector<float> out = Aggregate(o, updates);
  for (float v : out) EXPECT_NEAR(v, 1.0f, 0.1f);
  // Exact: the selected updates' unweighted mean.
  std::vector<float> expect(4, 0.0f);
  for (int j = 0; j < 4; ++j) {
    double s = 0;
    for (size_t i : chosen) s += updates[i][j];
    EXPECT_FLOAT_EQ(out[j], static_cast<float>(s / 7));
  }
}

TEST(RobustAggregatorTest, MultiKrumSmallRounds) {
  std::vector<float> a = {1, 2, 3, 4};
  std::vector<const float*> one = {a.data()};
  EXPECT_EQ(MultiKrumSelect(one, 4, 1), (std::vector<size_t>{0}));
  // n <= f: still one update is selected.
  std::vector<float> b = {1, 2, 3, 5};
  std::vector<const float*> two = {a.data(), b.data()};
  EXPECT_EQ(MultiKrumSelect(two, 4, 3).size(), 1u);
}

TEST(RobustAggregatorTest, RefusesBeyondMaxUpdatesAndBadInput) {
  AggregationOptions o = Rule(AggregationRule::kMedian);
  o.max_updates = 2;
  auto agg = NewDenseRoundAggregator(o, TestLayout(), kRound);
  ASSERT_TRUE(agg.ok());
  RoundAggregator& a = **agg;
  EXPECT_EQ(a.Accumulate(MakePayload({1, 2, 3, 4})).code(), StatusCode::kOk);
  Payload wrong_round = MakePayload({1, 2, 3, 4});
  wrong_round.meta.round = kRound + 1;
  EXPECT_EQ(a.Accumulate(wrong_round).code(), StatusCode::kFailedPrecondition);
  Payload nan = MakePayload({1, std::nanf(""), 3, 4});
  EXPECT_EQ(a.Accumulate(nan).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Accumulate(MakePayload({1, 2, 3, 4}, -1.0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Accumulate(MakePayload({1, 2, 3})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Accumulate(MakePayload({5, 6, 7, 8})).code(), StatusCode::kOk);
  Status full = a.Accumulate(MakePayload({0, 0, 0, 0}));
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("algorithm.robust_max_updates"), std::string::npos);
  EXPECT_EQ(a.count(), 2u);
  Result<AggregateReport> r = std::move(a).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->mean_delta.data()[0], 3.0f);
  EXPECT_FALSE(a.CanReport());
  EXPECT_EQ(a.Accumulate(MakePayload({1, 2, 3, 4})).code(), StatusCode::kFailedPrecondition);
}

// The leaf aggregators of one round share the cap: max_updates bounds what the round
// holds, whichever leaf an update lands in; held updates leave the count when they are
// reported or destroyed.
TEST(RobustAggregatorTest, LeavesOfARoundShareMaxUpdates) {
  AggregationOptions o = Rule(AggregationRule::kMedian);
  o.max_updates = 3;
  std::shared_ptr<const Layout> shared_layout = TestLayout();
  auto held = std::make_shared<RobustRoundAggregator::HeldCount>(0);
  auto a = std::make_unique<RobustRoundAggregator>(o, shared_layout, kRound, held);
  auto b = std::make_unique<RobustRoundAggregator>(o, shared_layout, kRound, held);
  EXPECT_TRUE(a->Accumulate(MakePayload({1, 2, 3, 4})).ok());
  EXPECT_TRUE(b->Accumulate(MakePayload({5, 6, 7, 8})).ok());
  EXPECT_TRUE(a->Accumulate(MakePayload({9, 9, 9, 9})).ok());
  EXPECT_EQ(b->Accumulate(MakePayload({0, 0, 0, 0})).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(a->Accumulate(MakePayload({0, 0, 0, 0})).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(held->load(), 3u);
  ASSERT_TRUE(a->MergeWith(std::move(*b)).ok());  // the round holds 3 either way
  EXPECT_EQ(a->count(), 3u);
  EXPECT_EQ(held->load(), 3u);
  Result<AggregateReport> r = std::move(*a).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->mean_delta.data()[0], 5.0f);
  EXPECT_EQ(held->load(), 0u);
  auto c = std::make_unique<RobustRoundAggregator>(o, shared_layout, kRound, held);
  EXPECT_TRUE(c->Accumulate(MakePayload({1, 2, 3, 4})).ok());
  c.reset();  // a refold drops the old leaves before it folds again
  EXPECT_EQ(held->load(), 0u);
}

TEST(RobustAggregatorTest, MergeAppendsUpdates) {
  auto a = NewDenseRoundAggregator(Rule(AggregationRule::kMedian), TestLayout(), kRound);
  auto b = NewDenseRoundAggregator(Rule(AggregationRule::kMedian), TestLayout(), kRound);
  auto mean = NewDenseRoundAggregator(Rule(AggregationRule::kMean), TestLayout(), kRound);
  ASSERT_TRUE(a.ok() && b.ok() && mean.ok());
  ASSERT_TRUE((*a)->Accumulate(MakePayload({1, 1, 1, 1})).ok());
  ASSERT_TRUE((*b)->Accumulate(MakePayload({2, 2, 2, 2})).ok());
  ASSERT_TRUE((*b)->Accumulate(MakePayload({9, 9, 9, 9})).ok());
  EXPECT_EQ((*a)->MergeWith(std::move(**mean)).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*a)->MergeWith(std::move(**b)).ok());
  EXPECT_EQ((*a)->count(), 3u);
  EXPECT_FALSE((*b)->CanReport());
  Result<AggregateReport> r = std::move(**a).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->mean_delta.data()[0], 2.0f);
}

TEST(RobustAggregatorTest, OptionsAreValidated) {
  AggregationOptions o = Rule(AggregationRule::kTrimmedMean);
  o.trim_beta = 0.5;
  Status s = ValidateAggregationOptions(o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("algorithm.trim_beta"), std::string::npos);
  o = Rule(AggregationRule::kMultiKrum);
  o.krum_f = -1;
  EXPECT_NE(ValidateAggregationOptions(o).message().find("algorithm.krum_f"), std::string::npos);
  o = Rule(AggregationRule::kMedian);
  o.max_updates = 0;
  EXPECT_FALSE(NewDenseRoundAggregator(o, TestLayout(), kRound).ok());
  EXPECT_EQ(ParseAggregationRule("krum").status().code(), StatusCode::kInvalidArgument);
  for (const char* name : {"mean", "median", "trimmed_mean", "multi_krum"}) {
    Result<AggregationRule> rule = ParseAggregationRule(name);
    ASSERT_TRUE(rule.ok());
    EXPECT_EQ(AggregationRuleName(*rule), name);
  }
}

TEST(RobustAggregatorTest, FedAvgStepsOnTheRobustAggregate) {
  FedAvgOptions options;
  options.aggregation = Rule(AggregationRule::kMedian);
  ASSERT_TRUE(ValidateFedAvgOptions(options).ok());
  FedAvgStrategy strategy(options);
  ParamSet global(*TestLayout());
  for (size_t i = 0; i < 4; ++i) global.data()[i] = 10;
  std::unique_ptr<RoundAggregator> agg = strategy.NewRoundAggregator(global, kRound);
  ASSERT_TRUE(agg->Accumulate(MakePayload({1, 1, 1, 1})).ok());
  ASSERT_TRUE(agg->Accumulate(MakePayload({2, 2, 2, 2})).ok());
  ASSERT_TRUE(agg->Accumulate(MakePayload({-1000, 1000, -1000, 1000}, 1e6)).ok());
  Result<AggregateReport> r = std::move(*agg).Report();
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(strategy.ApplyRound(std::move(*r), &global).ok());
  EXPECT_EQ(std::vector<float>(global.values().begin(), global.values().end()),
            (std::vector<float>{11, 12, 11, 12}));
}

}  // namespace
}  // namespace fl::internal
