#include "codec/dense_codec.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace fl::internal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(DenseCodecTest, Sizes) {
  EXPECT_EQ(DenseEncodedSize(10, Encoding::kDenseF32), 40u);
  EXPECT_EQ(DenseEncodedSize(10, Encoding::kDenseF16), 20u);
  EXPECT_EQ(DenseEncodedSize(10, Encoding::kDenseBF16), 20u);
  EXPECT_EQ(DenseEncodedSize(10, Encoding::kFerret), 0u);
  EXPECT_TRUE(IsDenseEncoding(Encoding::kDenseBF16));
  EXPECT_FALSE(IsDenseEncoding(Encoding::kNamedSubset));
}

TEST(DenseCodecTest, F32RoundTripIsExactAndLittleEndian) {
  std::vector<float> v = RandomValues(3001, 1);
  v[0] = 1.0f;
  std::string bytes;
  ASSERT_TRUE(EncodeDense(v, Encoding::kDenseF32, &bytes).ok());
  ASSERT_EQ(bytes.size(), 3001u * 4);
  EXPECT_EQ(bytes.substr(0, 4), std::string("\x00\x00\x80\x3f", 4));
  std::vector<float> out(v.size());
  ASSERT_TRUE(DecodeDense(bytes, Encoding::kDenseF32, out).ok());
  EXPECT_EQ(out, v);
}

TEST(DenseCodecTest, F16KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);          // largest finite half
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);          // below the midpoint
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);          // midpoint ties to even = inf
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (0)
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // tie 1.5 -> 2
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 ulp -> 1
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie to even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);      // tie to even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  EXPECT_EQ(FloatToHalf(kInf), 0x7c00);
  EXPECT_EQ(FloatToHalf(-kInf), 0xfc00);
  uint16_t nan = FloatToHalf(std::nanf(""));
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // A NaN whose payload lives only in low float bits must stay NaN.
  uint16_t low_nan = FloatToHalf(std::bit_cast<float>(0x7f800001u));
  EXPECT_EQ(low_nan & 0x7c00, 0x7c00);
  EXPECT_NE(low_nan & 0x03ff, 0);

  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xfc00), -kInf);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
}

TEST(DenseCodecTest, F16EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = HalfToFloat(static_cast<uint16_t>(h));
    bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0;
    ASSERT_EQ(std::isnan(f), is_nan) << h;
    if (!is_nan) {
      ASSERT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

TEST(DenseCodecTest, F16RoundsToNearest) {
  // For random floats in half range, the half result is the nearest representable one.
  std::vector<float> v = RandomValues(20000, 2);
  for (float x : v) {
    uint16_t h = FloatToHalf(x);
    float y = HalfToFloat(h);
    float up = HalfToFloat(static_cast<uint16_t>(h + 1));
    float down = HalfToFloat(static_cast<uint16_t>(h - 1));
    if ((h & 0x7fff) != 0 && (h & 0x7fff) != 0x7bff) {
      ASSERT_LE(std::fabs(x - y), std::fabs(x - up)) << x;
      ASSERT_LE(std::fabs(x - y), std::fabs(x - down)) << x;
    }
  }
}

TEST(DenseCodecTest, BF16KnownValuesAndTies) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);  // overflows to inf
  EXPECT_EQ(FloatToBFloat16(-kInf), 0xff80);
  uint16_t nan = FloatToBFloat16(std::bit_cast<float>(0x7f800001u));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(nan)));
  EXPECT_EQ(BFloat16ToFloat(0x4049), std::bit_cast<float>(0x40490000u));
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = BFloat16ToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBFloat16(f), h);
    }
  }
}

TEST(DenseCodecTest, NarrowRoundTripsMatchScalarConversions) {
  std::vector<float> v = RandomValues(5000, 3);
  v[10] = kInf;
  v[11] = std::ldexp(1.0f, -24);
  for (Encoding e : {Encoding::kDenseF16, Encoding::kDenseBF16}) {
    std::string bytes;
    ASSERT_TRUE(EncodeDense(v, e, &bytes).ok());
    ASSERT_EQ(bytes.size(), v.size() * 2);
    std::vector<float> out(v.size());
    ASSERT_TRUE(DecodeDense(bytes, e, out).ok());
    for (size_t i = 0; i < v.size(); ++i) {
      float expect = e == Encoding::kDenseF16 ? HalfToFloat(FloatToHalf(v[i]))
                                              : BFloat16ToFloat(FloatToBFloat16(v[i]));
      ASSERT_EQ(out[i], expect) << i;
      if (std::isfinite(v[i]) && std::fabs(v[i]) > 1e-3f) {
        ASSERT_NEAR(out[i], v[i], std::fabs(v[i]) * (e == Encoding::kDenseF16 ? 1e-3 : 8e-3));
      }
    }
    EXPECT_EQ(out[10], kInf);
  }
}

TEST(DenseCodecTest, DecodeRejectsWrongLengthAndEncoding) {
  std::vector<float> out(4);
  EXPECT_EQ(DecodeDense(std::string(15, '\0'), Encoding::kDenseF32, out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeDense(std::string(16, '\0'), Encoding::kDenseF16, out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeDense(std::string(16, '\0'), Encoding::kFerret, out).code(),
            StatusCode::kInvalidArgument);
  std::string bytes = "unchanged";
  EXPECT_EQ(EncodeDense(std::vector<float>(2), Encoding::kNamedSubset, &bytes).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bytes, "unchanged");
}

TEST(DenseCodecTest, AccumulateFoldsWeightedValues) {
  std::vector<float> v = RandomValues(4500, 4);
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    std::string bytes;
    ASSERT_TRUE(EncodeDense(v, e, &bytes).ok());
    std::vector<float> decoded(v.size());
    ASSERT_TRUE(DecodeDense(bytes, e, decoded).ok());
    std::vector<double> acc(v.size(), 1.0);
    ASSERT_TRUE(AccumulateDense(bytes, e, 2.5, acc).ok());
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_EQ(acc[i], 1.0 + 2.5 * static_cast<double>(decoded[i])) << i;
    }
  }
}

TEST(DenseCodecTest, AccumulateRejectsNonFiniteAndLeavesAccUntouched) {
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    for (float bad : {std::nanf(""), kInf, -kInf}) {
      std::vector<float> v(5000, 1.0f);
      v[4097] = bad;  // beyond the first processing block
      std::string bytes;
      ASSERT_TRUE(EncodeDense(v, e, &bytes).ok());
      std::vector<double> acc(v.size(), 3.0);
      Status s = AccumulateDense(bytes, e, 1.0, acc);
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find("non-finite value at index 4097"), std::string::npos) << s.message();
      for (double a : acc) ASSERT_EQ(a, 3.0);
    }
  }
  // f16 overflow on encode becomes inf, which the server must refuse.
  std::vector<float> big(8, 1e6f);
  std::string bytes;
  ASSERT_TRUE(EncodeDense(big, Encoding::kDenseF16, &bytes).ok());
  std::vector<double> acc(8, 0.0);
  EXPECT_FALSE(AccumulateDense(bytes, Encoding::kDenseF16, 1.0, acc).ok());
}

TEST(DenseCodecTest, AccumulateRejectsWrongLength) {
  std::vector<double> acc(10, 0.0);
  EXPECT_EQ(AccumulateDense(std::string(39, '\0'), Encoding::kDenseF32, 1.0, acc).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(AccumulateDense(std::string(40, '\0'), Encoding::kFerret, 1.0, acc).code(),
            StatusCode::kInvalidArgument);
}

TEST(DenseCodecTest, FindNonFinite) {
  std::vector<float> v(10000, 0.5f);
  EXPECT_EQ(FindNonFinite(v), v.size());
  v[9999] = -kInf;
  EXPECT_EQ(FindNonFinite(v), 9999u);
  v[3] = std::nanf("");
  EXPECT_EQ(FindNonFinite(v), 3u);
  EXPECT_EQ(FindNonFinite({}), 0u);
}

}  // namespace
}  // namespace fl::internal
