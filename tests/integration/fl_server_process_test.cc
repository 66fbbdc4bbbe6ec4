// The fl-server binary as an operator runs it: a separate process with TLS certificates
// from `fl-server certs`, driven over gRPC by GrpcLink through a whole federation, then
// stopped by SIGTERM; and refusing bad configs with exit status 2.

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "client/grpc_link.h"
#include "codec/dense_codec.h"
#include "crypto/sha256.h"
#include "store/store.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

const char kServerBinary[] = FL_BINARY_DIR "/server/fl-server";

// A child process whose stderr is collected by a reader thread (so the child never
// blocks on a full pipe).
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      ::dup2(fds[1], STDOUT_FILENO);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof(buf))) > 0) {
        std::lock_guard<std::mutex> lock(mu_);
        output_.append(buf, static_cast<size_t>(n));
        cv_.notify_all();
      }
      ::close(fd);
      std::lock_guard<std::mutex> lock(mu_);
      eof_ = true;
      cv_.notify_all();
    });
  }

  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    if (reader_.joinable()) reader_.join();
  }

  pid_t pid() const { return pid_; }

  // The first match of `pattern`'s group 1 in the output, waiting up to `timeout`.
  std::string WaitFor(const std::regex& pattern, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    std::smatch m;
    cv_.wait_for(lock, timeout, [&] { return std::regex_search(output_, m, pattern) || eof_; });
    return std::regex_search(output_, m, pattern) ? m[1].str() : "";
  }

  // Exit status, or -1 if it did not exit normally.
  int Wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string output() {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  bool eof_ = false;
};

class FlServerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_server_process_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(FlServerProcessTest, RunsAFederationOverTlsAndStopsOnSigterm) {
  const std::string certs = (dir_ / "certs").string();
  {
    Child gen({kServerBinary, "certs", "--out", certs});
    ASSERT_EQ(gen.Wait(), 0) << gen.output();
  }
  const std::string state = (dir_ / "state").string();
  Child server({kServerBinary, "--listen", "127.0.0.1:0", "--tls-cert", certs + "/server.pem",
                "--tls-key", certs + "/server.key", "--model", "random:5000", "--rounds", "2",
                "--state-dir", state, "--enrollment-token", "tok", "--set", "server.drain_s=60"});
  const std::string port =
      server.WaitFor(std::regex("ready on port ([0-9]+)"), milliseconds(20000));
  ASSERT_FALSE(port.empty()) << server.output();

  GrpcLinkOptions options;
  options.target = "localhost:" + port;
  options.root_ca_path = certs + "/ca.pem";
  auto link = GrpcLink::Create(options);
  ASSERT_TRUE(link.ok()) << link.status().ToString();
  ASSERT_TRUE((*link)->Join("tok", "device-1").ok());

  int trained = 0;
  for (int step = 0; step < 50; ++step) {
    Result<Task> task = (*link)->PullTask(milliseconds(2000));
    ASSERT_TRUE(task.ok()) << task.status().ToString();
    if (task->kind == TaskKind::kDone) break;
    if (task->kind != TaskKind::kTrain) continue;
    Result<ModelSnapshot> model = (*link)->FetchModel(task->model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    std::vector<float> delta(model->params->size(), 0.01f);
    Payload p;
    ASSERT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = task->round;
    p.meta.base_version = task->model_version;
    p.meta.weight = 1;
    p.meta.num_examples = 1;
    p.meta.layout_hash = model->params->layout().hash();
    Result<PushAck> ack = (*link)->PushUpdate(p);
    ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    ++trained;
  }
  EXPECT_EQ(trained, 2);
  EXPECT_FALSE(server.WaitFor(std::regex("(federation finished)"), milliseconds(10000)).empty())
      << server.output();

  // The client stays connected: a graceful stop must not wait for it to hang up.
  const auto stop_start = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(server.pid(), SIGTERM), 0);
  EXPECT_EQ(server.Wait(), 0) << server.output();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_start, std::chrono::seconds(3));
  EXPECT_THAT(server.output(), HasSubstr("fl-server stopped"));

  StoreOptions so;
  so.path = state + "/state.db";
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto rounds = (*store)->ListRounds();
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 2u);
  for (const RoundRecord& r : *rounds) {
    EXPECT_EQ(r.state, RoundState::kClosed);
    EXPECT_EQ(r.num_updates, 1u);
  }
  EXPECT_TRUE(std::filesystem::exists(state + "/models/v2.flps"));
}

TEST_F(FlServerProcessTest, BadConfigExitsWithStatus2NamingTheKey) {
  const std::string state = (dir_ / "state").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--rounds", "-1"}, "run.rounds"},
      {{"--set", "coordinator.client_fraction=0"}, "coordinator.client_fraction"},
      {{"--set", "coordinator.round_deadline_s=-5"}, "coordinator.round_deadline_s"},
      {{"--min-clients", "0"}, "coordinator.min_clients"},
      {{"--insecure", "--model", "random:abc"}, "random:<n>"},
      {{"--insecure", "--model", "cnn"}, "model.init_file"},
      {{}, "insecure"},  // no TLS files and no explicit --insecure
      {{"--insecure", "--tls-cert", "x.pem"}, "insecure"},
  };
  for (const auto& [extra, expected] : cases) {
    std::vector<std::string> args = {kServerBinary, "--state-dir", state, "--listen",
                                     "127.0.0.1:0"};
    if (std::find(extra.begin(), extra.end(), "--model") == extra.end()) {
      args.insert(args.end(), {"--model", "random:10"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    Child child(args);
    EXPECT_EQ(child.Wait(), 2) << child.output();
    EXPECT_THAT(child.output(), HasSubstr(expected));
  }
  // Refused before any work: nothing was written.
  EXPECT_FALSE(std::filesystem::exists(state));
}

}  // namespace
}  // namespace fl::internal
