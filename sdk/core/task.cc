#include "fl/task.h"

#include <charconv>
#include <cmath>

namespace fl {
namespace {

constexpr int64_t kTwoTo53 = int64_t{1} << 53;
constexpr double kTwoTo63 = 9223372036854775808.0;
constexpr double kTwoTo64 = 18446744073709551616.0;

const char* TypeName(TrainValue::Type type) {
  switch (type) {
    case TrainValue::Type::kBool: return "a bool";
    case TrainValue::Type::kInt: return "an integer";
    case TrainValue::Type::kDouble: return "a double";
    case TrainValue::Type::kString: return "a string";
  }
  return "an unknown type";
}

Status WrongType(const TrainValue& value, const char* wanted) {
  return Status::InvalidArgument(value.ToString() + " is " + TypeName(value.type()) + ", not " +
                                 wanted);
}

}  // namespace

Result<bool> TrainValue::AsBool() const {
  if (const bool* b = std::get_if<bool>(&value_)) return *b;
  if (const int64_t* i = std::get_if<int64_t>(&value_); i != nullptr && (*i == 0 || *i == 1)) {
    return *i == 1;
  }
  if (const double* d = std::get_if<double>(&value_); d != nullptr && (*d == 0 || *d == 1)) {
    return *d == 1;
  }
  return WrongType(*this, "a bool");
}

Result<int64_t> TrainValue::AsInt64() const {
  if (const int64_t* i = std::get_if<int64_t>(&value_)) return *i;
  // [-2^63, 2^63) holds every integral double that converts to int64_t exactly.
  if (const double* d = std::get_if<double>(&value_);
      d != nullptr && std::floor(*d) == *d && *d >= -kTwoTo63 && *d < kTwoTo63) {
    return static_cast<int64_t>(*d);
  }
  return WrongType(*this, "an integer");
}

Result<uint64_t> TrainValue::AsUint64() const {
  if (const int64_t* i = std::get_if<int64_t>(&value_)) return static_cast<uint64_t>(*i);
  if (const double* d = std::get_if<double>(&value_);
      d != nullptr && std::floor(*d) == *d && *d >= 0 && *d < kTwoTo64) {
    return static_cast<uint64_t>(*d);
  }
  return WrongType(*this, "an unsigned integer");
}

Result<double> TrainValue::AsDouble() const {
  if (const double* d = std::get_if<double>(&value_)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&value_);
      i != nullptr && *i >= -kTwoTo53 && *i <= kTwoTo53) {
    return static_cast<double>(*i);
  }
  return WrongType(*this, "a double");
}

Result<std::string> TrainValue::AsString() const {
  if (const std::string* s = std::get_if<std::string>(&value_)) return *s;
  return WrongType(*this, "a string");
}

std::string TrainValue::ToString() const {
  switch (type()) {
    case Type::kBool:
      return std::get<bool>(value_) ? "true" : "false";
    case Type::kInt:
      return std::to_string(std::get<int64_t>(value_));
    case Type::kDouble: {
      char buf[32];
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), std::get<double>(value_));
      return ec == std::errc() ? std::string(buf, end) : std::string("?");
    }
    case Type::kString:
      return "\"" + std::get<std::string>(value_) + "\"";
  }
  return "?";
}

}  // namespace fl
