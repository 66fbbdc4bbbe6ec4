// Block plans, seed pools, basis selection and coefficient tables of the Ferret codec.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "codec/dense_codec.h"
#include "codec/ferret/basis.h"
#include "codec/ferret/block_plan.h"
#include "codec/dense_codec.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"

namespace fl::internal::ferret {
namespace {

using ::testing::HasSubstr;

Layout MakeLayout(const std::vector<int64_t>& sizes) {
  Layout layout;
  for (size_t i = 0; i < sizes.size(); ++i) layout.Add(std::to_string(i) + "t", {sizes[i]});
  return layout;
}

std::vector<size_t> BlockSizes(const BlockPlan& plan) {
  std::vector<size_t> sizes;
  size_t expected_offset = 0;
  for (const Block& b : plan.blocks()) {
    EXPECT_EQ(b.offset, expected_offset);
    expected_offset += b.size;
    sizes.push_back(b.size);
  }
  EXPECT_EQ(expected_offset, plan.total_size());
  return sizes;
}

TEST(BlockPlanTest, ReferenceRuleOnATransformerLikeLayout) {
  // embedding, ln w/b, qkv, proj, ln w/b, fc1, fc2, head. Sorted sizes: 10 x4, 100, 300,
  // 400, 400, 1000, 1000 -> median (100 + 300) / 2 = 200 -> target 180.
  const Layout layout = MakeLayout({1000, 10, 10, 300, 100, 10, 10, 400, 400, 1000});
  const BlockPlan plan = BlockPlan::Reference(layout);
  EXPECT_EQ(plan.kind(), BlockPlanKind::kReference);
  EXPECT_EQ(plan.target_size(), 180u);
  EXPECT_EQ(BlockSizes(plan), (std::vector<size_t>{1000, 20, 300, 120, 400, 400, 1000}));
  EXPECT_EQ(plan.layout_hash(), layout.hash());
}

TEST(BlockPlanTest, ReferenceRuleOddCountAndPacking) {
  // Sorted 3, 5, 7, 50, 60 -> median 7 -> target floor(6.3) = 6: 3 alone (3 + 5 > 6),
  // 5, 7 (> target, alone), 50, 60.
  EXPECT_EQ(BlockSizes(BlockPlan::Reference(MakeLayout({3, 5, 7, 50, 60}))),
            (std::vector<size_t>{3, 5, 7, 50, 60}));
  // Sorted 2, 2, 2, 2, 40, 40, 40 -> median 2 -> target 1: every tensor alone.
  EXPECT_EQ(BlockSizes(BlockPlan::Reference(MakeLayout({40, 2, 2, 40, 2, 2, 40}))),
            (std::vector<size_t>{40, 2, 2, 40, 2, 2, 40}));
  const BlockPlan single = BlockPlan::Reference(MakeLayout({12345}));
  EXPECT_EQ(BlockSizes(single), (std::vector<size_t>{12345}));
  // Many small tensors around few big ones: target = 0.9 * 100 = 90 packs the 30s by 3.
  EXPECT_EQ(BlockSizes(BlockPlan::Reference(MakeLayout({30, 30, 30, 30, 100, 100, 100, 500, 500}))),
            (std::vector<size_t>{90, 30, 100, 100, 100, 500, 500}));
}

TEST(BlockPlanTest, ZeroSizeTensorsLeaveNoEmptyBlocks) {
  const BlockPlan plan = BlockPlan::Reference(MakeLayout({0, 50, 0, 0, 50, 0}));
  for (const Block& b : plan.blocks()) EXPECT_GT(b.size, 0u);
  EXPECT_EQ(plan.total_size(), 100u);
  EXPECT_EQ(BlockPlan::Reference(Layout()).num_blocks(), 0u);
}

TEST(BlockPlanTest, FixedSizeAndHashes) {
  const Layout layout = MakeLayout({1000, 10, 10, 300, 100, 10, 10, 400, 400, 1000});
  Result<BlockPlan> fixed = BlockPlan::FixedSize(layout, 1000);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(BlockSizes(*fixed), (std::vector<size_t>{1000, 1000, 1000, 240}));
  EXPECT_EQ(BlockPlan::FixedSize(layout, 0).status().code(), StatusCode::kInvalidArgument);

  const BlockPlan ref = BlockPlan::Reference(layout);
  EXPECT_EQ(ref.hash(), BlockPlan::Reference(layout).hash());
  EXPECT_NE(ref.hash(), fixed->hash());
  EXPECT_NE(fixed->hash(), BlockPlan::FixedSize(layout, 999)->hash());
  // Same sizes, different names: a different model, so a different plan.
  Layout renamed;
  for (const TensorSpec& t : layout.tensors()) renamed.Add(t.name + "x", t.shape);
  EXPECT_NE(ref.hash(), BlockPlan::Reference(renamed).hash());
}

TEST(BasisSpecTest, SeedPoolIsDeterministicDistinctAndPerEpoch) {
  const std::vector<uint64_t> a = MakeSeedPool(7, 0, 200);
  EXPECT_EQ(a, MakeSeedPool(7, 0, 200));
  EXPECT_EQ(std::set<uint64_t>(a.begin(), a.end()).size(), 200u);
  EXPECT_NE(a, MakeSeedPool(7, 1, 200));
  EXPECT_NE(a, MakeSeedPool(8, 0, 200));
  // A prefix property: a smaller pool is the start of a larger one.
  const std::vector<uint64_t> small = MakeSeedPool(7, 0, 10);
  EXPECT_TRUE(std::equal(small.begin(), small.end(), a.begin()));
}

TEST(BasisSpecTest, ValidateAndHash) {
  BasisSpec spec;
  EXPECT_EQ(spec.Validate().code(), StatusCode::kInvalidArgument);  // empty pool
  spec.seeds = {1, 2, 3};
  EXPECT_TRUE(spec.Validate().ok());
  const uint64_t h = spec.Hash();
  spec.seeds = {1, 2, 2};
  EXPECT_EQ(spec.Validate().code(), StatusCode::kInvalidArgument);
  spec.seeds = {1, 2, 3};
  spec.distribution = BasisDistribution::kUniform;
  EXPECT_NE(spec.Hash(), h);
  spec.distribution = static_cast<BasisDistribution>(9);
  EXPECT_EQ(spec.Validate().code(), StatusCode::kInvalidArgument);
  spec.distribution = BasisDistribution::kRademacher;
  spec.amplitude = BasisAmplitude::kInvSqrtDim;
  EXPECT_NE(spec.Hash(), h);
  EXPECT_DOUBLE_EQ(EntryVariance(spec, 400), 1.0 / 400);
  spec.distribution = BasisDistribution::kUniform;
  EXPECT_NEAR(EntryVariance(spec, 400), 1.0 / 1200, 1e-15);  // (1 - 2^-48) / 1200
}

TEST(SelectionTest, AllIndicesWhenTheBudgetCoversThePool) {
  const std::vector<uint32_t> all = SelectBasisIndices(5, 5, 1, 0);
  EXPECT_EQ(all, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(SelectBasisIndices(5, 9, 1, 0), all);
}

TEST(SelectionTest, DrawsWithoutReplacementDeterministicallyAndUniformly) {
  const uint32_t K = 50, n = 10;
  std::vector<int> hits(K, 0);
  const int trials = 4000;
  for (int t = 0; t < trials; ++t) {
    const std::vector<uint32_t> s = SelectBasisIndices(K, n, 1000 + t, 3);
    ASSERT_EQ(s.size(), n);
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    EXPECT_EQ(std::set<uint32_t>(s.begin(), s.end()).size(), n);
    for (uint32_t k : s) {
      ASSERT_LT(k, K);
      ++hits[k];
    }
    EXPECT_EQ(s, SelectBasisIndices(K, n, 1000 + t, 3));
  }
  const double expected = trials * static_cast<double>(n) / K;  // 800, sd ~ 25
  for (uint32_t k = 0; k < K; ++k) EXPECT_NEAR(hits[k], expected, 150) << k;
  EXPECT_NE(SelectBasisIndices(K, n, 5, 0), SelectBasisIndices(K, n, 5, 1));
}

// The shuffle as first written, over a materialized array of all K indices: the O(n)
// implementation must pick exactly the same indices (they are part of the wire format).
std::vector<uint32_t> DenseSelection(uint32_t K, uint32_t n, uint64_t seed, uint32_t block) {
  std::vector<uint32_t> all(K);
  for (uint32_t i = 0; i < K; ++i) all[i] = i;
  const PhiloxStream s = MakePhiloxStream(seed, block, kPhiloxDomainSelection);
  Philox4x32Counter r{};
  for (uint32_t i = 0; i < n; ++i) {
    if (i % 4 == 0) r = s.At(i / 4);
    const uint32_t pick = i + static_cast<uint32_t>((uint64_t{r.v[i % 4]} * (K - i)) >> 32);
    std::swap(all[i], all[pick]);
  }
  all.resize(n);
  std::sort(all.begin(), all.end());
  return all;
}

TEST(SelectionTest, SparseShuffleMatchesTheDenseOneAndScalesWithN) {
  for (uint32_t K : {2u, 7u, 200u, 4096u}) {
    for (uint32_t n : {1u, K / 2, K - 1}) {
      if (n == 0) continue;
      for (uint64_t seed : {0ull, 3ull, 0xfeedfacecafebeefull}) {
        EXPECT_EQ(SelectBasisIndices(K, n, seed, 5), DenseSelection(K, n, seed, 5))
            << K << " " << n << " " << seed;
      }
    }
  }
  // A pool of 2^20 with 3 picks: only the picks are stored.
  const std::vector<uint32_t> few = SelectBasisIndices(kMaxSeeds, 3, 9, 0);
  ASSERT_EQ(few.size(), 3u);
  EXPECT_LT(few.back(), kMaxSeeds);
}

TEST(SelectionTest, BasesPerBlockPolicies) {
  const std::vector<double> norms = {1.0, 0.5, 0.01, 0.0};
  ProjectOptions fixed;
  EXPECT_EQ(BasesPerBlock(norms, 200, fixed), (std::vector<uint32_t>{200, 200, 200, 200}));
  fixed.budget = 30;
  EXPECT_EQ(BasesPerBlock(norms, 200, fixed), (std::vector<uint32_t>{30, 30, 30, 30}));
  fixed.budget = 300;
  EXPECT_EQ(BasesPerBlock(norms, 200, fixed), (std::vector<uint32_t>{200, 200, 200, 200}));

  ProjectOptions prop;
  prop.selection = SelectionPolicy::kProportional;
  EXPECT_EQ(BasesPerBlock(norms, 200, prop), (std::vector<uint32_t>{200, 100, 2, 2}));
  prop.min_per_block = 5;
  prop.budget = 40;
  EXPECT_EQ(BasesPerBlock(norms, 200, prop), (std::vector<uint32_t>{40, 20, 5, 5}));
  EXPECT_EQ(BasesPerBlock(std::vector<double>{0, 0}, 200, prop), (std::vector<uint32_t>{5, 5}));
  prop.min_per_block = 2;
  EXPECT_EQ(BasesPerBlock(std::vector<double>{1.0}, 1, prop), (std::vector<uint32_t>{1}));
}

CoefficientTable SampleTable() {
  CoefficientTable t(0x1122334455667788ull, 0x99aabbccddeeff00ull, 10, 4);
  EXPECT_TRUE(t.Append(0, 1, 1.5f).ok());
  EXPECT_TRUE(t.Append(0, 9, -2.0f).ok());
  EXPECT_TRUE(t.Append(2, 0, 0.25f).ok());
  EXPECT_TRUE(t.Append(3, 4, 3.0f).ok());
  EXPECT_TRUE(t.Append(3, 8, -0.0f).ok());
  return t;
}

TEST(CoefficientTableTest, AppendKeepsOrderAndBounds) {
  CoefficientTable t = SampleTable();
  EXPECT_EQ(t.Append(3, 8, 1.0f).code(), StatusCode::kInvalidArgument);  // duplicate
  EXPECT_EQ(t.Append(2, 9, 1.0f).code(), StatusCode::kInvalidArgument);  // goes back
  EXPECT_EQ(t.Append(4, 0, 1.0f).code(), StatusCode::kInvalidArgument);  // unknown block
  EXPECT_EQ(t.Append(3, 10, 1.0f).code(), StatusCode::kInvalidArgument); // unknown seed
  EXPECT_EQ(t.size(), 5u);
  EXPECT_EQ(t.BlockEntries(0).size(), 2u);
  EXPECT_EQ(t.BlockEntries(1).size(), 0u);
  ASSERT_EQ(t.BlockEntries(3).size(), 2u);
  EXPECT_EQ(t.BlockEntries(3)[1].seed, 8u);
}

TEST(CoefficientTableTest, SerializedLayoutIsLittleEndianWithBitmaps) {
  const std::string bytes = SerializeCoefficientTable(SampleTable());
  // 36-byte header, then 3 records of (4 + 2 bitmap bytes) and 5 values.
  ASSERT_EQ(bytes.size(), 36u + 3 * 6 + 5 * 4);
  EXPECT_EQ(bytes.substr(0, 8), std::string("FLFC\x01\x00\x00\x00", 8));
  EXPECT_EQ(bytes.substr(8, 8), std::string("\x88\x77\x66\x55\x44\x33\x22\x11", 8));
  EXPECT_EQ(bytes.substr(24, 12), std::string("\x0a\0\0\0\x04\0\0\0\x03\0\0\0", 12));
  // Block 0: seeds 1 and 9 -> bitmap 0x02 0x02, then 1.5f and -2.0f.
  EXPECT_EQ(bytes.substr(36, 14),
            std::string("\0\0\0\0\x02\x02\x00\x00\xc0\x3f\x00\x00\x00\xc0", 14));
}

TEST(CoefficientTableTest, RoundTripIsBitExactIncludingNonFinite) {
  CoefficientTable t(1, 2, 300, 1000);
  std::mt19937 rng(5);
  for (uint32_t l = 0; l < 1000; l += 7) {
    for (uint32_t k = l % 3; k < 300; k += 1 + (l % 11)) {
      ASSERT_TRUE(t.Append(l, k, std::normal_distribution<float>()(rng)).ok());
    }
  }
  ASSERT_TRUE(t.Append(999, 299, std::numeric_limits<float>::quiet_NaN()).ok());
  const std::string bytes = SerializeCoefficientTable(t);
  Result<CoefficientTable> back = ParseCoefficientTable(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == t);
  EXPECT_EQ(SerializeCoefficientTable(*back), bytes);
  // An empty table round-trips too.
  CoefficientTable empty(3, 4, 8, 2);
  Result<CoefficientTable> e = ParseCoefficientTable(SerializeCoefficientTable(empty));
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(*e == empty);
}

TEST(CoefficientTableTest, BFloat16ValuesHalveTheValueBytesAndRoundToNearest) {
  const CoefficientTable t = SampleTable();
  const std::string bytes = SerializeCoefficientTable(t, CoefficientTableFormat::kBFloat16);
  // Version 2, the same header and bitmaps, 2 bytes per value.
  ASSERT_EQ(bytes.size(), 36u + 3 * 6 + 5 * 2);
  EXPECT_EQ(bytes.substr(0, 8), std::string("FLFC\x02\x00\x00\x00", 8));
  // Block 0: 1.5f = 0x3fc00000 and -2.0f = 0xc0000000 keep their upper halves.
  EXPECT_EQ(bytes.substr(36, 10), std::string("\0\0\0\0\x02\x02\xc0\x3f\x00\xc0", 10));

  CoefficientTable random(1, 2, 64, 8);
  std::mt19937 rng(3);
  for (uint32_t l = 0; l < 8; ++l) {
    for (uint32_t k = l; k < 64; k += 3) {
      ASSERT_TRUE(random.Append(l, k, std::normal_distribution<float>(0, 1e-6f)(rng)).ok());
    }
  }
  const std::string wire = SerializeCoefficientTable(random, CoefficientTableFormat::kBFloat16);
  Result<CoefficientTable> back = ParseCoefficientTable(wire);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), random.size());
  for (size_t i = 0; i < random.size(); ++i) {
    const float v = random.entries()[i].value;
    const float w = back->entries()[i].value;
    EXPECT_EQ(w, BFloat16ToFloat(FloatToBFloat16(v)));
    // Tiny values keep their relative precision (no underflow as in IEEE half).
    EXPECT_LE(std::fabs(w - v), std::fabs(v) * (1.0f / 256)) << v;
  }
  EXPECT_EQ(SerializeCoefficientTable(*back, CoefficientTableFormat::kBFloat16), wire);
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_FALSE(ParseCoefficientTable(wire.substr(0, n)).ok()) << n;
  }
}

std::string Patched(std::string bytes, size_t at, const std::string& with) {
  bytes.replace(at, with.size(), with);
  return bytes;
}

// A table as a client projects it: block l holds n_l bases drawn from a pool of K with
// `seed`, and values of mixed magnitudes (block 1 all zero).
CoefficientTable SampledTable(uint32_t K, uint64_t seed) {
  CoefficientTable t(7, 8, K, 4);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const uint32_t counts[4] = {5, 3, 0, std::min<uint32_t>(K, 40)};
  for (uint32_t l = 0; l < 4; ++l) {
    if (counts[l] == 0) continue;
    for (uint32_t k : SelectBasisIndices(K, counts[l], seed, l)) {
      const float v = l == 1 ? 0.0f : std::normal_distribution<float>(0, l == 0 ? 1e-5f : 3.0f)(rng);
      EXPECT_TRUE(t.Append(l, k, v).ok());
    }
  }
  return t;
}

TEST(CoefficientTableTest, SampledInt8SendsTheSeedNotTheMapAndOneByteAValue) {
  const uint64_t seed = 0xabcdef0123ull;
  const CoefficientTable t = SampledTable(1u << 20, seed);
  Result<std::string> bytes = SerializeSampledCoefficientTable(t, seed);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  // 36-byte header, the seed, 3 records of 9 bytes, one byte per value: a pool of 2^20
  // bases costs nothing per block (a bitmap would take 128 KiB each).
  EXPECT_EQ(bytes->size(), 36u + 8 + 3 * 9 + t.size());
  EXPECT_EQ(bytes->substr(0, 8), std::string("FLFC\x03\x00\x00\x00", 8));
  Result<CoefficientTable> back = ParseCoefficientTable(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), t.size());
  for (uint32_t l = 0; l < 4; ++l) {
    std::span<const Coefficient> a = t.BlockEntries(l), b = back->BlockEntries(l);
    ASSERT_EQ(a.size(), b.size());
    float max_abs = 0;
    for (const Coefficient& c : a) max_abs = std::max(max_abs, std::fabs(c.value));
    for (size_t j = 0; j < a.size(); ++j) {
      EXPECT_EQ(a[j].seed, b[j].seed);
      // Rounding to 1/127 of the record's largest value at worst (half a step, and the
      // step can be twice max/127 because exponents are powers of two).
      EXPECT_LE(std::fabs(a[j].value - b[j].value), max_abs / 127) << l << " " << j;
    }
  }
  // One encoding: the parsed table serializes to the same bytes.
  Result<std::string> again = SerializeSampledCoefficientTable(*back, seed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *bytes);

  // A table whose seeds were not drawn from the given selection seed is refused.
  Result<std::string> wrong = SerializeSampledCoefficientTable(t, seed + 1);
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("block 0"));
  CoefficientTable huge(1, 2, 10, 1);
  for (uint32_t k : SelectBasisIndices(10, 2, 3, 0)) {
    ASSERT_TRUE(huge.Append(0, k, std::numeric_limits<float>::max()).ok());
  }
  EXPECT_EQ(SerializeSampledCoefficientTable(huge, 3).status().code(),
            StatusCode::kInvalidArgument);
  CoefficientTable nonfinite(1, 2, 10, 1);
  for (uint32_t k : SelectBasisIndices(10, 2, 3, 0)) {
    ASSERT_TRUE(nonfinite.Append(0, k, std::numeric_limits<float>::infinity()).ok());
  }
  EXPECT_EQ(SerializeSampledCoefficientTable(nonfinite, 3).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(CoefficientTableTest, SampledInt4PacksTwoCodesPerByte) {
  const uint64_t seed = 0x5eed;
  const CoefficientTable t = SampledTable(1u << 16, seed);  // records of 5, 3 and 40 values
  Result<std::string> bytes =
      SerializeSampledCoefficientTable(t, seed, CoefficientTableFormat::kSampledInt4);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(bytes->size(), 36u + 8 + 3 * 9 + 3 + 2 + 20);
  EXPECT_EQ(bytes->substr(0, 8), std::string("FLFC\x04\x00\x00\x00", 8));
  Result<CoefficientTable> back = ParseCoefficientTable(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), t.size());
  for (uint32_t l = 0; l < 4; ++l) {
    std::span<const Coefficient> a = t.BlockEntries(l), b = back->BlockEntries(l);
    float max_abs = 0;
    for (const Coefficient& c : a) max_abs = std::max(max_abs, std::fabs(c.value));
    for (size_t j = 0; j < a.size(); ++j) {
      EXPECT_EQ(a[j].seed, b[j].seed);
      EXPECT_LE(std::fabs(a[j].value - b[j].value), max_abs / 7) << l << " " << j;
    }
  }
  Result<std::string> again =
      SerializeSampledCoefficientTable(*back, seed, CoefficientTableFormat::kSampledInt4);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *bytes);
  EXPECT_EQ(SerializeSampledCoefficientTable(t, seed, CoefficientTableFormat::kBFloat16)
                .status()
                .code(),
            StatusCode::kInvalidArgument);

  auto status = [](const std::string& b) { return ParseCoefficientTable(b).status(); };
  // Record 0 (5 codes in 3 bytes at 53..55): the code -8, and a non-zero padding nibble.
  std::string minus8 = *bytes;
  minus8[53] = static_cast<char>((static_cast<unsigned char>(minus8[53]) & 0xf0u) | 0x8u);
  EXPECT_THAT(status(minus8).message(), HasSubstr("-8"));
  std::string padded = *bytes;
  padded[55] = static_cast<char>(padded[55] | 0x10);
  EXPECT_THAT(status(padded).message(), HasSubstr("padding nibble"));
  for (size_t n = 0; n < bytes->size(); ++n) {
    EXPECT_FALSE(ParseCoefficientTable(bytes->substr(0, n)).ok()) << n;
  }
}

TEST(CoefficientTableTest, SampledInt8MalformedRecordsAreRejectedPrecisely) {
  const uint64_t seed = 99;
  const CoefficientTable t = SampledTable(64, seed);
  Result<std::string> good = SerializeSampledCoefficientTable(t, seed);
  ASSERT_TRUE(good.ok());
  auto status = [](const std::string& b) { return ParseCoefficientTable(b).status(); };
  // Record 0 starts at 44: u32 block, u32 n, i8 exponent, 5 values.
  EXPECT_THAT(status(Patched(*good, 48, std::string("\0\0\0\0", 4))).message(),
              HasSubstr("samples 0 of 64"));
  EXPECT_THAT(status(Patched(*good, 48, std::string("\x41\0\0\0", 4))).message(),
              HasSubstr("samples 65 of 64"));
  // The last record (block 3, 40 values, n at 74) claims one value more than the input
  // holds: truncated, found before drawing any index.
  EXPECT_EQ(status(Patched(*good, 74, std::string("\x29\0\0\0", 4))).code(),
            StatusCode::kDataLoss);
  // An exponent whose values overflow float.
  EXPECT_THAT(status(Patched(*good, 52, "\x7f")).message(), HasSubstr("overflows float"));
  EXPECT_THAT(status(Patched(*good, 53, "\x80")).message(), HasSubstr("-128"));
  // Exponent one higher than needed: every |q| would be below 64.
  const int8_t exponent = static_cast<int8_t>((*good)[52]);
  std::string halved = *good;
  halved[52] = static_cast<char>(exponent + 1);
  for (int j = 0; j < 5; ++j) halved[53 + j] = static_cast<char>(static_cast<int8_t>(halved[53 + j]) / 2);
  EXPECT_THAT(status(halved).message(), HasSubstr("non-minimal exponent"));
  // The all-zero record of block 1 must use the smallest exponent.
  const size_t zero_record = 44 + 9 + 5;
  EXPECT_EQ(static_cast<int8_t>((*good)[zero_record + 8]), -128);
  EXPECT_THAT(status(Patched(*good, zero_record + 8, "\x05")).message(),
              HasSubstr("non-minimal exponent"));
  EXPECT_EQ(status(*good + "x").code(), StatusCode::kDataLoss);
  for (size_t n = 0; n < good->size(); ++n) {
    EXPECT_FALSE(ParseCoefficientTable(good->substr(0, n)).ok()) << n;
  }
  // Random corruption never crashes, and whatever parses has one encoding.
  std::mt19937 rng(4);
  for (int trial = 0; trial < 20000; ++trial) {
    std::string b = *good;
    for (int f = 0; f < 1 + trial % 3; ++f) b[44 + rng() % (b.size() - 44)] = static_cast<char>(rng());
    Result<CoefficientTable> r = ParseCoefficientTable(b);
    if (!r.ok()) continue;
    uint64_t s = 0;
    for (int i = 0; i < 8; ++i) s |= uint64_t{static_cast<unsigned char>(b[36 + i])} << (8 * i);
    Result<std::string> again = SerializeSampledCoefficientTable(*r, s);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, b);
  }
}

TEST(CoefficientTableTest, EveryTruncationIsDataLossOrInvalid) {
  const std::string bytes = SerializeCoefficientTable(SampleTable());
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<CoefficientTable> r = ParseCoefficientTable(bytes.substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    const StatusCode c = r.status().code();
    EXPECT_TRUE(c == StatusCode::kDataLoss || c == StatusCode::kInvalidArgument) << n;
  }
  EXPECT_EQ(ParseCoefficientTable(bytes + "x").status().code(), StatusCode::kDataLoss);
}


TEST(CoefficientTableTest, MalformedFieldsAreRejectedPrecisely) {
  const std::string good = SerializeCoefficientTable(SampleTable());
  auto code = [](const std::string& b) { return ParseCoefficientTable(b).status().code(); };
  EXPECT_EQ(code(Patched(good, 0, "FLFX")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 4, std::string("\x03\0\0\0", 4))), StatusCode::kInvalidArgument);
  // K = 0, K absurd, L absurd.
  EXPECT_EQ(code(Patched(good, 24, std::string("\0\0\0\0", 4))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 24, std::string("\xff\xff\xff\x7f", 4))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 28, std::string("\xff\xff\xff\x7f", 4))), StatusCode::kInvalidArgument);
  // More records than blocks; a record count the bytes cannot hold.
  EXPECT_EQ(code(Patched(good, 32, std::string("\x05\0\0\0", 4))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 32, std::string("\x04\0\0\0", 4))), StatusCode::kDataLoss);
  // Record 1 names block 7 (L = 4); record 1 goes back to block 0.
  EXPECT_EQ(code(Patched(good, 50, std::string("\x07\0\0\0", 4))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 50, std::string("\0\0\0\0", 4))), StatusCode::kInvalidArgument);
  // A bit at k = 10 >= K; an empty bitmap.
  EXPECT_EQ(code(Patched(good, 41, "\x06")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Patched(good, 40, std::string("\0\0", 2))), StatusCode::kInvalidArgument);
}

TEST(CoefficientTableTest, RandomCorruptionNeverCrashes) {
  const std::string good = SerializeCoefficientTable(SampleTable());
  std::mt19937 rng(11);
  int parsed = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string b = good;
    const int flips = 1 + trial % 4;
    for (int f = 0; f < flips; ++f) {
      b[rng() % b.size()] = static_cast<char>(rng());
    }
    if (trial % 5 == 0) b.resize(rng() % (b.size() + 1));
    Result<CoefficientTable> r = ParseCoefficientTable(b);
    if (r.ok()) {
      ++parsed;
      // Whatever parses re-serializes to the same bytes: one encoding per table and
      // value format (a flipped version byte may turn float32 values into bfloat16).
      EXPECT_EQ(SerializeCoefficientTable(*r, static_cast<CoefficientTableFormat>(b[4])), b);
    }
  }
  EXPECT_GT(parsed, 0);  // value-only corruption still parses
}

TEST(CoefficientTableTest, ValidateNamesTheProblem) {
  const CoefficientTable t = SampleTable();
  const uint64_t plan = t.plan_hash(), basis = t.basis_hash();
  EXPECT_TRUE(ValidateCoefficientTable(t, plan, basis, 10, 4).ok());
  EXPECT_EQ(ValidateCoefficientTable(t, plan + 1, basis, 10, 4).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(ValidateCoefficientTable(t, plan, basis + 1, 10, 4).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(ValidateCoefficientTable(t, plan, basis, 9, 4).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCoefficientTable(t, plan, basis, 10, 5).code(), StatusCode::kInvalidArgument);
  CoefficientTable bad(plan, basis, 10, 4);
  ASSERT_TRUE(bad.Append(1, 3, 1.0f).ok());
  ASSERT_TRUE(bad.Append(2, 7, std::numeric_limits<float>::infinity()).ok());
  const Status s = ValidateCoefficientTable(bad, plan, basis, 10, 4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("block 2 seed 7"), std::string::npos) << s.ToString();
}

TEST(CoefficientAccumulatorTest, WeightedSumInCoefficientSpace) {
  CoefficientTable a(1, 2, 4, 2), b(1, 2, 4, 2);
  ASSERT_TRUE(a.Append(0, 0, 1.0f).ok());
  ASSERT_TRUE(a.Append(1, 3, 2.0f).ok());
  ASSERT_TRUE(b.Append(0, 0, 3.0f).ok());
  ASSERT_TRUE(b.Append(0, 2, -1.0f).ok());
  CoefficientAccumulator acc(1, 2, 4, 2);
  ASSERT_TRUE(acc.Add(a, 1.0).ok());
  ASSERT_TRUE(acc.Add(b, 3.0).ok());
  EXPECT_EQ(acc.num_added(), 2u);
  EXPECT_DOUBLE_EQ(acc.total_weight(), 4.0);
  Result<CoefficientTable> mean = acc.ToTable(1.0 / acc.total_weight());
  ASSERT_TRUE(mean.ok());
  ASSERT_EQ(mean->size(), 3u);  // (0,0), (0,2), (1,3); seeds nobody used stay absent
  EXPECT_FLOAT_EQ(mean->entries()[0].value, (1.0f + 9.0f) / 4);
  EXPECT_EQ(mean->entries()[1].seed, 2u);
  EXPECT_FLOAT_EQ(mean->entries()[1].value, -3.0f / 4);
  EXPECT_FLOAT_EQ(mean->entries()[2].value, 2.0f / 4);

  // Merge equals sequential adds.
  CoefficientAccumulator left(1, 2, 4, 2), right(1, 2, 4, 2);
  ASSERT_TRUE(left.Add(a, 1.0).ok());
  ASSERT_TRUE(right.Add(b, 3.0).ok());
  ASSERT_TRUE(left.MergeWith(right).ok());
  EXPECT_TRUE(*left.ToTable(0.25) == *mean);

  const std::vector<CoefficientTable> tables = {a, b};
  const std::vector<double> weights = {0.25, 0.75};
  Result<CoefficientTable> ws = WeightedSum(tables, weights);
  ASSERT_TRUE(ws.ok());
  EXPECT_TRUE(*ws == *mean);
}

TEST(CoefficientAccumulatorTest, RejectionsLeaveItUnchanged) {
  CoefficientTable a(1, 2, 4, 2);
  ASSERT_TRUE(a.Append(0, 0, 1.0f).ok());
  CoefficientAccumulator acc(1, 2, 4, 2);
  ASSERT_TRUE(acc.Add(a, 2.0).ok());
  CoefficientTable other_plan(9, 2, 4, 2);
  EXPECT_EQ(acc.Add(other_plan, 1.0).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(acc.Add(a, std::numeric_limits<double>::quiet_NaN()).code(),
            StatusCode::kInvalidArgument);
  CoefficientTable nan(1, 2, 4, 2);
  ASSERT_TRUE(nan.Append(0, 1, 1.0f).ok());
  ASSERT_TRUE(nan.Append(1, 1, std::numeric_limits<float>::quiet_NaN()).ok());
  EXPECT_EQ(acc.Add(nan, 1.0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.num_added(), 1u);
  EXPECT_EQ(acc.num_entries(), 1u);
  EXPECT_DOUBLE_EQ(acc.total_weight(), 2.0);
  CoefficientAccumulator other(1, 3, 4, 2);
  EXPECT_EQ(acc.MergeWith(other).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(acc.ToTable(1e300).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fl::internal::ferret
