#ifndef FL_TESTS_TESTING_MANUAL_CLOCK_ENV_H_
#define FL_TESTS_TESTING_MANUAL_CLOCK_ENV_H_

// Real files, but a monotonic clock that only the test moves: round deadlines and client
// timeouts (which the Coordinator reads through Env::NowMicros) then pass exactly when
// the test says so, never because the machine was slow.

#include <atomic>
#include <chrono>
#include <cstdint>

#include "fl/env.h"

namespace fl::internal {

class ManualClockEnv : public EnvWrapper {
 public:
  ManualClockEnv() : EnvWrapper(Env::Default()) {}
  uint64_t NowMicros() override { return now_us_.load(); }
  void Advance(std::chrono::milliseconds d) { now_us_ += static_cast<uint64_t>(d.count()) * 1000; }

 private:
  std::atomic<uint64_t> now_us_{1'000'000};
};

}  // namespace fl::internal

#endif  // FL_TESTS_TESTING_MANUAL_CLOCK_ENV_H_
