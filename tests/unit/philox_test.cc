#include "rng/philox.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "codec/ferret/kernels.h"

namespace fl::internal {
namespace {

struct KnownAnswer {
  Philox4x32Counter ctr;
  Philox4x32Key key;
  uint32_t expected[4];
};

// Random123 kat_vectors, philox4x32 with 10 rounds.
TEST(PhiloxTest, Random123KnownAnswers) {
  const KnownAnswer cases[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {{0xffffffff, 0xffffffff}},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {{0xa4093822, 0x299f31d0}},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const KnownAnswer& c : cases) {
    const Philox4x32Counter out = Philox4x32_10(c.ctr, c.key);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(out.v[i], c.expected[i]) << "word " << i << " of ctr " << std::hex << c.ctr.v[0];
    }
  }
}

TEST(PhiloxTest, StreamPutsIndexBlockAndDomainInTheCounter) {
  const uint64_t seed = 0x0123456789abcdefull;
  const PhiloxStream s = MakePhiloxStream(seed, 7, kPhiloxDomainSelection);
  const uint64_t index = 0x00000005deadbeefull;
  const Philox4x32Counter got = s.At(index);
  const Philox4x32Counter want = Philox4x32_10(
      {{0xdeadbeef, 0x5, 7, kPhiloxDomainSelection}}, {{0x89abcdef, 0x01234567}});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], want.v[i]);
  // Neighbouring streams differ.
  const Philox4x32Counter other_block = MakePhiloxStream(seed, 8, kPhiloxDomainSelection).At(index);
  const Philox4x32Counter other_domain = MakePhiloxStream(seed, 7, kPhiloxDomainBasis).At(index);
  EXPECT_NE(got.v[0], other_block.v[0]);
  EXPECT_NE(got.v[0], other_domain.v[0]);
}

TEST(PhiloxTest, RademacherUsesOneBitPerEntry) {
  const PhiloxStream s = MakePhiloxStream(42, 3, kPhiloxDomainBasis);
  for (uint64_t call = 0; call < 4; ++call) {
    const Philox4x32Counter r = s.At(call);
    for (uint64_t e = 0; e < 128; ++e) {
      const uint64_t j = call * 128 + e;
      const bool bit = (r.v[e / 32] >> (e % 32)) & 1u;
      EXPECT_EQ(BasisEntry(s, BasisDistribution::kRademacher, j), bit ? -1.0f : 1.0f) << j;
    }
  }
}

TEST(PhiloxTest, UniformIsTheOddGridInsideMinusOneOne) {
  EXPECT_EQ(UniformFromWord(0x00000000u), -1.0f + 0x1p-24f);
  EXPECT_EQ(UniformFromWord(0xffffffffu), 1.0f - 0x1p-24f);
  EXPECT_EQ(UniformFromWord(0x7fffff00u), -0x1p-24f);
  EXPECT_EQ(UniformFromWord(0x80000000u), 0x1p-24f);
  // The mapping ignores the low 8 bits and is symmetric: w and ~w give opposite values.
  for (uint32_t w : {0x12345678u, 0xdeadbeefu, 0x00000100u}) {
    EXPECT_EQ(UniformFromWord(w), UniformFromWord(w | 0xffu));
    EXPECT_EQ(UniformFromWord(w), -UniformFromWord(~w));
  }
  EXPECT_EQ(UniformSquareFixed(0u), uint64_t{16777215} * 16777215);
}

TEST(PhiloxTest, QuadAndEntryAgreeForEveryDistribution) {
  const PhiloxStream s = MakePhiloxStream(99, 11, kPhiloxDomainBasis);
  for (BasisDistribution d : {BasisDistribution::kRademacher, BasisDistribution::kUniform,
                              BasisDistribution::kGaussian}) {
    for (uint64_t q = 0; q < 300; ++q) {
      float quad[4];
      BasisQuad(s, d, q, quad);
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(std::bit_cast<uint32_t>(quad[i]),
                  std::bit_cast<uint32_t>(BasisEntry(s, d, 4 * q + i)));
      }
    }
  }
}

struct Moments {
  double mean = 0, var = 0, kurtosis = 0, frac_beyond_2 = 0, max_abs = 0;
};

Moments Measure(BasisDistribution d, size_t n) {
  std::vector<float> v(n);
  ferret::CpuGenerateBasis(d, 0x5eed, 1, 0, v);
  double s1 = 0;
  for (float x : v) s1 += x;
  Moments m;
  m.mean = s1 / n;
  double s2 = 0, s4 = 0;
  size_t beyond = 0;
  for (float x : v) {
    const double c = x - m.mean;
    s2 += c * c;
    s4 += c * c * c * c;
    beyond += std::fabs(x) > 2.0;
    m.max_abs = std::max(m.max_abs, static_cast<double>(std::fabs(x)));
  }
  m.var = s2 / n;
  m.kurtosis = (s4 / n) / (m.var * m.var);
  m.frac_beyond_2 = static_cast<double>(beyond) / n;
  return m;
}

// Tolerances are about 5 standard errors for n = 2^20 samples.
TEST(PhiloxTest, DistributionMoments) {
  const size_t n = size_t{1} << 20;
  const double se = 1.0 / std::sqrt(static_cast<double>(n));

  const Moments r = Measure(BasisDistribution::kRademacher, n);
  EXPECT_NEAR(r.mean, 0.0, 5 * se);
  EXPECT_NEAR(r.var, 1.0, 1e-9 + r.mean * r.mean);
  EXPECT_EQ(r.max_abs, 1.0);

  const Moments u = Measure(BasisDistribution::kUniform, n);
  EXPECT_NEAR(u.mean, 0.0, 5 * se * std::sqrt(1.0 / 3));
  EXPECT_NEAR(u.var, 1.0 / 3, 5 * se * 0.3);
  EXPECT_NEAR(u.kurtosis, 1.8, 0.01);
  EXPECT_LT(u.max_abs, 1.0);

  const Moments g = Measure(BasisDistribution::kGaussian, n);
  EXPECT_NEAR(g.mean, 0.0, 5 * se);
  EXPECT_NEAR(g.var, 1.0, 5 * se * std::sqrt(2.0));
  EXPECT_NEAR(g.kurtosis, 3.0, 0.05);
  EXPECT_NEAR(g.frac_beyond_2, 0.0455, 0.0015);
  EXPECT_LE(g.max_abs, 5.8);
}

TEST(PhiloxTest, RademacherSignsAreBalancedPerBitPosition) {
  // Each of the 128 positions within a call should be +1 about half the time.
  const PhiloxStream s = MakePhiloxStream(1234, 0, kPhiloxDomainBasis);
  const int calls = 20000;
  std::vector<int> ones(128, 0);
  for (int c = 0; c < calls; ++c) {
    for (int e = 0; e < 128; ++e) {
      ones[e] += BasisEntry(s, BasisDistribution::kRademacher, 128ull * c + e) > 0;
    }
  }
  for (int e = 0; e < 128; ++e) EXPECT_NEAR(ones[e], calls / 2, 5 * std::sqrt(calls / 4.0)) << e;
}

// Box-Muller against double precision on the same 24-bit inputs: the float pipeline is
// accurate to a few units in the last place of the radius.
TEST(PhiloxTest, GaussianMatchesDoublePrecisionBoxMuller) {
  const PhiloxStream s = MakePhiloxStream(777, 5, kPhiloxDomainBasis);
  double worst = 0;
  for (uint64_t call = 0; call < 50000; ++call) {
    const Philox4x32Counter r = s.At(call);
    for (int pair = 0; pair < 2; ++pair) {
      const uint32_t a = r.v[2 * pair], b = r.v[2 * pair + 1];
      float z0, z1;
      GaussianPairFromWords(a, b, &z0, &z1);
      const double u1 = ((a >> 8) + 1.0) * 0x1p-24;
      const double angle = 2 * M_PI * ((b >> 8) + 0.5) * 0x1p-24;
      const double radius = std::sqrt(-2 * std::log(u1));
      const double ulp = std::max(std::ldexp(1.0, std::ilogb(std::max(radius, 1e-3)) - 23), 1e-12);
      worst = std::max(worst, std::fabs(z0 - radius * std::cos(angle)) / ulp);
      worst = std::max(worst, std::fabs(z1 - radius * std::sin(angle)) / ulp);
    }
  }
  EXPECT_LT(worst, 4.0) << "error in units of the radius's last place";
}

TEST(PhiloxTest, LogUnitIsAccurate) {
  double worst = 0;
  for (uint32_t k = 0; k < (1u << 24); k += 997) {
    const float u = static_cast<float>(k + 1) * 0x1p-24f;
    const double want = std::log(static_cast<double>(u));
    const double got = PhiloxLogUnit(u);
    const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(want), 1e-30)) - 23);
    if (want != 0) worst = std::max(worst, std::fabs(got - want) / ulp);
  }
  EXPECT_EQ(PhiloxLogUnit(1.0f), 0.0f);
  EXPECT_LT(worst, 2.0);
}

}  // namespace
}  // namespace fl::internal
