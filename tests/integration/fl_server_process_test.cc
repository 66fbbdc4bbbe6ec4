// The fl-server binary as an operator runs it: a separate process with TLS certificates
// from `fl-server certs`, driven over gRPC by GrpcLink through a whole federation, then
// stopped by SIGTERM; and refusing bad configs with exit status 2.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "client/grpc_link.h"
#include "codec/dense_codec.h"
#include "crypto/sha256.h"
#include "store/store.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

const char kServerBinary[] = FL_BINARY_DIR "/server/fl-server";
// Only keeps a broken run from hanging: every wait below ends on an event (a line of
// output, the process's exit) long before.
constexpr std::chrono::seconds kSafetyCap(120);

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

  // Runs fl-server with `args` to completion; returns its exit status and output.
  std::pair<int, std::string> Run(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {kServerBinary};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = (dir_ / ("run" + std::to_string(runs_++) + ".log")).string();
    std::unique_ptr<Subprocess> child = Subprocess::Start(argv, log);
    EXPECT_NE(child, nullptr);
    if (child == nullptr) return {-1, ""};
    std::optional<int> code = child->Wait(kSafetyCap);
    EXPECT_TRUE(code.has_value()) << "fl-server did not exit within the " << kSafetyCap.count()
                                  << " s safety cap";
    return {code.value_or(-1), child->Log()};
  }

  // Group 1 of the first match of `pattern` in the child's output, waiting for it up to
  // the safety cap; empty if it never appears.
  static std::string WaitForOutput(Subprocess& child, const std::regex& pattern) {
    std::smatch m;
    std::string log;
    WaitUntil([&] { return std::regex_search(log = child.Log(), m, pattern); }, kSafetyCap);
    return std::regex_search(log, m, pattern) ? m[1].str() : "";
  }

  std::filesystem::path dir_;
  int runs_ = 0;
};

TEST_F(FlServerProcessTest, RunsAFederationOverTlsAndStopsOnSigterm) {
  const std::string certs = (dir_ / "certs").string();
  {
    auto [code, output] = Run({"certs", "--out", certs});
    ASSERT_EQ(code, 0) << output;
  }
  const std::string state = (dir_ / "state").string();
  // After the last round the server drains for an hour (the longest allowed), far past
  // the safety cap: it exits in this test only because SIGTERM ends the drain.
  std::unique_ptr<Subprocess> server = Subprocess::Start(
      {kServerBinary, "--listen", "127.0.0.1:0", "--tls-cert", certs + "/server.pem", "--tls-key",
       certs + "/server.key", "--model", "random:5000", "--rounds", "2", "--state-dir", state,
       "--enrollment-token", "tok", "--set", "server.drain_s=3600"},
      (dir_ / "server.log").string());
  ASSERT_NE(server, nullptr);
  const std::string port = WaitForOutput(*server, std::regex("ready on port ([0-9]+)"));
  ASSERT_FALSE(port.empty()) << "no \"ready on port\" line:\n" << server->Log();

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
  EXPECT_FALSE(WaitForOutput(*server, std::regex("(federation finished)")).empty())
      << "no \"federation finished\" line:\n" << server->Log();

  // The client stays connected: a graceful stop must not wait for it to hang up, nor
  // for the drain to run out.
  server->Kill(SIGTERM);
  const std::optional<int> code = server->Wait(kSafetyCap);
  ASSERT_TRUE(code.has_value()) << "fl-server did not exit after SIGTERM (" << kSafetyCap.count()
                                << " s safety cap):\n" << server->Log();
  EXPECT_EQ(*code, 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("fl-server stopped"));

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
    std::vector<std::string> args = {"--state-dir", state, "--listen", "127.0.0.1:0"};
    if (std::find(extra.begin(), extra.end(), "--model") == extra.end()) {
      args.insert(args.end(), {"--model", "random:10"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    auto [code, output] = Run(args);
    EXPECT_EQ(code, 2) << output;
    EXPECT_THAT(output, HasSubstr(expected));
  }
  // Refused before any work: nothing was written.
  EXPECT_FALSE(std::filesystem::exists(state));
}

}  // namespace
}  // namespace fl::internal
