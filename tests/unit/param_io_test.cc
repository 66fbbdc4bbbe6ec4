#include "codec/param_io.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

namespace fl::internal {
namespace {

ParamSet MakeParams() {
  Layout l;
  l.Add("conv.weight", {4, 1, 3, 3});
  l.Add("conv.bias", {4});
  l.Add("scale", {});
  ParamSet p(l);
  for (size_t i = 0; i < p.size(); ++i) p.data()[i] = 0.25f * static_cast<float>(i) - 3.0f;
  return p;
}

TEST(ParamIoTest, LayoutRoundTrip) {
  Layout l = MakeParams().layout();
  Result<Layout> parsed = ParseLayout(SerializeLayout(l));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->hash(), l.hash());
  ASSERT_EQ(parsed->num_tensors(), 3u);
  EXPECT_EQ(parsed->tensors()[0].shape, (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(parsed->tensors()[2].name, "scale");
  EXPECT_EQ(parsed->total_numel(), 41u);
  Result<Layout> empty = ParseLayout(SerializeLayout(Layout()));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->num_tensors(), 0u);
}

TEST(ParamIoTest, ParamSetRoundTrip) {
  ParamSet p = MakeParams();
  std::string bytes = SerializeParamSet(p);
  EXPECT_EQ(bytes.substr(0, 4), "FLPS");
  Result<ParamSet> q = ParseParamSet(bytes);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->layout().hash(), p.layout().hash());
  ASSERT_EQ(q->size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) EXPECT_EQ(q->data()[i], p.data()[i]);
}

TEST(ParamIoTest, RejectsBadMagicVersionAndTrailingBytes) {
  std::string bytes = SerializeParamSet(MakeParams());
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_EQ(ParseParamSet(bad_magic).status().code(), StatusCode::kInvalidArgument);
  std::string bad_version = bytes;
  bad_version[4] = 7;
  EXPECT_EQ(ParseParamSet(bad_version).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseParamSet(bytes + "x").status().code(), StatusCode::kDataLoss);
  EXPECT_FALSE(ParseParamSet("").ok());
}

TEST(ParamIoTest, EveryTruncationFails) {
  std::string bytes = SerializeParamSet(MakeParams());
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<ParamSet> r = ParseParamSet(std::string_view(bytes).substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
  }
}

TEST(ParamIoTest, CorruptedLayoutIsDetected) {
  std::string bytes = SerializeParamSet(MakeParams());
  // Flip a byte of the first tensor's name: the stored layout hash no longer matches.
  const size_t name_offset = 4 + 4 + 8 + 4 + 4;
  ASSERT_EQ(bytes[name_offset], 'c');
  bytes[name_offset] = 'C';
  Result<ParamSet> r = ParseParamSet(bytes);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
}

TEST(ParamIoTest, ForgedSizesDoNotAllocate) {
  // A header claiming a huge tensor with few bytes behind it is refused up front.
  Layout huge;
  huge.Add("x", {1ll << 20, 1ll << 19});
  std::string layout = SerializeLayout(huge);
  std::string bytes = "FLPS";
  bytes += std::string("\x01\x00\x00\x00", 4);
  uint64_t len = layout.size();
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>(len >> (8 * i));
  bytes += layout;
  uint64_t count = huge.total_numel();
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>(count >> (8 * i));
  bytes += std::string(64, '\0');
  EXPECT_EQ(ParseParamSet(bytes).status().code(), StatusCode::kDataLoss);

  std::string many_tensors("\xff\xff\xff\xff", 4);
  EXPECT_EQ(ParseLayout(many_tensors).status().code(), StatusCode::kDataLoss);
}

TEST(ParamIoTest, RandomGarbageNeverCrashes) {
  std::mt19937 rng(7);
  std::string good = SerializeParamSet(MakeParams());
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    Result<ParamSet> r = ParseParamSet(bytes);
    if (r.ok()) {
      ++accepted;  // only value bytes were hit: the layout must still be intact
      EXPECT_EQ(r->layout().hash(), MakeParams().layout().hash());
    }
    std::string noise(rng() % 200, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    (void)ParseParamSet("FLPS" + noise);  // must return, whatever the bytes
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace fl::internal
