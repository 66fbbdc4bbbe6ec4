// Split tensors on the wire: each encoding round-trips (f32 exactly, f16/bf16 as the dense
// codecs round), and every malformed shape, length, encoding or value is refused with a
// message that says what was wrong.
#include "codec/token_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

TokenTensor Ramp(int64_t batch, int64_t tokens, int64_t width) {
  TokenTensor t{batch, tokens, width, {}};
  for (int64_t i = 0; i < batch * tokens * width; ++i) {
    t.values.push_back(0.37f * static_cast<float>(i) - 1.1f);
  }
  return t;
}

void ExpectRefused(const Status& s, const std::string& part) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
}

TEST(TokenCodecTest, F32RoundTripIsExact) {
  TokenTensor t = Ramp(2, 3, 4);
  Result<EncodedTokens> e = EncodeTokens(t, Encoding::kDenseF32);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->values.size(), 2u * 3 * 4 * 4);
  EXPECT_EQ(SplitMessageBytes(*e), e->values.size() + kSplitFramingBytes);
  Result<TokenTensor> d = DecodeTokens(*e);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->batch, 2);
  EXPECT_EQ(d->tokens, 3);
  EXPECT_EQ(d->width, 4);
  EXPECT_EQ(d->values, t.values);
}

TEST(TokenCodecTest, NarrowEncodingsRoundAsTheDenseCodecs) {
  TokenTensor t = Ramp(1, 5, 7);
  for (Encoding enc : {Encoding::kDenseF16, Encoding::kDenseBF16}) {
    Result<TokenTensor> r = RoundThroughWire(t, enc);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < t.values.size(); ++i) {
      const float want = enc == Encoding::kDenseF16 ? HalfToFloat(FloatToHalf(t.values[i]))
                                                    : BFloat16ToFloat(FloatToBFloat16(t.values[i]));
      EXPECT_EQ(r->values[i], want) << EncodingName(enc) << " at " << i;
    }
    // Rounding twice changes nothing: what crossed the wire crosses it again unchanged.
    Result<TokenTensor> again = RoundThroughWire(*r, enc);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->values, r->values);
  }
}

TEST(TokenCodecTest, RefusesBadShapes) {
  ExpectRefused(CheckTokenShape(0, 3, 4), "every dimension must be >= 1");
  ExpectRefused(CheckTokenShape(2, -1, 4), "every dimension must be >= 1");
  ExpectRefused(CheckTokenShape(1 << 20, 1 << 20, 1 << 20), "exceeds the limit");
  ExpectRefused(CheckTokenShape(int64_t{1} << 62, int64_t{1} << 62, 4), "exceeds the limit");
  EXPECT_TRUE(CheckTokenShape(1, 1, kMaxTokenTensorValues).ok());
  ExpectRefused(CheckTokenShape(2, 1, kMaxTokenTensorValues), "exceeds the limit");
}

TEST(TokenCodecTest, EncodeRefusesInconsistentTensors) {
  TokenTensor t = Ramp(2, 3, 4);
  t.values.pop_back();
  ExpectRefused(EncodeTokens(t, Encoding::kDenseF32).status(), "holds 23 values, not 24");
  ExpectRefused(EncodeTokens(Ramp(1, 1, 1), Encoding::kFerret).status(), "not ferret");
}

TEST(TokenCodecTest, DecodeRefusesWrongLengthsAndEncodings) {
  Result<EncodedTokens> e = EncodeTokens(Ramp(2, 3, 4), Encoding::kDenseF16);
  ASSERT_TRUE(e.ok());
  EncodedTokens shorter = *e;
  shorter.values.pop_back();
  ExpectRefused(DecodeTokens(shorter).status(), "takes 48 bytes, got 47");
  EncodedTokens relabeled = *e;
  relabeled.encoding = Encoding::kDenseF32;  // f16 bytes claimed as f32
  ExpectRefused(DecodeTokens(relabeled).status(), "takes 96 bytes, got 48");
  EncodedTokens reshaped = *e;
  reshaped.tokens = 4;
  ExpectRefused(DecodeTokens(reshaped).status(), "takes 64 bytes, got 48");
  EncodedTokens named = *e;
  named.encoding = Encoding::kNamedSubset;
  ExpectRefused(DecodeTokens(named).status(), "not named_subset");
  EncodedTokens empty = *e;
  empty.batch = 0;
  ExpectRefused(DecodeTokens(empty).status(), "every dimension must be >= 1");
}

TEST(TokenCodecTest, DecodeRefusesNonFiniteValues) {
  TokenTensor t = Ramp(1, 2, 3);
  t.values[4] = std::numeric_limits<float>::quiet_NaN();
  ExpectRefused(RoundThroughWire(t, Encoding::kDenseF32).status(),
                "non-finite value at index 4 (as f32)");
  TokenTensor big = Ramp(1, 2, 3);
  big.values[2] = 70000.0f;  // finite as f32, infinite as f16
  ExpectRefused(RoundThroughWire(big, Encoding::kDenseF16).status(),
                "non-finite value at index 2 (as f16)");
  EXPECT_TRUE(RoundThroughWire(big, Encoding::kDenseBF16).ok());
}

TEST(TokenCodecTest, TokenRangesResolveZerosToAllAndRefuseWhatDoesNotFit) {
  auto resolve = [](int64_t output, int64_t begin, int64_t end) {
    return ResolveTokenRanges({1, Encoding::kDenseF32, output, begin, end}, 19);
  };
  EXPECT_EQ(*resolve(0, 0, 0), (SplitTokenRanges{19, 0, 19}));
  EXPECT_EQ(*resolve(1, 1, 3), (SplitTokenRanges{1, 1, 3}));
  EXPECT_EQ(*resolve(19, 0, 19), (SplitTokenRanges{19, 0, 19}));
  ExpectRefused(resolve(20, 0, 0).status(), "output_tokens 20 outside [0, 19]");
  ExpectRefused(resolve(-1, 0, 0).status(), "output_tokens -1");
  for (auto [begin, end] : {std::pair{3, 3}, {2, 1}, {0, 20}, {-1, 2}, {1, 0}, {0, -1}}) {
    ExpectRefused(resolve(0, begin, end).status(),
                  "gradient tokens [" + std::to_string(begin) + ", " + std::to_string(end) + ")");
  }
}

TEST(TokenCodecTest, SliceAndPadTokensKeepEverySamplesRows) {
  const TokenTensor t = Ramp(2, 3, 2);  // sample b, token k, column c at (3b + k) * 2 + c
  const TokenTensor slice = SliceTokens(t, 1, 3);
  EXPECT_EQ(slice.tokens, 2);
  EXPECT_EQ(slice.values,
            (std::vector<float>{t.values[2], t.values[3], t.values[4], t.values[5], t.values[8],
                                t.values[9], t.values[10], t.values[11]}));
  const TokenTensor padded = PadTokens(SliceTokens(t, 0, 1), 3);
  EXPECT_EQ(padded.tokens, 3);
  EXPECT_EQ(padded.values, (std::vector<float>{t.values[0], t.values[1], 0, 0, 0, 0, t.values[6],
                                               t.values[7], 0, 0, 0, 0}));
}

}  // namespace
}  // namespace fl::internal
