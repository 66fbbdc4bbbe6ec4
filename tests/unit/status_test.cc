#include "fl/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace fl {
namespace {

TEST(StatusTest, OkIsDefaultAndCheap) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(Status(StatusCode::kOk, "ignored").ok());
}

TEST(StatusTest, FactoriesCarryCodeAndMessage) {
  Status s = Status::InvalidArgument("bad weight");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "bad weight");
  EXPECT_EQ(s.ToString(), "INVALID_ARGUMENT: bad weight");
  EXPECT_EQ(Status::DataLoss("x").ToString(), "DATA_LOSS: x");
  EXPECT_EQ(Status::Unauthenticated("x").code(), StatusCode::kUnauthenticated);
}

TEST(StatusTest, CodeNamesMatchGrpc) {
  EXPECT_EQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_EQ(StatusCodeName(StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
  EXPECT_EQ(StatusCodeName(StatusCode::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(StatusCode::kDeadlineExceeded), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "UNKNOWN_CODE");
}

TEST(StatusTest, CopyIsDeepAndMoveEmptiesSource) {
  Status a = Status::NotFound("model 3");
  Status b = a;
  EXPECT_EQ(a, b);
  Status c = std::move(a);
  EXPECT_EQ(c.message(), "model 3");
  b = Status::Ok();
  EXPECT_TRUE(b.ok());
  EXPECT_EQ(c.code(), StatusCode::kNotFound);
}

TEST(StatusTest, WithContextPrefixesMessage) {
  Status s = Status::Unavailable("disk full").WithContext("spool");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "spool: disk full");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  FL_ASSIGN_OR_RETURN(int h, Half(x));
  FL_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  FL_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(ResultTest, ValueAndErrorPropagate) {
  Result<int> r = Quarter(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2);
  Result<int> e = Quarter(6);
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(3).message(), "odd");
}

TEST(ResultTest, MoveOnlyValue) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

// value() on an error aborts with the status in every build type (no assert: this test
// runs in Release builds too).
TEST(ResultDeathTest, ValueOnErrorAbortsWithStatus) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const char* kExpected = "fl::Result::value\\(\\) on error: INVALID_ARGUMENT: odd";
  EXPECT_DEATH(
      {
        Result<int> r = Half(3);
        int v = r.value();
        (void)v;
      },
      kExpected);
  EXPECT_DEATH(
      {
        const Result<int> r = Half(3);
        (void)*r;
      },
      kExpected);
  EXPECT_DEATH((void)Half(3).value(), kExpected);
  EXPECT_DEATH(
      {
        Result<std::unique_ptr<int>> r = Status::NotFound("model 3");
        (void)r->get();
      },
      "fl::Result::value\\(\\) on error: NOT_FOUND: model 3");
}

}  // namespace
}  // namespace fl
