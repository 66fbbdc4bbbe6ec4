#ifndef FL_SDK_INCLUDE_FL_ENV_H_
#define FL_SDK_INCLUDE_FL_ENV_H_

#include <cstdint>
#include <string>

#include "fl/export.h"
#include "fl/status.h"

namespace fl {

// The one seam to the operating system: time and files. Code that needs either takes an
// Env* (default Env::Default()), so tests substitute a fake clock or failing files.
// Implementations are thread-safe.
class FL_EXPORT Env {
 public:
  virtual ~Env() = default;
  // The process-wide real environment; never deleted.
  static Env* Default();

  // Monotonic microseconds (steady clock for deadlines).
  virtual uint64_t NowMicros() = 0;
  // Seconds since the Unix epoch (wall clock, for records only).
  virtual int64_t NowUnixSeconds() = 0;
  virtual void SleepForMicros(int64_t micros) = 0;

  // Writes `data` to `path` atomically (temporary file + rename). With `sync`, the
  // file and its directory are fsync'd before returning, so the data survives a crash.
  virtual Status WriteFileAtomic(const std::string& path, std::string_view data, bool sync) = 0;
  // NotFound if missing; IOError-like failures are Unavailable.
  virtual Result<std::string> ReadFile(const std::string& path) = 0;
  virtual Status DeleteFile(const std::string& path) = 0;
  // Creates `path` and missing parents; OK if it exists.
  virtual Status CreateDirs(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;
};

// Forwards every call to a target Env; subclasses override only what they need.
class FL_EXPORT EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }
  uint64_t NowMicros() override { return target_->NowMicros(); }
  int64_t NowUnixSeconds() override { return target_->NowUnixSeconds(); }
  void SleepForMicros(int64_t micros) override { target_->SleepForMicros(micros); }
  Status WriteFileAtomic(const std::string& p, std::string_view d, bool sync) override {
    return target_->WriteFileAtomic(p, d, sync);
  }
  Result<std::string> ReadFile(const std::string& p) override { return target_->ReadFile(p); }
  Status DeleteFile(const std::string& p) override { return target_->DeleteFile(p); }
  Status CreateDirs(const std::string& p) override { return target_->CreateDirs(p); }
  bool FileExists(const std::string& p) override { return target_->FileExists(p); }

 private:
  Env* target_;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_ENV_H_
