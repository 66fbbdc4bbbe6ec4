// sign-SGD (examples/sign_sgd.h), driven through the public Strategy / RoundAggregator
// interfaces as the coordinator drives it.

#include "examples/sign_sgd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"

namespace fl::internal {
namespace {

constexpr uint64_t kRound = 2;
constexpr double kServerLr = 0.125;

Layout SixParams() {
  Layout l;
  l.Add("w", {2, 3});
  return l;
}

std::unique_ptr<Strategy> SignSgd() {
  static const Status registered = examples::RegisterSignSgd();
  EXPECT_TRUE(registered.ok()) << registered.ToString();
  Result<Config> config =
      Config::Build(AlgorithmConfigDefaults(), "",
                    {"algorithm.name=signsgd", "signsgd.server_lr=" + std::to_string(kServerLr)});
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

Payload Update(const std::vector<float>& delta, double weight, uint64_t round = kRound) {
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.round = round;
  p.meta.weight = weight;
  p.meta.layout_hash = SixParams().hash();
  p.meta.encoding = Encoding::kDenseF32;
  p.meta.train_loss = 1;
  return p;
}

// Coordinate 0: one heavy client against two light ones (the weighted mean is negative,
// the majority positive). 1: unanimous minus. 2: a tie (+, -, 0). 3: all zero.
// 4: two minus, one plus. 5: one plus, two zero.
const std::vector<std::vector<float>> kDeltas = {
    {-5.0f, -1.0f, 0.5f, 0.0f, -0.1f, 0.0f},
    {1.0f, -2.0f, -0.5f, 0.0f, -0.2f, 0.0f},
    {1.0f, -3.0f, 0.0f, 0.0f, 0.3f, 0.7f},
};
const std::vector<double> kWeights = {1000, 1, 1};

int Sign(float x) { return (x > 0) - (x < 0); }

TEST(SignSgdTest, EachClientVotesOnceAndTheModelStepsByTheMajoritySign) {
  std::unique_ptr<Strategy> s = SignSgd();
  ParamSet global(SixParams());
  for (size_t i = 0; i < global.size(); ++i) global.data()[i] = 0.5f * static_cast<float>(i);
  const ParamSet before = global;

  std::unique_ptr<RoundAggregator> agg = s->NewRoundAggregator(global, kRound);
  for (size_t c = 0; c < kDeltas.size(); ++c) {
    ASSERT_TRUE(agg->Accumulate(Update(kDeltas[c], kWeights[c])).ok());
  }
  EXPECT_EQ(agg->count(), 3u);
  Result<AggregateReport> report = std::move(*agg).Report();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->total_weight, 3.0);  // one vote per client, whatever its weight
  ASSERT_TRUE(s->ApplyRound(*report, &global).ok());

  const float step = static_cast<float>(kServerLr);
  for (size_t i = 0; i < global.size(); ++i) {
    int votes = 0;
    for (const auto& d : kDeltas) votes += Sign(d[i]);
    EXPECT_EQ(report->mean_delta.data()[i], static_cast<float>(votes / 3.0)) << i;
    const float expected = votes > 0 ? before.data()[i] + step
                           : votes < 0 ? before.data()[i] - step
                                       : before.data()[i];
    EXPECT_EQ(global.data()[i], expected) << i;
  }
  EXPECT_GT(global.data()[0], before.data()[0]);  // the heavy client was outvoted
  EXPECT_EQ(global.data()[2], before.data()[2]);  // a tie moves nothing
}

TEST(SignSgdTest, MergingTwoVotesEqualsOneVote) {
  std::unique_ptr<Strategy> s = SignSgd();
  const ParamSet global(SixParams());
  std::unique_ptr<RoundAggregator> all = s->NewRoundAggregator(global, kRound);
  std::unique_ptr<RoundAggregator> left = s->NewRoundAggregator(global, kRound);
  std::unique_ptr<RoundAggregator> right = s->NewRoundAggregator(global, kRound);
  for (size_t c = 0; c < kDeltas.size(); ++c) {
    ASSERT_TRUE(all->Accumulate(Update(kDeltas[c], kWeights[c])).ok());
    ASSERT_TRUE((c == 0 ? left : right)->Accumulate(Update(kDeltas[c], kWeights[c])).ok());
  }
  ASSERT_TRUE(left->MergeWith(std::move(*right)).ok());
  EXPECT_FALSE(right->CanReport());
  EXPECT_EQ(right->Accumulate(Update(kDeltas[0], 1)).code(), StatusCode::kFailedPrecondition);
  Result<AggregateReport> a = std::move(*all).Report();
  Result<AggregateReport> b = std::move(*left).Report();
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->mean_delta.size(); ++i) {
    EXPECT_EQ(a->mean_delta.data()[i], b->mean_delta.data()[i]) << i;
  }
  EXPECT_EQ(a->count, b->count);
}

TEST(SignSgdTest, RefusedUpdatesCountNoVote) {
  std::unique_ptr<Strategy> s = SignSgd();
  const ParamSet global(SixParams());
  std::unique_ptr<RoundAggregator> agg = s->NewRoundAggregator(global, kRound);
  EXPECT_FALSE(agg->CanReport());
  EXPECT_EQ(agg->Accumulate(Update(kDeltas[0], 1, kRound + 1)).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(agg->Accumulate(Update({1, 2, 3}, 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(agg->Accumulate(Update({1, 1, 1, 1, 1, std::nanf("")}, 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(agg->Accumulate(Update(kDeltas[0], 0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(agg->count(), 0u);
  ASSERT_TRUE(agg->Accumulate(Update(kDeltas[1], 1)).ok());
  Result<AggregateReport> r = std::move(*agg).Report();
  ASSERT_TRUE(r.ok());
  for (size_t i = 0; i < r->mean_delta.size(); ++i) {
    EXPECT_EQ(r->mean_delta.data()[i], static_cast<float>(Sign(kDeltas[1][i]))) << i;
  }
  EXPECT_EQ(std::move(*agg).Report().status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fl::internal
