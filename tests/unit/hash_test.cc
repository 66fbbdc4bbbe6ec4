#include "core/hash.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "rng/splitmix64.h"

namespace fl::internal {
namespace {

// Published FNV-1a 64 test vectors (the FNV reference test suite).
TEST(Fnv1a64Test, KnownVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(Fnv1a64Test, IntegersFoldAsLittleEndianBytes) {
  const unsigned char bytes[8] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  EXPECT_EQ(Fnv1a64U64(kFnv1a64OffsetBasis, 0x0102030405060708ull),
            Fnv1a64Bytes(kFnv1a64OffsetBasis, bytes, sizeof(bytes)));
  // Folding is incremental: two halves equal the whole.
  const uint64_t half = Fnv1a64Bytes(kFnv1a64OffsetBasis, "foo", 3);
  EXPECT_EQ(Fnv1a64Bytes(half, "bar", 3), Fnv1a64("foobar"));
}

// The first two outputs of the reference SplitMix64 generator seeded with 0
// (state advances by the gamma before each output).
TEST(SplitMix64Test, ReferenceStreamFromZero) {
  EXPECT_EQ(SplitMix64(0), 0xe220a8397b1dcdafull);
  EXPECT_EQ(SplitMix64(kGoldenGamma64), 0x6e789e6aa1b965f4ull);
  static_assert(SplitMix64(0) == 0xe220a8397b1dcdafull);
}

}  // namespace
}  // namespace fl::internal
