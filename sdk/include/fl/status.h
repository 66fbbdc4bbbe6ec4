#ifndef FL_SDK_INCLUDE_FL_STATUS_H_
#define FL_SDK_INCLUDE_FL_STATUS_H_

#include <cassert>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "fl/export.h"

namespace fl {

// Status codes map 1:1 onto grpc::StatusCode so the transport converts by cast.
// Persisted in the update ledger: never change the value of an existing entry.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

FL_EXPORT std::string_view StatusCodeName(StatusCode code);

// A cheap value describing success or an error. An OK status holds no allocation.
class FL_EXPORT Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string_view message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  static Status Cancelled(std::string_view m) { return {StatusCode::kCancelled, m}; }
  static Status Unknown(std::string_view m) { return {StatusCode::kUnknown, m}; }
  static Status InvalidArgument(std::string_view m) { return {StatusCode::kInvalidArgument, m}; }
  static Status DeadlineExceeded(std::string_view m) { return {StatusCode::kDeadlineExceeded, m}; }
  static Status NotFound(std::string_view m) { return {StatusCode::kNotFound, m}; }
  static Status AlreadyExists(std::string_view m) { return {StatusCode::kAlreadyExists, m}; }
  static Status PermissionDenied(std::string_view m) { return {StatusCode::kPermissionDenied, m}; }
  static Status ResourceExhausted(std::string_view m) { return {StatusCode::kResourceExhausted, m}; }
  static Status FailedPrecondition(std::string_view m) { return {StatusCode::kFailedPrecondition, m}; }
  static Status Aborted(std::string_view m) { return {StatusCode::kAborted, m}; }
  static Status OutOfRange(std::string_view m) { return {StatusCode::kOutOfRange, m}; }
  static Status Unimplemented(std::string_view m) { return {StatusCode::kUnimplemented, m}; }
  static Status Internal(std::string_view m) { return {StatusCode::kInternal, m}; }
  static Status Unavailable(std::string_view m) { return {StatusCode::kUnavailable, m}; }
  static Status DataLoss(std::string_view m) { return {StatusCode::kDataLoss, m}; }
  static Status Unauthenticated(std::string_view m) { return {StatusCode::kUnauthenticated, m}; }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  const std::string& message() const;
  // "OK" or "INVALID_ARGUMENT: message".
  std::string ToString() const;
  // Returns a copy whose message is "context: message"; OK stays OK.
  Status WithContext(std::string_view context) const;

  bool operator==(const Status& o) const { return code() == o.code() && message() == o.message(); }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

// Prints "fl::Result::value() on error: <status>" to stderr and aborts, in every build
// type. Result<T>::value() calls it when it holds an error (reading a value that is not
// there is a bug to stop at, not a state to run on with).
[[noreturn]] FL_EXPORT void AbortOnResultError(const Status& status);

// A value or an error Status (C++20 has no std::expected).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result constructed from an OK status without a value");
    if (status_.ok()) status_ = Status::Internal("Result built from OK status without value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok(). On an error, prints the status to stderr and aborts (every build type).
  // On a temporary Result the value is moved out and returned by value, so
  // `for (auto& x : Make().value())` and `const T& v = *Make();` hold their own object
  // instead of a reference into the destroyed Result.
  T& value() & { CheckOk(); return *value_; }
  const T& value() const& { CheckOk(); return *value_; }
  T value() && { CheckOk(); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void CheckOk() const {
    if (!status_.ok()) AbortOnResultError(status_);
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace fl

#define FL_STATUS_CONCAT_INNER_(a, b) a##b
#define FL_STATUS_CONCAT_(a, b) FL_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define FL_RETURN_IF_ERROR(expr)                 \
  do {                                           \
    ::fl::Status fl_status_tmp_ = (expr);        \
    if (!fl_status_tmp_.ok()) return fl_status_tmp_; \
  } while (0)

// `FL_ASSIGN_OR_RETURN(auto x, MakeX());` declares x or returns the error.
#define FL_ASSIGN_OR_RETURN(lhs, expr) \
  FL_ASSIGN_OR_RETURN_IMPL_(FL_STATUS_CONCAT_(fl_result_, __LINE__), lhs, expr)
#define FL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#endif  // FL_SDK_INCLUDE_FL_STATUS_H_
