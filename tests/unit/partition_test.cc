#include "data/partition.h"

#include <algorithm>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "data/idx_reader.h"

namespace fl::internal {
namespace {

const std::vector<uint8_t>& FashionMnistLabels() {
  static const std::vector<uint8_t> labels = [] {
    Result<ImageDataset> ds = LoadMnistFormat(FL_FASHION_MNIST_DIR, DatasetSplit::kTrain);
    EXPECT_TRUE(ds.ok()) << ds.status().ToString();
    return ds.ok() ? ds->labels : std::vector<uint8_t>();
  }();
  return labels;
}

PartitionSpec Spec(const std::string& s) {
  Result<PartitionSpec> spec = ParsePartitionSpec(s);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? *spec : PartitionSpec();
}

// Every example in exactly one client, no client empty.
void ExpectExactCover(const Partition& p, size_t n, int num_clients) {
  ASSERT_EQ(p.size(), static_cast<size_t>(num_clients));
  std::vector<int> seen(n, 0);
  for (const auto& client : p) {
    EXPECT_FALSE(client.empty());
    EXPECT_TRUE(std::is_sorted(client.begin(), client.end()));
    for (int64_t i : client) {
      ASSERT_GE(i, 0);
      ASSERT_LT(static_cast<size_t>(i), n);
      ++seen[i];
    }
  }
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "example " << i;
}

// Mean over clients of the share of the client's most common label.
double MeanTopLabelShare(const Partition& p, const std::vector<uint8_t>& labels) {
  double sum = 0;
  for (const auto& client : p) {
    std::vector<int> counts(256, 0);
    for (int64_t i : client) ++counts[labels[i]];
    sum += static_cast<double>(*std::max_element(counts.begin(), counts.end())) / client.size();
  }
  return sum / p.size();
}

TEST(PartitionTest, ParsesSpecs) {
  EXPECT_EQ(Spec("iid").kind, PartitionSpec::Kind::kIid);
  PartitionSpec d = Spec("dirichlet:0.5");
  EXPECT_EQ(d.kind, PartitionSpec::Kind::kDirichlet);
  EXPECT_DOUBLE_EQ(d.alpha, 0.5);
  PartitionSpec s = Spec("shards:2");
  EXPECT_EQ(s.kind, PartitionSpec::Kind::kShards);
  EXPECT_EQ(s.shards_per_client, 2);
  EXPECT_EQ(PartitionSpecToString(d), "dirichlet:0.5");
  EXPECT_EQ(PartitionSpecToString(s), "shards:2");
  for (const char* bad : {"", "IID", "dirichlet", "dirichlet:", "dirichlet:0", "dirichlet:-1",
                          "dirichlet:abc", "dirichlet:0.5x", "dirichlet:inf", "shards:0",
                          "shards:1.5", "shards:-2", "random:3"}) {
    Result<PartitionSpec> r = ParsePartitionSpec(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParsePartitionSpec("foo").status().message().find("dirichlet:<alpha>"),
            std::string::npos);
}

TEST(PartitionTest, EveryKindCoversEachExampleOnceOnRealLabels) {
  const auto& labels = FashionMnistLabels();
  ASSERT_EQ(labels.size(), 60000u);
  for (const char* s : {"iid", "dirichlet:0.5", "dirichlet:0.05", "shards:2"}) {
    SCOPED_TRACE(s);
    Result<Partition> p = PartitionExamples(Spec(s), labels, 100, 7);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ExpectExactCover(*p, labels.size(), 100);
  }
}

TEST(PartitionTest, IidSizesDifferByAtMostOne) {
  std::vector<uint8_t> labels(1003, 0);
  Result<Partition> p = PartitionExamples(Spec("iid"), labels, 10, 1);
  ASSERT_TRUE(p.ok());
  ExpectExactCover(*p, labels.size(), 10);
  for (const auto& c : *p) {
    EXPECT_GE(c.size(), 100u);
    EXPECT_LE(c.size(), 101u);
  }
}

TEST(PartitionTest, DeterministicGivenSeedAndDifferentAcrossSeeds) {
  const auto& labels = FashionMnistLabels();
  for (const char* s : {"iid", "dirichlet:0.5", "shards:2"}) {
    SCOPED_TRACE(s);
    Result<Partition> a = PartitionExamples(Spec(s), labels, 50, 42);
    Result<Partition> b = PartitionExamples(Spec(s), labels, 50, 42);
    Result<Partition> c = PartitionExamples(Spec(s), labels, 50, 43);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(*a, *b);
    EXPECT_NE(*a, *c);
  }
}

TEST(PartitionTest, DirichletIsSkewedAndSmallerAlphaMoreSo) {
  const auto& labels = FashionMnistLabels();
  Result<Partition> iid = PartitionExamples(Spec("iid"), labels, 100, 3);
  Result<Partition> d05 = PartitionExamples(Spec("dirichlet:0.5"), labels, 100, 3);
  Result<Partition> d01 = PartitionExamples(Spec("dirichlet:0.1"), labels, 100, 3);
  ASSERT_TRUE(iid.ok() && d05.ok() && d01.ok());
  double share_iid = MeanTopLabelShare(*iid, labels);
  double share_05 = MeanTopLabelShare(*d05, labels);
  double share_01 = MeanTopLabelShare(*d01, labels);
  // IID clients of ~600 examples have a top label near 10%-15%.
  EXPECT_LT(share_iid, 0.2);
  EXPECT_GT(share_05, 0.35);
  EXPECT_GT(share_01, share_05);
  // Client sizes vary under Dirichlet, unlike IID.
  size_t lo = labels.size(), hi = 0;
  for (const auto& c : *d05) {
    lo = std::min(lo, c.size());
    hi = std::max(hi, c.size());
  }
  EXPECT_GT(hi, 2 * lo);
}

TEST(PartitionTest, DirichletRepairsEmptyClients) {
  // Very small alpha and few examples per client: many clients would get nothing.
  std::vector<uint8_t> labels(200);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  Result<Partition> p = PartitionExamples(Spec("dirichlet:0.01"), labels, 100, 5);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ExpectExactCover(*p, labels.size(), 100);
}

TEST(PartitionTest, ShardsGiveAtMostKLabelsPerClient) {
  const auto& labels = FashionMnistLabels();
  for (int k : {1, 2, 3}) {
    Result<Partition> p =
        PartitionExamples(Spec("shards:" + std::to_string(k)), labels, 100, 11);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ExpectExactCover(*p, labels.size(), 100);
    for (const auto& client : *p) {
      std::set<uint8_t> seen;
      for (int64_t i : client) seen.insert(labels[i]);
      EXPECT_LE(seen.size(), static_cast<size_t>(k));
    }
  }
  // Unbalanced labels: still label-pure shards and exact cover.
  std::vector<uint8_t> skewed(997);
  for (size_t i = 0; i < skewed.size(); ++i) skewed[i] = i < 700 ? 0 : (i < 900 ? 1 : 2 + i % 5);
  Result<Partition> p = PartitionExamples(Spec("shards:2"), skewed, 20, 2);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ExpectExactCover(*p, skewed.size(), 20);
  for (const auto& client : *p) {
    std::set<uint8_t> seen;
    for (int64_t i : client) seen.insert(skewed[i]);
    EXPECT_LE(seen.size(), 2u);
  }
}

TEST(PartitionTest, RejectsImpossibleRequests) {
  std::vector<uint8_t> labels(50);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  EXPECT_EQ(PartitionExamples(Spec("iid"), labels, 0, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PartitionExamples(Spec("iid"), labels, 51, 1).status().code(),
            StatusCode::kInvalidArgument);
  // 2 clients x 2 shards = 4 shards for 10 labels: some label would have no shard.
  EXPECT_EQ(PartitionExamples(Spec("shards:2"), labels, 2, 1).status().code(),
            StatusCode::kInvalidArgument);
  // 30 clients x 2 shards = 60 non-empty shards from 50 examples.
  EXPECT_EQ(PartitionExamples(Spec("shards:2"), labels, 30, 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(PartitionTest, CompactShardsHoldTheListsInEightBytesPerExampleAndClient) {
  const auto& labels = FashionMnistLabels();
  constexpr int kClients = 1000;
  for (const char* s : {"iid", "dirichlet:0.5", "shards:2"}) {
    SCOPED_TRACE(s);
    Result<ClientShards> shards = ShardExamples(Spec(s), labels, kClients, 13);
    Result<Partition> lists = PartitionExamples(Spec(s), labels, kClients, 13);
    ASSERT_TRUE(shards.ok() && lists.ok());
    ASSERT_EQ(shards->num_clients(), static_cast<size_t>(kClients));
    for (size_t c = 0; c < shards->num_clients(); ++c) {
      ASSERT_EQ(shards->size(c), (*lists)[c].size());
      ASSERT_EQ(shards->Indices(c), (*lists)[c]);
    }
    EXPECT_LE(shards->resident_bytes(), 8 * (labels.size() + kClients + 1));
  }
}

TEST(PartitionTest, SampleDrawsMDistinctExamplesForMoreClientsThanExamples) {
  const auto& labels = FashionMnistLabels();
  const PartitionSpec spec = Spec("sample:32");
  EXPECT_EQ(spec.kind, PartitionSpec::Kind::kSample);
  EXPECT_EQ(spec.examples_per_client, 32);
  EXPECT_EQ(PartitionSpecToString(spec), "sample:32");
  constexpr int kClients = 100000;  // more clients than the 60,000 images
  Result<ClientShards> shards = ShardExamples(spec, labels, kClients, 9);
  ASSERT_TRUE(shards.ok()) << shards.status().ToString();
  ASSERT_EQ(shards->num_clients(), static_cast<size_t>(kClients));
  EXPECT_EQ(shards->resident_bytes(), 0u);  // nothing stored per client
  Result<ClientShards> again = ShardExamples(spec, labels, kClients, 9);
  Result<ClientShards> other_seed = ShardExamples(spec, labels, kClients, 10);
  // fl-client builds its shard with ShardExamples for num_partitions clients; a client's
  // examples do not even depend on that count.
  Result<ClientShards> fewer = ShardExamples(spec, labels, 10, 9);
  ASSERT_TRUE(again.ok() && other_seed.ok() && fewer.ok());
  std::vector<int> drawn(labels.size(), 0);
  size_t differ_by_seed = 0;
  const size_t kChecked = 10000;
  for (size_t c = 0; c < kChecked; ++c) {
    const std::vector<int64_t> mine = shards->Indices(c);
    ASSERT_EQ(mine.size(), 32u);
    ASSERT_EQ(shards->size(c), 32u);
    ASSERT_TRUE(std::adjacent_find(mine.begin(), mine.end(), std::greater_equal<int64_t>()) ==
                mine.end())
        << "client " << c << ": not strictly ascending";
    ASSERT_GE(mine.front(), 0);
    ASSERT_LT(static_cast<size_t>(mine.back()), labels.size());
    ASSERT_EQ(mine, again->Indices(c));
    ASSERT_EQ(mine, DrawShard(labels.size(), 32, 9, c));
    if (c < fewer->num_clients()) ASSERT_EQ(mine, fewer->Indices(c));
    differ_by_seed += mine != other_seed->Indices(c) ? 1 : 0;
    for (int64_t i : mine) ++drawn[static_cast<size_t>(i)];
  }
  EXPECT_EQ(differ_by_seed, kChecked);
  EXPECT_NE(shards->Indices(0), shards->Indices(1));
  EXPECT_EQ(shards->Indices(kClients - 1).size(), 32u);
  // 320,000 uniform draws over 60,000 images miss an image with probability e^-5.3.
  const size_t never = static_cast<size_t>(std::count(drawn.begin(), drawn.end(), 0));
  EXPECT_LT(never, labels.size() / 100);
}

TEST(PartitionTest, SampleRejectsBadSizes) {
  for (const char* bad : {"sample", "sample:", "sample:0", "sample:-1", "sample:1.5",
                          "sample:x", "sample:10000001"}) {
    EXPECT_EQ(ParsePartitionSpec(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  std::vector<uint8_t> labels(50, 0);
  EXPECT_EQ(ShardExamples(Spec("sample:51"), labels, 10, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardExamples(Spec("sample:5"), labels, 0, 1).status().code(),
            StatusCode::kInvalidArgument);
  // m = all examples: every client holds the whole dataset.
  Result<ClientShards> all = ShardExamples(Spec("sample:50"), labels, 3, 1);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->Indices(2).size(), 50u);
  EXPECT_EQ(all->Indices(2).back(), 49);
}

}  // namespace
}  // namespace fl::internal
