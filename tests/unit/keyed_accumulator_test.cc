#include "agg/keyed_accumulator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace fl::internal {
namespace {

// Three tensors: a (2 values), b (1), c (3).
std::shared_ptr<const Layout> TestLayout() {
  auto l = std::make_shared<Layout>();
  l->Add("a", {2});
  l->Add("b", {1});
  l->Add("c", {3});
  return l;
}

NamedTensor T(size_t index, double fraction, std::vector<float> values) {
  return NamedTensor{index, fraction, std::move(values)};
}

NamedSubset Update(std::vector<NamedTensor> tensors) {
  NamedSubset s;
  s.tensors = std::move(tensors);
  return s;
}

std::vector<float> Values(const ParamSet& p) { return {p.values().begin(), p.values().end()}; }

TEST(KeyedAccumulatorTest, SelectedRuleWeighsEachTensorByClientWeightTimesFraction) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kSelected);
  // Client 1 (weight 2): a with fraction 0.5, b with 1. Client 2 (weight 4): a with 0.25.
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 0.5, {1, 2}), T(1, 1.0, {3})}), 2.0).ok());
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 0.25, {4, -2})}), 4.0).ok());
  EXPECT_EQ(acc.count(), 2u);
  EXPECT_EQ(acc.total_weight(), 6.0);
  EXPECT_EQ(acc.tensor_weights()[0], 2.0);  // 2 * 0.5 + 4 * 0.25
  EXPECT_EQ(acc.tensor_weights()[1], 2.0);
  EXPECT_EQ(acc.tensor_weights()[2], 0.0);
  Result<ParamSet> mean = acc.Mean();
  ASSERT_TRUE(mean.ok()) << mean.status().ToString();
  // a = (1 * {1, 2} + 1 * {4, -2}) / 2; b = 3; c: nobody sent it, delta 0.
  EXPECT_EQ(Values(*mean), (std::vector<float>{2.5f, 0.0f, 3.0f, 0, 0, 0}));
  EXPECT_EQ(mean->layout().hash(), TestLayout()->hash());
}

TEST(KeyedAccumulatorTest, FractionZeroCarriesNoWeight) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kSelected);
  ASSERT_TRUE(acc.Accumulate(Update({T(2, 0.0, {9, 9, 9}), T(1, 1.0, {1})}), 1.0).ok());
  Result<ParamSet> mean = acc.Mean();
  ASSERT_TRUE(mean.ok());
  EXPECT_EQ(Values(*mean), (std::vector<float>{0, 0, 1, 0, 0, 0}));
}

TEST(KeyedAccumulatorTest, UniformRuleCountsEveryClientForEveryTensor) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kUniform);
  // Weights and fractions do not matter; a tensor a client did not send counts as 0.
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 0.5, {1, 2}), T(1, 0.1, {3})}), 2.0).ok());
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 0.25, {4, -2})}), 40.0).ok());
  ASSERT_TRUE(acc.Accumulate(Update({T(1, 1.0, {-6})}), 1.0).ok());
  EXPECT_EQ(acc.tensor_weights()[0], 2.0);  // senders
  EXPECT_EQ(acc.tensor_weights()[1], 2.0);
  Result<ParamSet> mean = acc.Mean();
  ASSERT_TRUE(mean.ok());
  EXPECT_EQ(Values(*mean), (std::vector<float>{static_cast<float>(5.0 / 3), 0.0f, -1.0f, 0, 0, 0}));
}

TEST(KeyedAccumulatorTest, RefusalsLeaveTheStateUnchanged) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kSelected);
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 1.0, {1, 1})}), 1.0).ok());
  const std::vector<NamedSubset> bad = {
      Update({}),                                       // empty
      Update({T(1, 1.0, {1}), T(3, 1.0, {1})}),         // index beyond the layout
      Update({T(1, 1.0, {1}), T(0, 1.0, {1, 2, 3})}),   // wrong shape
      Update({T(1, 1.0, {1}), T(1, 1.0, {1})}),         // twice
      Update({T(1, 1.0, {1}), T(2, -0.1, {1, 2, 3})}),  // negative fraction
      Update({T(1, 1.0, {1}), T(2, 1.5, {1, 2, 3})}),   // fraction > 1
      Update({T(1, 1.0, {1}), T(2, std::nan(""), {1, 2, 3})}),
      Update({T(1, 1.0, {1}), T(2, 1.0, {1, INFINITY, 3})}),
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(acc.Accumulate(bad[i], 1.0).code(), StatusCode::kInvalidArgument) << i;
  }
  const NamedSubset good = Update({T(1, 1.0, {5})});
  for (double w : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    EXPECT_EQ(acc.Accumulate(good, w).code(), StatusCode::kInvalidArgument) << w;
  }
  EXPECT_EQ(acc.count(), 1u);
  EXPECT_EQ(acc.total_weight(), 1.0);
  EXPECT_EQ(acc.tensor_weights()[1], 0.0);
  EXPECT_EQ(Values(*acc.Mean()), (std::vector<float>{1, 1, 0, 0, 0, 0}));
}

TEST(KeyedAccumulatorTest, MeanNeedsAnUpdate) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kSelected);
  EXPECT_EQ(acc.Mean().status().code(), StatusCode::kFailedPrecondition);
}

// Random keyed updates on a small pool layout, each client sending a random subset.
std::vector<std::pair<NamedSubset, double>> RandomUpdates(const Layout& layout, int n,
                                                          uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> value(0.0f, 0.1f);
  std::uniform_real_distribution<double> fraction(0.0, 1.0);
  std::uniform_int_distribution<int> weight(1, 100);
  std::vector<std::pair<NamedSubset, double>> out;
  for (int i = 0; i < n; ++i) {
    NamedSubset s;
    // The last tensor is never sent; every update sends at least tensor 0.
    for (size_t t = 0; t + 1 < layout.num_tensors(); ++t) {
      if (t > 0 && rng() % 2 == 0) continue;
      std::vector<float> v(layout.tensors()[t].numel);
      for (float& x : v) x = value(rng);
      s.tensors.push_back(T(t, fraction(rng), std::move(v)));
    }
    out.emplace_back(std::move(s), weight(rng));
  }
  return out;
}

TEST(KeyedAccumulatorTest, MergeEqualsSequentialForBothRules) {
  auto layout = std::make_shared<Layout>();
  for (int e = 0; e < 4; ++e) {
    layout->Add("pool." + std::to_string(e) + ".key", {8});
    layout->Add("pool." + std::to_string(e) + ".head.weight", {3, 8});
  }
  layout->Add("never.sent", {5});
  auto updates = RandomUpdates(*layout, 12, 42);
  for (KeyedRule rule : {KeyedRule::kSelected, KeyedRule::kUniform}) {
    KeyedAccumulator all(layout, rule), left(layout, rule), right(layout, rule);
    for (size_t i = 0; i < updates.size(); ++i) {
      ASSERT_TRUE(all.Accumulate(updates[i].first, updates[i].second).ok());
      KeyedAccumulator& half = i % 3 == 0 ? left : right;
      ASSERT_TRUE(half.Accumulate(updates[i].first, updates[i].second).ok());
    }
    ASSERT_TRUE(left.MergeWith(std::move(right)).ok());
    EXPECT_EQ(right.count(), 0u);
    EXPECT_EQ(left.count(), all.count());
    EXPECT_EQ(left.total_weight(), all.total_weight());
    ParamSet a = *all.Mean(), b = *left.Mean();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a.data()[i], b.data()[i], 1e-7) << i;
    const TensorSpec& never = layout->tensors().back();
    for (size_t i = never.offset; i < never.offset + never.numel; ++i) {
      EXPECT_EQ(b.data()[i], 0.0f);
    }
  }
}

TEST(KeyedAccumulatorTest, MergeRefusesOtherLayoutsAndRules) {
  KeyedAccumulator acc(TestLayout(), KeyedRule::kSelected);
  ASSERT_TRUE(acc.Accumulate(Update({T(0, 1.0, {1, 1})}), 1.0).ok());
  KeyedAccumulator uniform(TestLayout(), KeyedRule::kUniform);
  ASSERT_TRUE(uniform.Accumulate(Update({T(0, 1.0, {1, 1})}), 1.0).ok());
  EXPECT_EQ(acc.MergeWith(std::move(uniform)).code(), StatusCode::kInvalidArgument);
  auto other = std::make_shared<Layout>();
  other->Add("a", {2});
  KeyedAccumulator small(other, KeyedRule::kSelected);
  EXPECT_EQ(acc.MergeWith(std::move(small)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.count(), 1u);
  EXPECT_EQ(uniform.count(), 1u);
}

TEST(KeyedAccumulatorTest, ParsesRuleNames) {
  EXPECT_EQ(*ParseKeyedRule("selected"), KeyedRule::kSelected);
  EXPECT_EQ(*ParseKeyedRule("uniform"), KeyedRule::kUniform);
  EXPECT_EQ(ParseKeyedRule("mean").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyedRuleName(KeyedRule::kUniform), "uniform");
}

}  // namespace
}  // namespace fl::internal
