#include "codec/named_subset_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "codec/byte_io.h"
#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

Layout PoolLayout() {
  Layout l;
  l.Add("pool.0.key", {4});
  l.Add("pool.0.head.weight", {2, 3});
  l.Add("pool.1.key", {4});
  l.Add("pool.1.head.weight", {2, 3});
  return l;
}

const std::vector<float> kKey = {0.5f, -1.0f, 2.0f, 0.25f};
const std::vector<float> kHead = {1, 2, 3, -4, -5.5f, 6};

std::string Encode(const std::vector<NamedTensorView>& tensors,
                   Encoding encoding = Encoding::kDenseF32) {
  std::string out;
  EXPECT_TRUE(EncodeNamedSubset(tensors, encoding, &out).ok());
  return out;
}

std::string Valid() {
  return Encode({{"pool.1.key", 0.25, kKey}, {"pool.0.head.weight", 1.0, kHead}});
}

// The refusal of `bytes`: InvalidArgument whose message contains `what`.
void ExpectRefused(const std::string& bytes, const std::string& what) {
  Result<NamedSubset> r = DecodeNamedSubset(bytes, PoolLayout());
  ASSERT_FALSE(r.ok()) << "accepted, expected: " << what;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr(what));
}

// A payload built field by field, for the malformed cases the encoder cannot produce.
struct RawEntry {
  std::string name;
  double fraction = 1.0;
  uint64_t numel = 0;
  std::vector<float> values;
};

std::string Raw(const std::vector<RawEntry>& entries, uint64_t count,
                Encoding encoding = Encoding::kDenseF32) {
  std::string out = "FLNS";
  PutU32(&out, 1);
  PutU32(&out, static_cast<uint32_t>(encoding));
  PutU64(&out, count);
  for (const RawEntry& e : entries) {
    PutLengthPrefixed(&out, e.name);
    PutF64(&out, e.fraction);
    PutU64(&out, e.numel);
    std::string values;
    EXPECT_TRUE(EncodeDense(e.values, encoding, &values).ok());
    out += values;
  }
  return out;
}

TEST(NamedSubsetCodecTest, RoundTripsEveryValueEncoding) {
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    // Every value is exact in f16 and bf16, so each encoding round-trips exactly.
    std::string bytes = Encode({{"pool.1.key", 0.25, kKey}, {"pool.0.head.weight", 1.0, kHead}}, e);
    Result<NamedSubset> r = DecodeNamedSubset(bytes, PoolLayout());
    ASSERT_TRUE(r.ok()) << EncodingName(e) << ": " << r.status().ToString();
    EXPECT_EQ(r->value_encoding, e);
    ASSERT_EQ(r->tensors.size(), 2u);
    EXPECT_EQ(r->tensors[0].index, 2u);
    EXPECT_EQ(r->tensors[0].fraction, 0.25);
    EXPECT_EQ(r->tensors[0].values, kKey);
    EXPECT_EQ(r->tensors[1].index, 1u);
    EXPECT_EQ(r->tensors[1].fraction, 1.0);
    EXPECT_EQ(r->tensors[1].values, kHead);
  }
}

TEST(NamedSubsetCodecTest, NarrowEncodingsRoundToNearest) {
  const std::vector<float> key = {0.1f, 1.0f / 3, -7.77f, 1e-3f};
  Result<NamedSubset> r =
      DecodeNamedSubset(Encode({{"pool.0.key", 1.0, key}}, Encoding::kDenseBF16), PoolLayout());
  ASSERT_TRUE(r.ok());
  for (size_t i = 0; i < key.size(); ++i) {
    EXPECT_EQ(r->tensors[0].values[i], BFloat16ToFloat(FloatToBFloat16(key[i])));
  }
}

TEST(NamedSubsetCodecTest, EncoderRefusesNonDenseValueEncodings) {
  std::string out = "kept";
  std::vector<NamedTensorView> one = {{"pool.0.key", 1.0, kKey}};
  EXPECT_EQ(EncodeNamedSubset(one, Encoding::kFerret, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeNamedSubset(one, Encoding::kNamedSubset, &out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(out, "kept");
}

TEST(NamedSubsetCodecTest, RefusesWrongShapeNamingTheTensor) {
  std::vector<float> short_key = {1, 2};
  ExpectRefused(Encode({{"pool.1.key", 1.0, short_key}}),
                "pool.1.key has 2 values, the layout's has 4");
  std::vector<float> long_head(12, 1.0f);
  ExpectRefused(Encode({{"pool.0.head.weight", 1.0, long_head}}),
                "pool.0.head.weight has 12 values, the layout's has 6");
}

TEST(NamedSubsetCodecTest, RefusesUnknownAndDuplicateNames) {
  ExpectRefused(Encode({{"pool.7.key", 1.0, kKey}}), "unknown tensor 'pool.7.key'");
  ExpectRefused(Encode({{"pool.0.key", 1.0, kKey}, {"pool.0.key", 0.5, kKey}}),
                "pool.0.key appears twice");
  // A long unknown name is cut in the message, not echoed whole.
  std::string long_name(10000, 'x');
  Result<NamedSubset> r = DecodeNamedSubset(Encode({{long_name, 1.0, kKey}}), PoolLayout());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("(10000 bytes)"));
  EXPECT_LT(r.status().message().size(), 200u);
  // Bytes outside printable ASCII are escaped: the reason goes to the ledger and logs.
  r = DecodeNamedSubset(Encode({{std::string("k\n\xff\0", 4), 1.0, kKey}}), PoolLayout());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("unknown tensor 'k\\x0a\\xff\\x00'"));
}

TEST(NamedSubsetCodecTest, RefusesFractionsOutsideTheUnitInterval) {
  for (double f : {-0.5, 1.5, std::nan(""), std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity()}) {
    ExpectRefused(Encode({{"pool.0.key", f, kKey}}), "pool.0.key has weight fraction");
  }
  // Both ends are allowed.
  EXPECT_TRUE(DecodeNamedSubset(Encode({{"pool.0.key", 0.0, kKey}}), PoolLayout()).ok());
  EXPECT_TRUE(DecodeNamedSubset(Encode({{"pool.0.key", 1.0, kKey}}), PoolLayout()).ok());
}

TEST(NamedSubsetCodecTest, RefusesNonFiniteValues) {
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    std::vector<float> bad = kHead;
    bad[4] = e == Encoding::kDenseF16 ? 1e6f : std::nanf("");  // 1e6 overflows half to inf
    Result<NamedSubset> r =
        DecodeNamedSubset(Encode({{"pool.1.head.weight", 1.0, bad}}, e), PoolLayout());
    ASSERT_FALSE(r.ok()) << EncodingName(e);
    EXPECT_THAT(r.status().message(),
                HasSubstr("pool.1.head.weight holds a non-finite value at index 4"));
  }
}

TEST(NamedSubsetCodecTest, RefusesBadHeaders) {
  std::string bad_magic = Valid();
  bad_magic[0] = 'X';
  ExpectRefused(bad_magic, "bad magic");
  ExpectRefused("", "bad magic");
  ExpectRefused("FLN", "bad magic");
  ExpectRefused(Valid().substr(0, 10), "truncated header");
  std::string version = Valid();
  version[4] = 2;
  ExpectRefused(version, "unsupported version 2");
  std::string encoding = Valid();
  encoding[8] = static_cast<char>(Encoding::kFerret);
  ExpectRefused(encoding, "value encoding ferret is not dense");
  encoding[8] = static_cast<char>(Encoding::kNamedSubset);
  ExpectRefused(encoding, "value encoding named_subset is not dense");
  ExpectRefused(Raw({}, 0), "no tensors");
  ExpectRefused(Raw({}, 5), "5 tensors, the layout has 4");
  // A forged count is refused before anything is reserved for it.
  ExpectRefused(Raw({}, ~uint64_t{0}), "tensors, the layout has 4");
}

TEST(NamedSubsetCodecTest, RefusesTruncationAndTrailingBytes) {
  const std::string valid = Valid();
  // Every strict prefix is refused (none may read past the end).
  for (size_t n = 0; n < valid.size(); ++n) {
    EXPECT_FALSE(DecodeNamedSubset(valid.substr(0, n), PoolLayout()).ok()) << n;
  }
  ExpectRefused(valid.substr(0, valid.size() - 1), "pool.0.head.weight is truncated");
  ExpectRefused(valid + "z", "1 trailing bytes after the last tensor");
  // Fewer entries than the count says.
  ExpectRefused(Raw({{"pool.0.key", 1.0, 4, kKey}}, 2), "truncated in the name of entry 1");
  // A forged name length is refused, not allocated.
  std::string forged = Raw({}, 1);
  PutU64(&forged, ~uint64_t{0});
  ExpectRefused(forged, "truncated in the name of entry 0");
  // A forged value count is compared with the layout before anything is read.
  ExpectRefused(Raw({{"pool.0.key", 1.0, ~uint64_t{0}, {}}}, 1),
                "pool.0.key has 18446744073709551615 values, the layout's has 4");
}

}  // namespace
}  // namespace fl::internal
