#include "agg/weighted_accumulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

std::shared_ptr<const Layout> TestLayout(int64_t n) {
  auto l = std::make_shared<Layout>();
  l->Add("a", {n / 2});
  l->Add("b", {n - n / 2});
  return l;
}

struct Update {
  std::vector<float> values;
  double weight;
  std::string bytes;
};

std::vector<Update> RandomUpdates(int count, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  std::uniform_int_distribution<int> w(1, 600);
  std::vector<Update> out(count);
  for (Update& u : out) {
    u.values.resize(n);
    for (float& x : u.values) x = dist(rng);
    u.weight = w(rng);
    EXPECT_TRUE(EncodeDense(u.values, Encoding::kDenseF32, &u.bytes).ok());
  }
  return out;
}

TEST(WeightedAccumulatorTest, MeanIsWeightedAverage) {
  auto layout = TestLayout(3);
  WeightedAccumulator acc(layout);
  std::vector<float> a = {1.0f, 2.0f, 3.0f};
  std::vector<float> b = {4.0f, -2.0f, 0.0f};
  std::string ba, bb;
  ASSERT_TRUE(EncodeDense(a, Encoding::kDenseF32, &ba).ok());
  ASSERT_TRUE(EncodeDense(b, Encoding::kDenseF16, &bb).ok());
  ASSERT_TRUE(acc.Accumulate(ba, Encoding::kDenseF32, 1.0).ok());
  ASSERT_TRUE(acc.Accumulate(bb, Encoding::kDenseF16, 3.0).ok());
  EXPECT_EQ(acc.count(), 2u);
  EXPECT_EQ(acc.total_weight(), 4.0);
  Result<ParamSet> mean = acc.Mean();
  ASSERT_TRUE(mean.ok());
  EXPECT_EQ(mean->layout().hash(), layout->hash());
  EXPECT_FLOAT_EQ(mean->data()[0], (1.0f + 12.0f) / 4);
  EXPECT_FLOAT_EQ(mean->data()[1], (2.0f - 6.0f) / 4);
  EXPECT_FLOAT_EQ(mean->data()[2], 3.0f / 4);
}

TEST(WeightedAccumulatorTest, EmptyMeanFails) {
  WeightedAccumulator acc(TestLayout(4));
  EXPECT_EQ(acc.Mean().status().code(), StatusCode::kFailedPrecondition);
}

TEST(WeightedAccumulatorTest, BadInputLeavesStateUnchanged) {
  WeightedAccumulator acc(TestLayout(4));
  std::vector<float> ok = {1, 2, 3, 4};
  ASSERT_TRUE(acc.AccumulateValues(ok, 1.0).ok());
  std::vector<float> nan = {1, std::nanf(""), 3, 4};
  std::string bytes;
  ASSERT_TRUE(EncodeDense(nan, Encoding::kDenseF32, &bytes).ok());
  EXPECT_FALSE(acc.Accumulate(bytes, Encoding::kDenseF32, 1.0).ok());
  EXPECT_FALSE(acc.AccumulateValues(nan, 1.0).ok());
  EXPECT_FALSE(acc.AccumulateValues(ok, 0.0).ok());
  EXPECT_FALSE(acc.AccumulateValues(ok, -1.0).ok());
  EXPECT_FALSE(acc.AccumulateValues(ok, std::nan("")).ok());
  EXPECT_FALSE(acc.AccumulateValues(ok, INFINITY).ok());
  EXPECT_FALSE(acc.AccumulateValues(std::vector<float>(3), 1.0).ok());
  EXPECT_EQ(acc.count(), 1u);
  EXPECT_EQ(acc.total_weight(), 1.0);
  std::vector<double> expect = {1, 2, 3, 4};
  EXPECT_TRUE(std::equal(acc.sums().begin(), acc.sums().end(), expect.begin()));
}

TEST(WeightedAccumulatorTest, ResultIndependentOfArrivalOrder) {
  const size_t n = 20000;
  auto layout = TestLayout(n);
  std::vector<Update> updates = RandomUpdates(40, n, 11);
  WeightedAccumulator forward(layout);
  for (const Update& u : updates) ASSERT_TRUE(forward.Accumulate(u.bytes, Encoding::kDenseF32, u.weight).ok());
  ParamSet reference = *forward.Mean();

  std::mt19937 rng(5);
  size_t mismatches = 0;
  for (int trial = 0; trial < 3; ++trial) {
    std::shuffle(updates.begin(), updates.end(), rng);
    WeightedAccumulator shuffled(layout);
    for (const Update& u : updates) ASSERT_TRUE(shuffled.Accumulate(u.bytes, Encoding::kDenseF32, u.weight).ok());
    ParamSet mean = *shuffled.Mean();
    for (size_t i = 0; i < n; ++i) mismatches += mean.data()[i] != reference.data()[i];
  }
  // Bitwise equal except, at most, a vanishing fraction of rounding-boundary cases.
  EXPECT_LE(mismatches, 3u);

  // A float32 accumulator in the same orders differs far more often: the property is
  // real, not an artifact of the data.
  std::vector<float> f_ref(n, 0.0f), f_rev(n, 0.0f);
  for (const Update& u : updates) for (size_t i = 0; i < n; ++i) f_ref[i] += static_cast<float>(u.weight) * u.values[i];
  for (auto it = updates.rbegin(); it != updates.rend(); ++it) for (size_t i = 0; i < n; ++i) f_rev[i] += static_cast<float>(it->weight) * it->values[i];
  size_t float_mismatches = 0;
  for (size_t i = 0; i < n; ++i) float_mismatches += f_ref[i] != f_rev[i];
  EXPECT_GT(float_mismatches, 100 * (mismatches + 1));
}

TEST(WeightedAccumulatorTest, MergeEqualsSingleAccumulator) {
  const size_t n = 3000;
  auto layout = TestLayout(n);
  std::vector<Update> updates = RandomUpdates(9, n, 12);
  WeightedAccumulator all(layout);
  for (const Update& u : updates) ASSERT_TRUE(all.Accumulate(u.bytes, Encoding::kDenseF32, u.weight).ok());
  std::vector<WeightedAccumulator> shards;
  for (int s = 0; s < 3; ++s) shards.emplace_back(layout);
  for (size_t i = 0; i < updates.size(); ++i) {
    ASSERT_TRUE(shards[i % 3].Accumulate(updates[i].bytes, Encoding::kDenseF32, updates[i].weight).ok());
  }
  ASSERT_TRUE(shards[1].MergeWith(std::move(shards[2])).ok());
  ASSERT_TRUE(shards[0].MergeWith(std::move(shards[1])).ok());
  EXPECT_EQ(shards[1].count(), 0u);
  EXPECT_EQ(shards[0].count(), 9u);
  EXPECT_EQ(shards[0].total_weight(), all.total_weight());
  ParamSet a = *all.Mean();
  ParamSet b = *shards[0].Mean();
  size_t mismatches = 0;
  for (size_t i = 0; i < n; ++i) mismatches += a.data()[i] != b.data()[i];
  EXPECT_LE(mismatches, 1u);

  WeightedAccumulator other(TestLayout(10));
  EXPECT_EQ(shards[0].MergeWith(std::move(other)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(shards[0].count(), 9u);
}

TEST(WeightedAccumulatorTest, MeanOfIdenticalInputsIsExact) {
  auto layout = TestLayout(1000);
  std::vector<Update> one = RandomUpdates(1, 1000, 13);
  WeightedAccumulator acc(layout);
  for (double w : {3.0, 7.0, 11.0}) ASSERT_TRUE(acc.Accumulate(one[0].bytes, Encoding::kDenseF32, w).ok());
  ParamSet mean = *acc.Mean();
  for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(mean.data()[i], one[0].values[i]);
}

// One sweep for a batch gives bitwise the sums of folding each update in turn, in every
// encoding (float32 takes the in-place path, f16/bf16 the decoding one); a refused term
// (a NaN, a bad weight) is reported and changes nothing.
TEST(WeightedAccumulatorTest, BatchFoldEqualsOneUpdateAtATime) {
  const size_t n = 5000;  // not a multiple of the block
  std::vector<Update> updates = RandomUpdates(6, n, 11);
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    SCOPED_TRACE(EncodingName(e));
    std::vector<std::string> bytes(updates.size());
    for (size_t u = 0; u < updates.size(); ++u) {
      ASSERT_TRUE(EncodeDense(updates[u].values, e, &bytes[u]).ok());
    }
    std::vector<float> with_nan = updates[2].values;
    with_nan[4321] = std::nanf("");
    ASSERT_TRUE(EncodeDense(with_nan, e, &bytes[2]).ok());
    WeightedAccumulator one(TestLayout(n)), batch(TestLayout(n));
    std::vector<DenseTerm> terms;
    for (size_t u = 0; u < updates.size(); ++u) {
      const double weight = u == 4 ? -1.0 : updates[u].weight;
      const Status s = one.Accumulate(bytes[u], e, weight);
      EXPECT_EQ(s.ok(), u != 2 && u != 4);
      terms.push_back({bytes[u], e, weight});
    }
    std::vector<Status> results(terms.size());
    batch.AccumulateBatch(terms, results);
    for (size_t u = 0; u < terms.size(); ++u) EXPECT_EQ(results[u].ok(), u != 2 && u != 4) << u;
    EXPECT_EQ(batch.count(), 4u);
    EXPECT_EQ(batch.total_weight(), one.total_weight());
    ASSERT_EQ(batch.sums().size(), one.sums().size());
    EXPECT_TRUE(std::equal(batch.sums().begin(), batch.sums().end(), one.sums().begin(),
                           [](double a, double b) {
                             return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
                           }));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(batch.sums().data()) % 64, 0u);
  }
}

}  // namespace
}  // namespace fl::internal
