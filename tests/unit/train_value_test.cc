#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "fl/task.h"

namespace fl {
namespace {

TEST(TrainValueTest, KeepsItsType) {
  EXPECT_TRUE(TrainValue().is_int());
  EXPECT_TRUE(TrainValue(true).is_bool());
  EXPECT_TRUE(TrainValue(7).is_int());
  EXPECT_TRUE(TrainValue(uint32_t{7}).is_int());
  EXPECT_TRUE(TrainValue(0.5).is_double());
  EXPECT_TRUE(TrainValue(0.5f).is_double());
  EXPECT_TRUE(TrainValue("adam").is_string());  // not the bool overload
  EXPECT_TRUE(TrainValue(std::string("adam")).is_string());
  EXPECT_NE(TrainValue(1), TrainValue(1.0));
  EXPECT_NE(TrainValue(1), TrainValue(true));
}

TEST(TrainValueTest, IntegersAreExactOverAll64Bits) {
  const uint64_t big = std::numeric_limits<uint64_t>::max() - 2;
  EXPECT_EQ(*TrainValue(big).AsUint64(), big);
  const int64_t low = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(*TrainValue(low).AsInt64(), low);
  EXPECT_EQ(*TrainValue((int64_t{1} << 53) + 1).AsInt64(), (int64_t{1} << 53) + 1);
}

TEST(TrainValueTest, NumbersConvertOnlyWhenExact) {
  EXPECT_EQ(*TrainValue(3.0).AsInt64(), 3);
  EXPECT_EQ(*TrainValue(3.0).AsUint64(), 3u);
  EXPECT_FALSE(TrainValue(3.5).AsInt64().ok());
  EXPECT_FALSE(TrainValue(-1.0).AsUint64().ok());
  EXPECT_FALSE(TrainValue(1e300).AsInt64().ok());
  EXPECT_EQ(*TrainValue(int64_t{1} << 53).AsDouble(), 9007199254740992.0);
  EXPECT_FALSE(TrainValue((int64_t{1} << 53) + 1).AsDouble().ok());
  EXPECT_TRUE(*TrainValue(1).AsBool());
  EXPECT_FALSE(*TrainValue(0.0).AsBool());
  EXPECT_FALSE(TrainValue(2).AsBool().ok());
  EXPECT_FALSE(TrainValue(true).AsDouble().ok());
  EXPECT_FALSE(TrainValue("1").AsInt64().ok());
  EXPECT_FALSE(TrainValue(1).AsString().ok());
}

TEST(TrainValueTest, ErrorsQuoteTheValueAndItsType) {
  Result<int64_t> r = TrainValue("adam").AsInt64();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "\"adam\" is a string, not an integer");
  EXPECT_EQ(TrainValue(0.1).ToString(), "0.1");
  EXPECT_EQ(TrainValue(-3).ToString(), "-3");
  EXPECT_EQ(TrainValue(false).ToString(), "false");
}

TEST(TrainValueTest, ReadsWellInAConfigMap) {
  std::map<std::string, TrainValue> extra;
  extra["seed"] = uint64_t{0xfedcba9876543210ull};
  extra["clip_norm"] = 1.0;
  extra["optimizer"] = "adam";
  EXPECT_EQ(*extra.at("seed").AsUint64(), 0xfedcba9876543210ull);
  EXPECT_EQ(*extra.at("clip_norm").AsDouble(), 1.0);
  EXPECT_EQ(*extra.at("optimizer").AsString(), "adam");
}

}  // namespace
}  // namespace fl
