#ifndef FL_TESTS_INTEGRATION_SUBPROCESS_H_
#define FL_TESTS_INTEGRATION_SUBPROCESS_H_

// Child processes for multi-process tests. A child's stdout and stderr go to a log file;
// the child is killed (SIGKILL) and reaped when its Subprocess is destroyed, and it also
// dies with the test process (PR_SET_PDEATHSIG), so no test leaves a process behind.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fl::internal {

class Subprocess {
 public:
  // Starts argv[0] (a path) with argv[1..]; output (stdout and stderr) is appended to
  // `log_path`. Returns nullptr if fork fails; a failed exec makes the child exit 127.
  static std::unique_ptr<Subprocess> Start(const std::vector<std::string>& argv,
                                           const std::string& log_path) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);  // the test died before prctl
      const int null_fd = ::open("/dev/null", O_RDONLY);
      const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (null_fd < 0 || log_fd < 0) ::_exit(126);
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    return std::unique_ptr<Subprocess>(new Subprocess(pid, log_path));
  }

  ~Subprocess() {
    if (!exit_code_.has_value()) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Waits up to `timeout` for the child to exit. Returns its exit status, or 128 + signal
  // if a signal ended it; nullopt if it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (!exit_code_.has_value()) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= end) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_code_;
  }

  bool Running() { return !Wait(std::chrono::milliseconds(0)).has_value(); }

  // Sends `signal` and, for SIGKILL, reaps the child.
  void Kill(int signal) {
    if (exit_code_.has_value()) return;
    ::kill(pid_, signal);
    if (signal == SIGKILL) Wait(std::chrono::seconds(10));
  }

  // Everything the child wrote so far.
  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  Subprocess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string log_path_;
  std::optional<int> exit_code_;
};

// Polls `done` every 20 ms until it returns true (true) or `timeout` passes (false).
inline bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace fl::internal

#endif  // FL_TESTS_INTEGRATION_SUBPROCESS_H_
