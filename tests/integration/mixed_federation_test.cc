// One federation, three languages: a TLS fl-server (model logreg) with the C example
// (examples/c_client.c, over libfl_client's C ABI), the Python example
// (examples/python_client.py, the same ABI through ctypes and libfl_client.so) and the
// C++ fl-client (LibTorch) as its three clients. Every process runs to its natural exit;
// the test then reads the clients' `global accuracy:` lines and the server's SQLite state.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "store/store.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr char kToken[] = "mixed-enrollment-token";
constexpr int kRounds = 3;
constexpr int kClients = 3;
// 2,000 training images per client: enough for softmax regression to move from chance
// to ~75% in three rounds, small enough that each task takes well under a second.
constexpr char kTrainExamples[] = "6000";
// Bounds on how long a process may take before the test calls it hung. They guard
// against a hang only; nothing asserts on time.
constexpr auto kProcessBound = seconds(180);

// The Python interpreter with `args`; under ASan, with the sanitizer runtime preloaded
// (the interpreter is not instrumented, the library it loads is).
std::vector<std::string> Python(std::vector<std::string> args) {
  std::vector<std::string> argv;
#ifdef FL_PYTHON_PRELOAD
  argv = {"/usr/bin/env", std::string("LD_PRELOAD=") + FL_PYTHON_PRELOAD};
#endif
  argv.push_back(FL_PYTHON);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

struct GlobalAccuracy {
  double initial = 0;
  double final = 0;
};

// The last "global accuracy: initial X final Y" line of a client's output.
std::optional<GlobalAccuracy> ParseGlobalAccuracy(const std::string& log) {
  const std::regex line("global accuracy: initial ([0-9.]+) final ([0-9.]+)");
  std::optional<GlobalAccuracy> found;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    found = GlobalAccuracy{std::stod((*it)[1].str()), std::stod((*it)[2].str())};
  }
  return found;
}

class MixedFederationTest : public ProcessTest {
 protected:
  MixedFederationTest() : ProcessTest("fl_mixed") {}
};

TEST_F(MixedFederationTest, CPythonAndCppClientsTrainOneModelOverTls) {
  // The Python example needs numpy; a missing one is a setup failure to report, not a
  // reason to skip (scripts/install-deps.sh installs python3-numpy).
  ASSERT_EQ(RunToCompletion("numpy", {FL_PYTHON, "-c", "import numpy"}), 0)
      << FL_PYTHON << " cannot import numpy (apt install python3-numpy)";
  ASSERT_EQ(RunToCompletion("certs", {Binary("server/fl-server"), "certs", "--out", Path("certs")}),
            0);
  const std::string init = Path("logreg.flps");
  ASSERT_EQ(RunToCompletion("export", {Binary("simulations/fl-sim"), "export-model", "--model",
                                       "logreg", "--seed", "3", "--out", init}),
            0);

  // Port 0: the kernel picks a free one and the server prints it.
  Subprocess* server = Spawn(
      "fl-server",
      {Binary("server/fl-server"), "--listen", "127.0.0.1:0", "--tls-cert",
       Path("certs/server.pem"), "--tls-key", Path("certs/server.key"), "--init-model", init,
       "--rounds", std::to_string(kRounds), "--seed", "3", "--state-dir", Path("state"),
       "--enrollment-token", kToken, "--min-clients", std::to_string(kClients),
       "--clients-per-round", std::to_string(kClients),
       // One epoch of plain SGD per task, as every client implements it.
       "--set", "train.local_epochs=1", "--set", "train.local_steps=0", "--set",
       "train.batch_size=32", "--set", "train.lr=0.05", "--set", "train.momentum=0",
       "--set", "train.upload_encoding=f32",
       // The clients download the final model after the last round closes: the server
       // keeps answering until the test stops it (SIGTERM below), not for a fixed time.
       "--set", "server.drain_s=3600"});
  ASSERT_NE(server, nullptr);
  int port = 0;
  const std::regex ready("ready on port ([0-9]+)");
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::smatch m;
        const std::string log = server->Log();
        if (std::regex_search(log, m, ready)) port = std::stoi(m[1].str());
        return port != 0 || !server->Running();
      },
      kProcessBound));
  ASSERT_NE(port, 0) << "fl-server did not start:\n" << server->Log();
  const std::string address = "127.0.0.1:" + std::to_string(port);

  // Every client: TLS against the dev CA, the same token, 2-s polls.
  const std::vector<std::string> connection = {"--server", address, "--tls-ca",
                                                Path("certs/ca.pem"), "--enrollment-token",
                                                kToken};
  auto common = [&](std::vector<std::string> argv) {
    argv.insert(argv.end(), connection.begin(), connection.end());
    return argv;
  };
  std::map<std::string, Subprocess*> clients;
  clients["c"] = Spawn(
      "c-client", common({Binary("examples/fl-example-c-client"), "--name", "c-0",
                          "--data-dir", FL_FASHION_MNIST_DIR, "--partition-index", "0",
                          "--num-partitions", "3", "--train-examples", kTrainExamples,
                          "--poll-wait-ms", "2000"}));
  clients["python"] = Spawn(
      "python-client",
      common(Python({std::string(FL_SOURCE_DIR) + "/examples/python_client.py", "--library",
                     FL_CLIENT_SHARED_LIBRARY, "--name", "py-1", "--data-dir",
                     FL_FASHION_MNIST_DIR, "--partition-index", "1", "--num-partitions", "3",
                     "--train-examples", kTrainExamples, "--poll-wait-ms", "2000"})));
  clients["cpp"] = Spawn(
      "fl-client", common({Binary("client/fl-client"), "--model", "logreg", "--data-dir",
                           FL_FASHION_MNIST_DIR, "--partition", "iid", "--num-partitions", "3",
                           "--partition-index", "2", "--seed", "3", "--train-examples",
                           kTrainExamples, "--device", "cpu", "--threads", "1", "--set",
                           "client.poll_wait_s=2"}));

  for (const auto& [name, client] : clients) {
    ASSERT_NE(client, nullptr);
    std::optional<int> code = client->Wait(kProcessBound);
    ASSERT_TRUE(code.has_value()) << name << " client hung:\n" << client->Log();
    EXPECT_EQ(*code, 0) << name << " client failed:\n" << client->Log();
    EXPECT_THAT(client->Log(), HasSubstr("federation finished")) << name;
  }
  ASSERT_TRUE(server->Running()) << "fl-server exited before its drain:\n" << server->Log();
  server->Kill(SIGTERM);
  std::optional<int> server_code = server->Wait(kProcessBound);
  ASSERT_TRUE(server_code.has_value()) << "fl-server ignored SIGTERM:\n" << server->Log();
  EXPECT_EQ(*server_code, 0) << server->Log();

  // The C and Python clients evaluated the initial and final global models on the same
  // 10,000 test images, each with its own code: they must agree (the models are the same
  // bits; only float summation order differs), and the federation must have learned.
  std::map<std::string, GlobalAccuracy> accuracy;
  for (const std::string name : {"c", "python"}) {
    const std::string log = clients[name]->Log();
    std::optional<GlobalAccuracy> a = ParseGlobalAccuracy(log);
    ASSERT_TRUE(a.has_value()) << name << " printed no global accuracy line:\n" << log;
    EXPECT_THAT(log, HasSubstr("final global model: version " + std::to_string(kRounds)));
    accuracy[name] = *a;
    std::printf("%s client: global accuracy initial %.4f final %.4f\n", name.c_str(),
                a->initial, a->final);
  }
  EXPECT_NEAR(accuracy["c"].initial, accuracy["python"].initial, 0.002);
  EXPECT_NEAR(accuracy["c"].final, accuracy["python"].final, 0.002);
  // Chance is 0.1; three rounds over 6,000 images reach ~0.75. The margin keeps a model
  // that barely moved (e.g. clients training mismatched layouts) from passing.
  EXPECT_GT(accuracy["c"].final, accuracy["c"].initial + 0.3);

  // The server's record: every round closed with one accepted update from each client.
  StoreOptions store_options;
  store_options.path = Path("state/state.db");
  store_options.durable = false;
  Result<std::unique_ptr<Store>> store = Store::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::vector<RoundRecord>> rounds = (*store)->ListRounds();
  ASSERT_TRUE(rounds.ok()) << rounds.status().ToString();
  ASSERT_EQ(rounds->size(), static_cast<size_t>(kRounds));
  for (const RoundRecord& r : *rounds) {
    SCOPED_TRACE("round " + std::to_string(r.round));
    EXPECT_EQ(r.state, RoundState::kClosed);
    EXPECT_EQ(r.num_updates, static_cast<uint64_t>(kClients));
    Result<std::vector<LedgerEntry>> ledger = (*store)->LedgerForRound(r.round);
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    std::map<uint64_t, int> accepted;
    for (const LedgerEntry& e : *ledger) {
      if (e.status_code == 0) ++accepted[e.client_id];
    }
    EXPECT_EQ(accepted.size(), static_cast<size_t>(kClients));
  }
}

}  // namespace
}  // namespace fl::internal
