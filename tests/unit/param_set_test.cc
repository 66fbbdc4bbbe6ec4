#include "fl/param_set.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace fl {
namespace {

Layout TwoTensors() {
  Layout l;
  l.Add("w", {3, 4});
  l.Add("b", {4});
  return l;
}

TEST(LayoutTest, OffsetsAndFind) {
  Layout l = TwoTensors();
  ASSERT_EQ(l.num_tensors(), 2u);
  EXPECT_EQ(l.total_numel(), 16u);
  EXPECT_EQ(l.tensors()[0].offset, 0u);
  EXPECT_EQ(l.tensors()[0].numel, 12u);
  EXPECT_EQ(l.tensors()[1].offset, 12u);
  EXPECT_EQ(l.Find("b"), 1);
  EXPECT_EQ(l.Find("missing"), -1);
  Layout scalar;
  scalar.Add("s", {});
  EXPECT_EQ(scalar.total_numel(), 1u);
}

TEST(LayoutTest, HashDependsOnNamesShapesAndOrder) {
  Layout a = TwoTensors();
  Layout same = TwoTensors();
  EXPECT_EQ(a.hash(), same.hash());
  EXPECT_TRUE(a == same);

  Layout renamed;
  renamed.Add("w", {3, 4});
  renamed.Add("c", {4});
  EXPECT_NE(a.hash(), renamed.hash());

  Layout reshaped;  // same numel, different shape
  reshaped.Add("w", {4, 3});
  reshaped.Add("b", {4});
  EXPECT_NE(a.hash(), reshaped.hash());

  Layout reordered;
  reordered.Add("b", {4});
  reordered.Add("w", {3, 4});
  EXPECT_NE(a.hash(), reordered.hash());

  // Name boundaries matter: "ab"+"c" differs from "a"+"bc".
  Layout x, y;
  x.Add("ab", {1});
  x.Add("c", {1});
  y.Add("a", {1});
  y.Add("bc", {1});
  EXPECT_NE(x.hash(), y.hash());

  EXPECT_NE(Layout().hash(), a.hash());
}

TEST(LayoutTest, HashIsPinnedToTheDocumentedByteSequence) {
  // Pinned: the hash is persisted in model records and sent on the wire, so a change
  // in the hash function must be deliberate. The constants were computed outside this
  // code base, with Python, from the byte sequence Layout::hash() documents:
  //   seq = b""
  //   for name, shape in tensors:
  //     seq += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<Q", len(shape))
  //     seq += b"".join(struct.pack("<Q", d) for d in shape)
  //   h = 14695981039346656037
  //   for byte in seq: h = ((h ^ byte) * 1099511628211) % 2**64
  // For [("fc.weight", [10, 784])] seq is
  // 0900000000000000 66632e776569676874 0200000000000000 0a00000000000000 1003000000000000.
  EXPECT_EQ(Layout().hash(), 14695981039346656037ull);
  Layout l;
  l.Add("fc.weight", {10, 784});
  EXPECT_EQ(l.hash(), 0x581ff9b7d74997daull);
  l.Add("fc.bias", {10});
  EXPECT_EQ(l.hash(), 0x041c75f26c40b566ull);
}

TEST(ParamSetTest, ZeroInitializedAndAligned) {
  ParamSet p(TwoTensors());
  ASSERT_EQ(p.size(), 16u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data()) % 64, 0u);
  for (float v : p.values()) EXPECT_EQ(v, 0.0f);
  EXPECT_TRUE(p.AllFinite());
  EXPECT_TRUE(ParamSet().empty());
}

TEST(ParamSetTest, TensorViewsAliasTheBuffer) {
  ParamSet p(TwoTensors());
  auto b = p.tensor(1);
  ASSERT_EQ(b.size(), 4u);
  b[2] = 5.0f;
  EXPECT_EQ(p.data()[14], 5.0f);
}

TEST(ParamSetTest, CopyIsDeep) {
  ParamSet p(TwoTensors());
  p.data()[3] = 1.5f;
  ParamSet q = p;
  q.data()[3] = -2.0f;
  EXPECT_EQ(p.data()[3], 1.5f);
  EXPECT_EQ(q.layout().hash(), p.layout().hash());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q.data()) % 64, 0u);

  Layout small;
  small.Add("x", {2});
  ParamSet r(small);
  r = p;
  EXPECT_EQ(r.size(), 16u);
  EXPECT_EQ(r.data()[3], 1.5f);
  r = r;  // self-assignment keeps the data
  EXPECT_EQ(r.data()[3], 1.5f);
}

TEST(ParamSetTest, MoveTransfersBuffer) {
  ParamSet p(TwoTensors());
  const float* data = p.data();
  ParamSet q = std::move(p);
  EXPECT_EQ(q.data(), data);
  EXPECT_EQ(q.size(), 16u);
}

TEST(ParamSetTest, AllFiniteDetectsInfAndNan) {
  Layout l;
  l.Add("big", {5000});
  ParamSet p(l);
  EXPECT_TRUE(p.AllFinite());
  p.data()[4321] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(p.AllFinite());
  p.data()[4321] = std::numeric_limits<float>::max();
  EXPECT_TRUE(p.AllFinite());
  p.data()[0] = std::nanf("");
  EXPECT_FALSE(p.AllFinite());
}

}  // namespace
}  // namespace fl
