#ifndef FL_SDK_CORE_LOGGING_H_
#define FL_SDK_CORE_LOGGING_H_

// Minimal leveled logging to stderr: `FL_LOG(INFO) << "round " << r;`
// One line per statement, written atomically, prefixed with time and level.

#include <sstream>
#include <string_view>

namespace fl::internal {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below `level` are dropped. Default kInfo; FL_LOG_LEVEL=debug|info|warning|error
// in the environment overrides it at startup.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
// Parses "debug" | "info" | "warning" | "error"; false if unknown.
bool ParseLogLevel(std::string_view name, LogLevel* out);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Turns the stream expression into void so both branches of FL_LOG's ?: agree.
struct LogMessageVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace fl::internal

#define FL_LOG_LEVEL_DEBUG ::fl::internal::LogLevel::kDebug
#define FL_LOG_LEVEL_INFO ::fl::internal::LogLevel::kInfo
#define FL_LOG_LEVEL_WARNING ::fl::internal::LogLevel::kWarning
#define FL_LOG_LEVEL_ERROR ::fl::internal::LogLevel::kError

// The conditional expression (rather than an if/else) keeps `if (x) FL_LOG(INFO) << y;`
// free of dangling-else surprises; the stream is not evaluated below the level.
#define FL_LOG(level)                                                       \
  (FL_LOG_LEVEL_##level < ::fl::internal::MinLogLevel())                    \
      ? (void)0                                                             \
      : ::fl::internal::LogMessageVoidify() &                               \
            ::fl::internal::LogMessage(FL_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // FL_SDK_CORE_LOGGING_H_
