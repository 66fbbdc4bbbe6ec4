#include "data/domain_shift.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/idx_reader.h"

namespace fl::internal {
namespace {

const ImageDataset& FashionMnist(DatasetSplit split) {
  static const ImageDataset train = [] {
    Result<ImageDataset> ds = LoadMnistFormat(FL_FASHION_MNIST_DIR, DatasetSplit::kTrain);
    EXPECT_TRUE(ds.ok()) << ds.status().ToString();
    return ds.ok() ? *std::move(ds) : ImageDataset();
  }();
  static const ImageDataset test = [] {
    Result<ImageDataset> ds = LoadMnistFormat(FL_FASHION_MNIST_DIR, DatasetSplit::kTest);
    EXPECT_TRUE(ds.ok()) << ds.status().ToString();
    return ds.ok() ? *std::move(ds) : ImageDataset();
  }();
  return split == DatasetSplit::kTrain ? train : test;
}

std::vector<uint8_t> Image(int64_t i) {
  const ImageDataset& ds = FashionMnist(DatasetSplit::kTrain);
  return std::vector<uint8_t>(ds.image(i), ds.image(i) + ds.rows * ds.cols);
}

std::vector<uint8_t> Shifted(Domain d, std::vector<uint8_t> image, uint64_t seed = 7) {
  Status s = ApplyDomainShift(d, seed, 28, 28, image);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return image;
}

double Mean(const std::vector<uint8_t>& image) {
  double sum = 0;
  for (uint8_t x : image) sum += x;
  return sum / image.size();
}

// Sum of absolute differences of horizontal and vertical neighbours.
double TotalVariation(const std::vector<uint8_t>& image) {
  double tv = 0;
  for (int r = 0; r < 28; ++r) {
    for (int c = 0; c < 28; ++c) {
      if (c + 1 < 28) tv += std::abs(image[r * 28 + c] - image[r * 28 + c + 1]);
      if (r + 1 < 28) tv += std::abs(image[r * 28 + c] - image[(r + 1) * 28 + c]);
    }
  }
  return tv;
}

TEST(DomainShiftTest, NamesRoundTrip) {
  for (Domain d : AllDomains()) {
    Result<Domain> parsed = ParseDomain(DomainName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(*parsed, d);
  }
  Result<std::vector<Domain>> all = ParseDomainList("clean, inverted,rot90,noise,blur");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(*all, AllDomains());
  EXPECT_EQ(DomainListToString(*all), "clean,inverted,rot90,noise,blur");
}

TEST(DomainShiftTest, RejectsBadLists) {
  EXPECT_EQ(ParseDomainList("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDomainList("clean,sepia").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDomainList("blur,blur").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDomainList("clean,").status().code(), StatusCode::kInvalidArgument);
}

TEST(DomainShiftTest, CleanIsIdentity) { EXPECT_EQ(Shifted(Domain::kClean, Image(0)), Image(0)); }

TEST(DomainShiftTest, InvertedTwiceIsIdentity) {
  const std::vector<uint8_t> once = Shifted(Domain::kInverted, Image(0));
  EXPECT_NE(once, Image(0));
  EXPECT_EQ(once[0], 255 - Image(0)[0]);
  EXPECT_EQ(Shifted(Domain::kInverted, once), Image(0));
}

TEST(DomainShiftTest, Rot90IsClockwiseAndFourTimesIdentity) {
  std::vector<uint8_t> grid(4 * 4);
  for (int i = 0; i < 16; ++i) grid[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(ApplyDomainShift(Domain::kRot90, 0, 4, 4, grid).ok());
  // The top row 0 1 2 3 becomes the right column, read top to bottom.
  EXPECT_EQ(grid[3], 0);
  EXPECT_EQ(grid[7], 1);
  EXPECT_EQ(grid[15], 3);
  EXPECT_EQ(grid[0], 12);  // the bottom-left corner moves to the top left

  std::vector<uint8_t> image = Image(1);
  for (int turn = 1; turn <= 4; ++turn) {
    image = Shifted(Domain::kRot90, image);
    if (turn < 4) {
      EXPECT_NE(image, Image(1)) << turn;
    }
  }
  EXPECT_EQ(image, Image(1));
}

TEST(DomainShiftTest, Rot90NeedsSquareImages) {
  std::vector<uint8_t> image(6);
  EXPECT_EQ(ApplyDomainShift(Domain::kRot90, 0, 2, 3, image).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyDomainShift(Domain::kBlur, 0, 2, 2, image).code(), StatusCode::kInvalidArgument);
}

TEST(DomainShiftTest, BlurKeepsMeanAndLowersTotalVariation) {
  for (int64_t i : {0, 1, 2, 100, 5000}) {
    const std::vector<uint8_t> blurred = Shifted(Domain::kBlur, Image(i));
    EXPECT_NEAR(Mean(blurred), Mean(Image(i)), 0.03 * Mean(Image(i)) + 0.5) << i;
    EXPECT_LT(TotalVariation(blurred), 0.8 * TotalVariation(Image(i))) << i;
  }
}

TEST(DomainShiftTest, NoiseIsReproducibleAndInRange) {
  const std::vector<uint8_t> a = Shifted(Domain::kNoise, Image(3), 11);
  EXPECT_EQ(Shifted(Domain::kNoise, Image(3), 11), a);
  EXPECT_NE(Shifted(Domain::kNoise, Image(3), 12), a);
  int changed = 0;
  double sq = 0;
  for (size_t p = 0; p < a.size(); ++p) {
    changed += a[p] != Image(3)[p];
    const double diff = static_cast<double>(a[p]) - Image(3)[p];
    sq += diff * diff;
  }
  EXPECT_GT(changed, static_cast<int>(a.size() / 2));
  // Clamping only shrinks the deviations, so their RMS is below sigma = 64 but far
  // from zero.
  const double rms = std::sqrt(sq / a.size());
  EXPECT_GT(rms, 20);
  EXPECT_LT(rms, 64);
  EXPECT_NE(ShiftSeed(1, 0), ShiftSeed(1, 1));
  EXPECT_NE(ShiftSeed(1, 0), ShiftSeed(2, 0));
}

ShiftedSplitOptions SplitOptions(uint64_t seed) {
  ShiftedSplitOptions o;
  o.num_clients = 10;
  o.seed = seed;
  return o;
}

TEST(DomainShiftTest, SplitCoversTheFederatedRangeOnce) {
  const ImageDataset& train = FashionMnist(DatasetSplit::kTrain);
  Result<ShiftedSplit> split = BuildShiftedSplit(train, SplitOptions(5));
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  ASSERT_EQ(split->images.size(), 30000);
  ASSERT_EQ(split->domain.size(), 30000u);
  std::vector<int> seen(30000, 0);
  for (const std::vector<int64_t>& client : split->clients) {
    for (int64_t j : client) ++seen.at(j);
  }
  for (int j = 0; j < 30000; ++j) ASSERT_EQ(seen[j], 1) << j;
  // Example j is train image 30000 + j under its domain.
  for (int64_t j : {0, 1, 777, 29999}) {
    EXPECT_EQ(split->images.labels[j], train.labels[30000 + j]);
    std::vector<uint8_t> expected = Image(30000 + j);
    ASSERT_TRUE(ApplyDomainShift(split->domain[j], ShiftSeed(5, 30000 + j), 28, 28, expected).ok());
    EXPECT_EQ(std::vector<uint8_t>(split->images.image(j), split->images.image(j) + 784), expected);
  }
}

TEST(DomainShiftTest, EachClientHoldsItsDomainsBalanced) {
  Result<ShiftedSplit> split =
      BuildShiftedSplit(FashionMnist(DatasetSplit::kTrain), SplitOptions(5));
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  std::map<Domain, int> clients_per_domain;
  std::set<std::vector<Domain>> mixes;
  for (size_t c = 0; c < split->clients.size(); ++c) {
    std::map<Domain, int> counts;
    for (int64_t j : split->clients[c]) ++counts[split->domain[j]];
    EXPECT_EQ(counts.size(), 3u) << "client " << c;
    std::set<Domain> declared(split->client_domains[c].begin(), split->client_domains[c].end());
    EXPECT_EQ(declared.size(), 3u);
    for (auto [d, n] : counts) {
      EXPECT_TRUE(declared.count(d)) << "client " << c;
      // Round-robin over the client's examples: near-equal shares.
      EXPECT_LE(std::abs(n - static_cast<int>(split->clients[c].size() / 3)), 1);
      ++clients_per_domain[d];
    }
    mixes.insert(std::vector<Domain>(declared.begin(), declared.end()));
  }
  // 10 clients x 3 domains over 5 domains: each held by exactly 6 clients.
  ASSERT_EQ(clients_per_domain.size(), 5u);
  for (auto [d, n] : clients_per_domain) EXPECT_EQ(n, 6) << DomainName(d);
  EXPECT_GT(mixes.size(), 1u);
}

TEST(DomainShiftTest, SameSeedSameSplit) {
  const ImageDataset& train = FashionMnist(DatasetSplit::kTrain);
  ShiftedSplitOptions o = SplitOptions(9);
  o.end = 36000;  // a smaller range keeps the test quick
  Result<ShiftedSplit> a = BuildShiftedSplit(train, o);
  Result<ShiftedSplit> b = BuildShiftedSplit(train, o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->clients, b->clients);
  EXPECT_EQ(a->domain, b->domain);
  EXPECT_EQ(a->client_domains, b->client_domains);
  EXPECT_EQ(a->images.images, b->images.images);
  o.seed = 10;
  Result<ShiftedSplit> c = BuildShiftedSplit(train, o);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->clients, c->clients);
  EXPECT_NE(a->domain, c->domain);
}

TEST(DomainShiftTest, SplitRejectsBadOptions) {
  const ImageDataset& train = FashionMnist(DatasetSplit::kTrain);
  ShiftedSplitOptions o = SplitOptions(1);
  o.domains_per_client = 6;
  EXPECT_EQ(BuildShiftedSplit(train, o).status().code(), StatusCode::kInvalidArgument);
  o = SplitOptions(1);
  o.domains_per_client = 0;
  EXPECT_EQ(BuildShiftedSplit(train, o).status().code(), StatusCode::kInvalidArgument);
  o = SplitOptions(1);
  o.end = 70000;
  EXPECT_EQ(BuildShiftedSplit(train, o).status().code(), StatusCode::kInvalidArgument);
  o = SplitOptions(1);
  o.begin = 30000;
  o.end = 30005;  // 5 examples for 10 clients
  EXPECT_EQ(BuildShiftedSplit(train, o).status().code(), StatusCode::kInvalidArgument);
}

TEST(DomainShiftTest, TestSetCyclesDomains) {
  const ImageDataset& test = FashionMnist(DatasetSplit::kTest);
  const std::vector<Domain> all = AllDomains();
  Result<ShiftedTestSet> shifted = BuildShiftedTestSet(test, all, 3);
  ASSERT_TRUE(shifted.ok()) << shifted.status().ToString();
  ASSERT_EQ(shifted->images.size(), 10000);
  std::map<Domain, int> counts;
  for (int64_t i = 0; i < 10000; ++i) {
    EXPECT_EQ(shifted->domain[i], all[i % 5]);
    ++counts[shifted->domain[i]];
  }
  for (auto [d, n] : counts) EXPECT_EQ(n, 2000) << DomainName(d);
  EXPECT_EQ(shifted->images.labels, test.labels);
  // Image 1 is inverted, image 0 clean.
  EXPECT_EQ(std::vector<uint8_t>(shifted->images.image(0), shifted->images.image(0) + 784),
            std::vector<uint8_t>(test.image(0), test.image(0) + 784));
  EXPECT_EQ(shifted->images.image(1)[0], 255 - test.image(1)[0]);
  Result<ShiftedTestSet> again = BuildShiftedTestSet(test, all, 3);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->images.images, shifted->images.images);
}

}  // namespace
}  // namespace fl::internal
