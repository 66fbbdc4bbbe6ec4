#include "algorithms/fedavg/dense_round_aggregator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "codec/dense_codec.h"
#include "crypto/sha256.h"

namespace fl::internal {
namespace {

constexpr uint64_t kRound = 4;

std::shared_ptr<const Layout> TestLayout() {
  auto l = std::make_shared<Layout>();
  l->Add("w", {2, 2});
  l->Add("b", {2});
  return l;
}

Payload MakePayload(const std::vector<float>& delta, double weight, double loss = 1.0,
                    Encoding encoding = Encoding::kDenseF32) {
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, encoding, &p.bytes).ok());
  p.meta.round = kRound;
  p.meta.weight = weight;
  p.meta.layout_hash = TestLayout()->hash();
  p.meta.encoding = encoding;
  p.meta.sha256 = Sha256(p.bytes);
  p.meta.train_loss = loss;
  return p;
}

const std::vector<float> kA = {1, 2, 3, 4, 5, 6};
const std::vector<float> kB = {-3, 2, 0.5f, 0, 1, -6};

TEST(DenseRoundAggregatorTest, ReportsWeightedMean) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  EXPECT_FALSE(agg.CanReport());
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 1.0, 2.0)).ok());
  ASSERT_TRUE(agg.Accumulate(MakePayload(kB, 3.0, 4.0, Encoding::kDenseBF16)).ok());
  EXPECT_EQ(agg.count(), 2u);
  EXPECT_TRUE(agg.CanReport());
  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->count, 2u);
  EXPECT_EQ(r->total_weight, 4.0);
  EXPECT_DOUBLE_EQ(r->mean_train_loss, (2.0 + 12.0) / 4);
  ASSERT_EQ(r->mean_delta.size(), 6u);
  EXPECT_EQ(r->mean_delta.layout().hash(), TestLayout()->hash());
  // All values are exact in bf16, so the mean is exact.
  const std::vector<float> expect = {-2.0f, 2.0f, 1.125f, 1.0f, 2.0f, -3.0f};
  for (size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(r->mean_delta.data()[i], expect[i]) << i;
}

TEST(DenseRoundAggregatorTest, ConsumedAfterReport) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 1.0)).ok());
  ASSERT_TRUE(std::move(agg).Report().ok());
  EXPECT_TRUE(agg.consumed());
  EXPECT_FALSE(agg.CanReport());
  EXPECT_EQ(agg.Accumulate(MakePayload(kA, 1.0)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::move(agg).Report().status().code(), StatusCode::kFailedPrecondition);
  DenseRoundAggregator other(TestLayout(), kRound);
  ASSERT_TRUE(other.Accumulate(MakePayload(kB, 1.0)).ok());
  EXPECT_EQ(agg.MergeWith(std::move(other)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(other.count(), 1u);  // a refused merge consumes nothing
}

TEST(DenseRoundAggregatorTest, EmptyReportFails) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  EXPECT_EQ(std::move(agg).Report().status().code(), StatusCode::kFailedPrecondition);
}

TEST(DenseRoundAggregatorTest, BadInputIsRejectedAndChangesNothing) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 2.0, 1.5)).ok());

  std::vector<Payload> bad;
  Payload p = MakePayload(kB, 1.0);
  p.meta.layout_hash ^= 1;
  bad.push_back(p);                                             // wrong layout hash
  p = MakePayload(kB, 1.0);
  p.bytes.pop_back();
  bad.push_back(p);                                             // wrong length
  p = MakePayload({1, 2, 3, 4, 5}, 1.0);
  bad.push_back(p);                                             // too few values
  std::vector<float> with_nan = kB;
  with_nan[5] = std::nanf("");
  bad.push_back(MakePayload(with_nan, 1.0));                    // NaN
  std::vector<float> with_inf = kB;
  with_inf[0] = -std::numeric_limits<float>::infinity();
  bad.push_back(MakePayload(with_inf, 1.0));                    // -Inf
  bad.push_back(MakePayload(with_inf, 1.0, 1.0, Encoding::kDenseF16));
  bad.push_back(MakePayload(kB, 0.0));                          // zero weight
  bad.push_back(MakePayload(kB, -2.0));                         // negative weight
  bad.push_back(MakePayload(kB, std::nan("")));                 // NaN weight
  bad.push_back(MakePayload(kB, std::numeric_limits<double>::infinity()));
  bad.push_back(MakePayload(kB, 1.0, std::nan("")));            // NaN loss
  p = MakePayload(kB, 1.0);
  p.meta.encoding = Encoding::kFerret;
  bad.push_back(p);                                             // not dense
  for (size_t i = 0; i < bad.size(); ++i) {
    Status s = agg.Accumulate(bad[i]);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << i << ": " << s.ToString();
    EXPECT_EQ(agg.count(), 1u) << i;
  }
  p = MakePayload(kB, 1.0);
  p.meta.round = kRound + 1;
  EXPECT_EQ(agg.Accumulate(p).code(), StatusCode::kFailedPrecondition);

  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->count, 1u);
  EXPECT_EQ(r->total_weight, 2.0);
  EXPECT_EQ(r->mean_train_loss, 1.5);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(r->mean_delta.data()[i], kA[i]);
}

TEST(DenseRoundAggregatorTest, MergeMatchesSingleAggregator) {
  DenseRoundAggregator all(TestLayout(), kRound);
  DenseRoundAggregator left(TestLayout(), kRound);
  DenseRoundAggregator right(TestLayout(), kRound);
  const std::vector<std::vector<float>> deltas = {kA, kB, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}};
  for (size_t i = 0; i < deltas.size(); ++i) {
    Payload p = MakePayload(deltas[i], 1.0 + i, 0.5 * i);
    ASSERT_TRUE(all.Accumulate(p).ok());
    ASSERT_TRUE((i == 1 ? right : left).Accumulate(p).ok());
  }
  ASSERT_TRUE(left.MergeWith(std::move(right)).ok());
  EXPECT_TRUE(right.consumed());
  EXPECT_EQ(left.count(), 3u);
  Result<AggregateReport> a = std::move(all).Report();
  Result<AggregateReport> b = std::move(left).Report();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->total_weight, b->total_weight);
  EXPECT_DOUBLE_EQ(a->mean_train_loss, b->mean_train_loss);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(a->mean_delta.data()[i], b->mean_delta.data()[i]);
}

class OtherAggregator : public RoundAggregator {
 public:
  Status Accumulate(const Payload&) override { return Status::Ok(); }
  Status MergeWith(RoundAggregator&&) override { return Status::Ok(); }
  uint64_t count() const override { return 0; }
  bool CanReport() const override { return false; }
  Result<AggregateReport> Report() && override { return Status::FailedPrecondition("x"); }
};

TEST(DenseRoundAggregatorTest, MergeRejectsMismatches) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 1.0)).ok());
  DenseRoundAggregator other_round(TestLayout(), kRound + 1);
  EXPECT_EQ(agg.MergeWith(std::move(other_round)).code(), StatusCode::kInvalidArgument);
  auto small = std::make_shared<Layout>();
  small->Add("w", {2});
  DenseRoundAggregator other_layout(small, kRound);
  EXPECT_EQ(agg.MergeWith(std::move(other_layout)).code(), StatusCode::kInvalidArgument);
  OtherAggregator foreign;
  EXPECT_EQ(agg.MergeWith(std::move(foreign)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.MergeWith(std::move(agg)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.count(), 1u);
  EXPECT_FALSE(other_round.consumed());
}

// A subclass hook: the weight can be rescaled (e.g. by staleness) in one place.
class HalfWeightAggregator : public DenseRoundAggregator {
 public:
  using DenseRoundAggregator::DenseRoundAggregator;

 protected:
  Result<double> FoldWeight(const UpdateMeta& meta) override { return meta.weight / 2; }
};

TEST(DenseRoundAggregatorTest, SubclassHookScalesWeight) {
  HalfWeightAggregator agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 4.0)).ok());
  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total_weight, 2.0);
}

// The mean of two aggregators' partials merged across a byte boundary (one process's
// SerializePartial into another's MergeSerializedPartial) is the one aggregator's mean.
TEST(DenseRoundAggregatorTest, SerializedPartialMergesLikeOneAggregator) {
  DenseRoundAggregator whole(TestLayout(), kRound);
  ASSERT_TRUE(whole.Accumulate(MakePayload(kA, 1.5, 2.0)).ok());
  ASSERT_TRUE(whole.Accumulate(MakePayload(kB, 3.0, 4.0)).ok());

  DenseRoundAggregator left(TestLayout(), kRound), right(TestLayout(), kRound);
  ASSERT_TRUE(left.Accumulate(MakePayload(kA, 1.5, 2.0)).ok());
  ASSERT_TRUE(right.Accumulate(MakePayload(kB, 3.0, 4.0)).ok());
  Result<std::string> partial = right.SerializePartial();
  ASSERT_TRUE(partial.ok()) << partial.status().ToString();
  EXPECT_EQ(right.count(), 1u);  // serializing leaves the aggregator as it was
  ASSERT_TRUE(left.MergeSerializedPartial(*partial).ok());
  EXPECT_EQ(left.count(), 2u);

  Result<AggregateReport> merged = std::move(left).Report();
  Result<AggregateReport> single = std::move(whole).Report();
  ASSERT_TRUE(merged.ok() && single.ok());
  EXPECT_EQ(merged->count, 2u);
  EXPECT_EQ(merged->total_weight, single->total_weight);
  EXPECT_EQ(merged->mean_train_loss, single->mean_train_loss);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(merged->mean_delta.data()[i], single->mean_delta.data()[i]) << i;
  }
}

TEST(DenseRoundAggregatorTest, EmptyPartialMergesNothing) {
  DenseRoundAggregator empty(TestLayout(), kRound), agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 2.0)).ok());
  Result<std::string> partial = empty.SerializePartial();
  ASSERT_TRUE(partial.ok());
  ASSERT_TRUE(agg.MergeSerializedPartial(*partial).ok());
  EXPECT_EQ(agg.count(), 1u);
  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total_weight, 2.0);
  EXPECT_EQ(r->mean_delta.data()[0], 1.0f);
}

// Offsets in the partial format (dense_round_aggregator.cc): magic 0, format 4, round 8,
// layout hash 16, count 24, weight 32, loss sum 40, number of sums 48, sums from 56.
constexpr size_t kRoundAt = 8, kHashAt = 16, kCountAt = 24, kWeightAt = 32, kSumsAt = 56;

void PutDouble(std::string* bytes, size_t at, double v) { std::memcpy(bytes->data() + at, &v, 8); }

TEST(DenseRoundAggregatorTest, HostilePartialsAreRefusedAndChangeNothing) {
  DenseRoundAggregator source(TestLayout(), kRound);
  ASSERT_TRUE(source.Accumulate(MakePayload(kA, 2.0)).ok());
  Result<std::string> good = source.SerializePartial();
  ASSERT_TRUE(good.ok());
  ASSERT_EQ(good->size(), kSumsAt + 6 * sizeof(double));

  std::vector<std::pair<std::string, std::string>> bad;  // what, bytes
  bad.emplace_back("empty", "");
  bad.emplace_back("truncated header", good->substr(0, 30));
  bad.emplace_back("truncated sums", good->substr(0, good->size() - 1));
  bad.emplace_back("trailing bytes", *good + "x");
  std::string magic = *good;
  magic[0] = 'X';
  bad.emplace_back("magic", magic);
  std::string round = *good;
  round[kRoundAt] ^= 1;
  bad.emplace_back("round", round);
  std::string layout = *good;
  layout[kHashAt] ^= 1;
  bad.emplace_back("layout hash", layout);
  std::string nan = *good;
  PutDouble(&nan, kSumsAt + 8 * 3, std::numeric_limits<double>::quiet_NaN());
  bad.emplace_back("NaN sum", nan);
  std::string inf_weight = *good;
  PutDouble(&inf_weight, kWeightAt, std::numeric_limits<double>::infinity());
  bad.emplace_back("infinite weight", inf_weight);
  std::string negative = *good;
  PutDouble(&negative, kWeightAt, -2.0);
  bad.emplace_back("negative weight", negative);
  std::string no_count = *good;
  no_count[kCountAt] = 0;
  bad.emplace_back("weight without updates", no_count);

  DenseRoundAggregator target(TestLayout(), kRound);
  ASSERT_TRUE(target.Accumulate(MakePayload(kB, 1.0)).ok());
  for (const auto& [what, bytes] : bad) {
    Status s = target.MergeSerializedPartial(bytes);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s.ToString();
  }
  EXPECT_EQ(target.count(), 1u);
  Result<AggregateReport> r = std::move(target).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total_weight, 1.0);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(r->mean_delta.data()[i], kB[i]) << i;
}

TEST(DenseRoundAggregatorTest, ConsumedAggregatorHasNoPartial) {
  DenseRoundAggregator agg(TestLayout(), kRound);
  ASSERT_TRUE(agg.Accumulate(MakePayload(kA, 1.0)).ok());
  Result<std::string> partial = agg.SerializePartial();
  ASSERT_TRUE(partial.ok());
  ASSERT_TRUE(std::move(agg).Report().ok());
  EXPECT_EQ(agg.SerializePartial().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(agg.MergeSerializedPartial(*partial).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fl::internal
