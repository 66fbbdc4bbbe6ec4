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

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
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


#ifdef FL_BINARY_DIR
// A program of this build, by its path under the build directory.
inline std::string Binary(const std::string& relative) {
  return std::string(FL_BINARY_DIR) + "/" + relative;
}
#endif

// A test that runs processes: a fresh directory per test (`<prefix>_<pid>_<test name>` in
// the temporary directory), processes started by name with their output in
// `<dir>/<name>.log`, killed when the test ends, and the tail of every log printed if the
// test failed.
class ProcessTest : public ::testing::Test {
 protected:
  explicit ProcessTest(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           (prefix_ + "_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override {
    for (auto& [name, process] : processes_) {
      if (HasFailure()) {
        std::string log = process->Log();
        if (log.size() > 4000) log = "..." + log.substr(log.size() - 4000);
        std::printf("---- %s (log tail) ----\n%s\n", name.c_str(), log.c_str());
      }
    }
    processes_.clear();  // kills whatever still runs
    std::filesystem::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // fl-client's first arguments for a client of the fl-server on `port`: TLS against the
  // test's certs/ca.pem, enrolled with `token`. Callers append the rest.
  std::vector<std::string> FlClientArgs(int port, const std::string& token) const {
    return {Binary("client/fl-client"), "--server", "127.0.0.1:" + std::to_string(port),
            "--tls-ca", Path("certs/ca.pem"), "--enrollment-token", token};
  }

  Subprocess* Spawn(const std::string& name, const std::vector<std::string>& argv) {
    std::unique_ptr<Subprocess> p = Subprocess::Start(argv, Path(name + ".log"));
    EXPECT_NE(p, nullptr) << "cannot start " << argv[0];
    Subprocess* raw = p.get();
    processes_.emplace_back(name, std::move(p));
    return raw;
  }

  // Runs a command to its exit: its exit status (a failure if not 0), or -1 if it is
  // still running after `bound` (a hang guard, far above any healthy run).
  int RunToCompletion(const std::string& name, const std::vector<std::string>& argv,
                      std::chrono::milliseconds bound = std::chrono::seconds(120)) {
    Subprocess* p = Spawn(name, argv);
    if (p == nullptr) return -1;
    std::optional<int> code = p->Wait(bound);
    EXPECT_TRUE(code.has_value()) << name << " did not finish:\n" << p->Log();
    if (code.has_value() && *code != 0) ADD_FAILURE() << name << " failed:\n" << p->Log();
    return code.value_or(-1);
  }

  // Starts fl-server and waits for its "ready on port N" line; sets *port to N (0 on
  // failure).
  Subprocess* StartServer(const std::string& name, const std::vector<std::string>& args,
                          int* port) {
    *port = 0;
    Subprocess* server = Spawn(name, args);
    if (server == nullptr) return nullptr;
    const std::regex ready("ready on port ([0-9]+)");
    std::smatch m;
    const bool up = WaitUntil(
        [&] {
          const std::string log = server->Log();
          if (std::regex_search(log, m, ready)) *port = std::stoi(m[1].str());
          return *port != 0 || !server->Running();
        },
        std::chrono::seconds(30));
    EXPECT_TRUE(up && *port != 0) << name << " did not start:\n" << server->Log();
    return server;
  }

  std::filesystem::path dir_;

 private:
  std::string prefix_;
  std::vector<std::pair<std::string, std::unique_ptr<Subprocess>>> processes_;
};

}  // namespace fl::internal

#endif  // FL_TESTS_INTEGRATION_SUBPROCESS_H_
