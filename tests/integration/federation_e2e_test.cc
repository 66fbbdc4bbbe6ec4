// Whole federations of real processes on loopback: fl-server with TLS (certificates
// from `fl-server certs`), fl-client processes training LibTorch models on
// Fashion-MNIST shards, fl-sim as the in-process reference, and the torch-free example
// app. The server's state is read back from its SQLite file.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "codec/param_io.h"
#include "fl/env.h"
#include "fl/param_set.h"
#include "store/store.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr char kToken[] = "e2e-enrollment-token";
constexpr int kSeed = 5;
constexpr int kClients = 3;
constexpr char kPartition[] = "dirichlet:0.5";
constexpr char kTrainExamples[] = "3000";

// The federation's training setup. fl-server, fl-client and fl-sim receive the same
// values, so the three describe one federation.
std::vector<std::string> TrainFlags() {
  return {"--set", "train.local_steps=4", "--set", "train.batch_size=16",
          "--set", "train.lr=0.05",       "--set", "train.momentum=0",
          "--set", "train.upload_encoding=f32"};
}

Result<ParamSet> ReadModel(const std::string& path) {
  FL_ASSIGN_OR_RETURN(std::string bytes, Env::Default()->ReadFile(path));
  return ParseParamSet(bytes);
}

struct Difference {
  double max_abs = 0;
  size_t num_different = 0;  // elements whose bits differ
};

Difference Compare(const ParamSet& a, const ParamSet& b) {
  Difference d;
  for (size_t i = 0; i < a.size(); ++i) {
    const float x = a.data()[i];
    const float y = b.data()[i];
    if (std::memcmp(&x, &y, sizeof(float)) != 0) ++d.num_different;
    d.max_abs = std::max(d.max_abs, std::fabs(static_cast<double>(x) - y));
  }
  return d;
}

class FederationE2eTest : public ProcessTest {
 protected:
  FederationE2eTest() : ProcessTest("fl_e2e") {}

  void SetUp() override {
    ProcessTest::SetUp();
    ASSERT_EQ(RunToCompletion("certs", {Binary("server/fl-server"), "certs", "--out", Path("certs")}),
              0);
  }

  // `fl-sim export-model`: the seeded initial parameters of a zoo model.
  std::string ExportModel(const std::string& model) {
    const std::string out = Path("init-" + model + ".flps");
    EXPECT_EQ(RunToCompletion("export-" + model,
                              {Binary("simulations/fl-sim"), "export-model", "--model", model,
                               "--seed", std::to_string(kSeed), "--out", out}),
              0);
    return out;
  }

  std::vector<std::string> ServerArgs(const std::string& listen, int rounds,
                                      const std::string& init_model, int clients = kClients) {
    std::vector<std::string> args = {
        Binary("server/fl-server"),
        "--listen", listen,
        "--tls-cert", Path("certs/server.pem"),
        "--tls-key", Path("certs/server.key"),
        "--init-model", init_model,
        "--rounds", std::to_string(rounds),
        "--seed", std::to_string(kSeed),
        "--state-dir", Path("state"),
        "--enrollment-token", kToken,
        "--min-clients", std::to_string(clients),
        "--clients-per-round", std::to_string(clients),
        // The server keeps answering after the last round until the test stops it with
        // SIGTERM once every client has exited: no client can find it gone, however slow
        // the machine.
        "--set", "server.drain_s=3600",
    };
    for (const std::string& f : TrainFlags()) args.push_back(f);
    return args;
  }

  std::vector<std::string> ClientArgs(int port, int index, const std::string& model,
                                      const std::string& token = kToken) {
    std::vector<std::string> args = FlClientArgs(port, token);
    args.insert(args.end(), {
            "--data-dir", FL_FASHION_MNIST_DIR,
            "--partition", kPartition,
            "--num-partitions", std::to_string(kClients),
            "--partition-index", std::to_string(index),
            "--seed", std::to_string(kSeed),
            "--train-examples", kTrainExamples,
            "--model", model,
            "--device", "cpu",
            "--threads", "1",
            "--set", "client.poll_wait_s=2"});
    return args;
  }

  std::vector<Subprocess*> StartClients(int port, const std::string& model,
                                        const std::map<int, std::vector<std::string>>& extra = {}) {
    std::vector<Subprocess*> clients;
    for (int i = 0; i < kClients; ++i) {
      std::vector<std::string> args = ClientArgs(port, i, model);
      if (auto it = extra.find(i); it != extra.end()) {
        args.insert(args.end(), it->second.begin(), it->second.end());
      }
      clients.push_back(Spawn("client-" + std::to_string(i), args));
    }
    return clients;
  }

  // Waits for every client to exit 0, then stops the draining server with SIGTERM and
  // waits for it to exit 0 (each wait bounded only as a safety cap).
  void ExpectFederationFinishes(Subprocess* server, const std::vector<Subprocess*>& clients) {
    for (Subprocess* c : clients) {
      std::optional<int> client_code = c->Wait(seconds(120));
      ASSERT_TRUE(client_code.has_value()) << "fl-client still running:\n" << c->Log();
      EXPECT_EQ(*client_code, 0) << c->Log();
      EXPECT_THAT(c->Log(), HasSubstr("federation finished"));
    }
    StopServer(server);
  }

  // SIGTERM, then the graceful stop's exit status 0.
  void StopServer(Subprocess* server) {
    ASSERT_TRUE(server->Running()) << "fl-server ended before the clients:\n" << server->Log();
    server->Kill(SIGTERM);
    std::optional<int> code = server->Wait(seconds(120));
    ASSERT_TRUE(code.has_value()) << "fl-server ignored SIGTERM:\n" << server->Log();
    EXPECT_EQ(*code, 0) << server->Log();
  }

  // The same federation in one process; returns the path of its final model.
  std::string RunSimulation(int rounds, const std::string& model) {
    std::vector<std::string> args = {
        Binary("simulations/fl-sim"), "run",
        "--rounds", std::to_string(rounds),
        "--seed", std::to_string(kSeed),
        "--model", model,
        "--clients", std::to_string(kClients),
        "--clients-per-round", std::to_string(kClients),
        "--partition", kPartition,
        "--data-dir", FL_FASHION_MNIST_DIR,
        "--train-examples", kTrainExamples,
        "--test-examples", "500",
        "--workers", "2",
        "--threads-per-worker", "1",
        "--device", "cpu",
        "--progress", "none",
        "--out", Path("sim"),
    };
    for (const std::string& f : TrainFlags()) args.push_back(f);
    EXPECT_EQ(RunToCompletion("fl-sim", args, seconds(120)), 0);
    return LatestModelPath(Path("sim/run.db"), rounds);
  }

  std::unique_ptr<Store> OpenStore(const std::string& path) {
    StoreOptions options;
    options.path = path;
    options.durable = false;
    Result<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // The newest model recorded in the SQLite file at `db`; expects it to be `version`.
  std::string LatestModelPath(const std::string& db, uint64_t version) {
    std::unique_ptr<Store> store = OpenStore(db);
    if (store == nullptr) return "";
    Result<std::optional<ModelRecord>> latest = store->LatestModel();
    EXPECT_TRUE(latest.ok() && latest->has_value());
    if (!latest.ok() || !latest->has_value()) return "";
    EXPECT_EQ((*latest)->version, version);
    return (*latest)->path;
  }

  // Every round 1..rounds closed with one accepted update from each of the kClients
  // clients, and the coordinator's fold (num_updates, total_weight) agrees with the
  // ledger: each acknowledged update was folded exactly once.
  void ExpectRoundsFoldedOnce(Store& store, uint64_t rounds) {
    Result<std::vector<RoundRecord>> records = store.ListRounds();
    ASSERT_TRUE(records.ok()) << records.status().ToString();
    ASSERT_EQ(records->size(), rounds);
    for (const RoundRecord& r : *records) {
      SCOPED_TRACE("round " + std::to_string(r.round));
      EXPECT_EQ(r.state, RoundState::kClosed);
      Result<std::vector<LedgerEntry>> ledger = store.LedgerForRound(r.round);
      ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
      std::map<uint64_t, int> accepted_per_client;
      double accepted_weight = 0;
      for (const LedgerEntry& e : *ledger) {
        if (e.status_code != 0) continue;
        ++accepted_per_client[e.client_id];
        accepted_weight += e.weight;
      }
      EXPECT_EQ(accepted_per_client.size(), static_cast<size_t>(kClients));
      for (const auto& [client, count] : accepted_per_client) {
        EXPECT_EQ(count, 1) << "client " << client;
      }
      EXPECT_EQ(r.num_updates, static_cast<uint64_t>(kClients));
      EXPECT_DOUBLE_EQ(r.total_weight, accepted_weight);
      EXPECT_GT(accepted_weight, 0);
    }
  }

};

TEST_F(FederationE2eTest, TlsServerAndThreeClientsCompleteRoundsAndRefuseBadToken) {
  const std::string init = ExportModel("mlp");
  int port = 0;
  Subprocess* server = StartServer("fl-server", ServerArgs("127.0.0.1:0", 3, init), &port);
  ASSERT_NE(port, 0);
  std::vector<Subprocess*> clients = StartClients(port, "mlp");
  std::vector<std::string> intruder_args = ClientArgs(port, 0, "mlp", "not-the-token");
  intruder_args.insert(intruder_args.end(), {"--name", "intruder"});
  Subprocess* intruder = Spawn("intruder", intruder_args);

  std::optional<int> refused = intruder->Wait(seconds(60));
  ASSERT_TRUE(refused.has_value()) << intruder->Log();
  EXPECT_EQ(*refused, 1);
  EXPECT_THAT(intruder->Log(), HasSubstr("refused enrollment of intruder: wrong enrollment token"));

  ExpectFederationFinishes(server, clients);

  std::unique_ptr<Store> store = OpenStore(Path("state/state.db"));
  ASSERT_NE(store, nullptr);
  ExpectRoundsFoldedOnce(*store, 3);
  Result<std::vector<ClientRecord>> known = store->ListClients();
  ASSERT_TRUE(known.ok());
  std::set<std::string> names;
  for (const ClientRecord& c : *known) names.insert(c.name);
  EXPECT_EQ(names, (std::set<std::string>{"client-0", "client-1", "client-2"}));

  Result<ParamSet> initial = ReadModel(init);
  Result<ParamSet> final_model = ReadModel(LatestModelPath(Path("state/state.db"), 3));
  ASSERT_TRUE(initial.ok() && final_model.ok());
  ASSERT_EQ(final_model->layout().hash(), initial->layout().hash());
  EXPECT_TRUE(final_model->AllFinite());
  EXPECT_GT(Compare(*initial, *final_model).max_abs, 1e-4) << "training changed nothing";
}

TEST_F(FederationE2eTest, ServerKilledMidRoundResumesAndFoldsEachAcknowledgedUpdateOnce) {
  constexpr int kRounds = 3;
  constexpr uint64_t kCrashRound = 2;
  const std::string init = ExportModel("mlp");
  int port = 0;
  Subprocess* server = StartServer("fl-server", ServerArgs("127.0.0.1:0", kRounds, init), &port);
  ASSERT_NE(port, 0);
  // client-2 takes 2 s longer per task, so each round has a stretch in which the other
  // two updates are acknowledged and the round is still open.
  std::vector<Subprocess*> clients =
      StartClients(port, "mlp", {{2, {"--set", "client.slowdown_s=2"}}});

  // Kill -9 once an update of round kCrashRound is acknowledged (durable in the ledger).
  const std::string db = Path("state/state.db");
  size_t acknowledged_before_kill = 0;
  const bool mid_round = WaitUntil(
      [&] {
        if (!server->Running()) return true;  // reported below
        std::unique_ptr<Store> store = OpenStore(db);
        if (store == nullptr) return false;
        Result<std::vector<LedgerEntry>> accepted = store->AcceptedUpdates(kCrashRound);
        if (!accepted.ok() || accepted->empty()) return false;
        server->Kill(SIGKILL);
        return true;
      },
      seconds(60));
  ASSERT_TRUE(mid_round) << "no update of round " << kCrashRound << " was acknowledged";
  ASSERT_EQ(server->Wait(seconds(0)), std::optional<int>(128 + SIGKILL))
      << "fl-server ended before the kill";
  std::set<std::string> acknowledged_sha;
  {
    std::unique_ptr<Store> store = OpenStore(db);
    Result<std::optional<RoundRecord>> open = store->GetOpenRound();
    ASSERT_TRUE(open.ok() && open->has_value()) << "the kill did not land inside a round";
    ASSERT_EQ((*open)->round, kCrashRound) << "the kill did not land inside round " << kCrashRound;
    Result<std::vector<LedgerEntry>> accepted = store->AcceptedUpdates(kCrashRound);
    ASSERT_TRUE(accepted.ok());
    acknowledged_before_kill = accepted->size();
    for (const LedgerEntry& e : *accepted) acknowledged_sha.insert(e.sha256_hex);
  }
  ASSERT_GE(acknowledged_before_kill, 1u);
  ASSERT_LT(acknowledged_before_kill, static_cast<size_t>(kClients));

  // Same state directory, same port: the clients' links retry until it is back.
  int restarted_port = 0;
  Subprocess* restarted = StartServer(
      "fl-server-restarted", ServerArgs("127.0.0.1:" + std::to_string(port), kRounds, init),
      &restarted_port);
  ASSERT_EQ(restarted_port, port);
  ExpectFederationFinishes(restarted, clients);
  EXPECT_THAT(restarted->Log(),
              HasSubstr("resumed round " + std::to_string(kCrashRound) + " with " +
                        std::to_string(acknowledged_before_kill) +
                        " acknowledged updates refolded"));

  std::unique_ptr<Store> store = OpenStore(db);
  ASSERT_NE(store, nullptr);
  ExpectRoundsFoldedOnce(*store, kRounds);
  // Every update acknowledged before the kill is among the round's folded updates.
  Result<std::vector<LedgerEntry>> accepted = store->AcceptedUpdates(kCrashRound);
  ASSERT_TRUE(accepted.ok());
  std::set<std::string> folded_sha;
  for (const LedgerEntry& e : *accepted) folded_sha.insert(e.sha256_hex);
  for (const std::string& sha : acknowledged_sha) EXPECT_EQ(folded_sha.count(sha), 1u) << sha;

  // Folding an update twice, or losing one, would move the global model: the crashed
  // federation must end where an uninterrupted one (fl-sim, same seeds) ends. The
  // tolerance covers the fp64 fold's arrival order (see ProcessesMatchSimulation).
  Result<ParamSet> crashed = ReadModel(LatestModelPath(db, kRounds));
  Result<ParamSet> reference = ReadModel(RunSimulation(kRounds, "mlp"));
  ASSERT_TRUE(crashed.ok() && reference.ok());
  ASSERT_EQ(crashed->layout().hash(), reference->layout().hash());
  const Difference d = Compare(*crashed, *reference);
  std::printf("kill -9 in round %llu after %zu of %d updates acknowledged; final model vs "
              "fl-sim: %zu of %zu parameters differ, max abs difference %.3g\n",
              static_cast<unsigned long long>(kCrashRound), acknowledged_before_kill, kClients,
              d.num_different, crashed->size(), d.max_abs);
  EXPECT_LE(d.max_abs, 1e-6);
}

TEST_F(FederationE2eTest, ProcessesMatchSimulation) {
  constexpr int kRounds = 2;
  const std::string init = ExportModel("cnn");
  int port = 0;
  Subprocess* server = StartServer("fl-server", ServerArgs("127.0.0.1:0", kRounds, init), &port);
  ASSERT_NE(port, 0);
  std::vector<Subprocess*> clients = StartClients(port, "cnn");
  ExpectFederationFinishes(server, clients);
  Result<ParamSet> distributed = ReadModel(LatestModelPath(Path("state/state.db"), kRounds));
  ASSERT_TRUE(distributed.ok()) << distributed.status().ToString();

  Result<ParamSet> simulated = ReadModel(RunSimulation(kRounds, "cnn"));
  ASSERT_TRUE(simulated.ok()) << simulated.status().ToString();
  ASSERT_EQ(distributed->layout().hash(), simulated->layout().hash());

  Result<ParamSet> initial = ReadModel(init);
  ASSERT_TRUE(initial.ok());
  EXPECT_GT(Compare(*initial, *simulated).max_abs, 1e-4) << "training changed nothing";

  // Each client's update is bitwise the same in both runs (same shard, training seed,
  // model bits and one LibTorch thread; f32 uploads are exact on the wire). The server
  // folds w_i * delta_i in fp64 in arrival order, which differs between the runs; each
  // product is exact in fp64, so a different order can only change the fp64 sum in its
  // last bit where the terms' magnitudes differ by > 2^17, and that changes the float32
  // result only if the sum lies within that bit of a float32 rounding boundary
  // (probability ~2^-29 per such element). Hence bitwise equality is expected and
  // asserted; should a fold ever become order-sensitive beyond that, max_abs <= 1e-6
  // would be the bound to fall back to.
  const Difference d = Compare(*distributed, *simulated);
  RecordProperty("max_abs_difference", std::to_string(d.max_abs));
  RecordProperty("elements_differing", std::to_string(d.num_different));
  std::printf("fl-server + %d fl-client vs fl-sim after %d rounds: %zu of %zu parameters "
              "differ, max abs difference %.3g\n",
              kClients, kRounds, d.num_different, distributed->size(), d.max_abs);
  EXPECT_EQ(d.num_different, 0u) << "max abs difference " << d.max_abs;
  EXPECT_LE(d.max_abs, 1e-6);
}

TEST_F(FederationE2eTest, LinearExampleAppLearnsOverTls) {
  const std::string example = Binary("examples/fl-example-linear-client");
  const std::string init = Path("linear.flps");
  ASSERT_EQ(RunToCompletion("export-linear", {example, "--export-model", init}), 0);
  std::vector<std::string> server_args = ServerArgs("127.0.0.1:0", 5, init, /*clients=*/2);
  server_args.insert(server_args.end(), {"--set", "train.local_steps=8", "--set", "train.lr=0.1"});
  int port = 0;
  Subprocess* server = StartServer("fl-server", server_args, &port);
  ASSERT_NE(port, 0);
  std::vector<Subprocess*> devices;
  for (int i = 1; i <= 2; ++i) {
    devices.push_back(Spawn("sensor-" + std::to_string(i),
                            {example, "--server", "127.0.0.1:" + std::to_string(port), "--tls-ca",
                             Path("certs/ca.pem"), "--enrollment-token", kToken, "--name",
                             "sensor-" + std::to_string(i), "--data-seed", std::to_string(i)}));
  }
  const std::regex initial_re("initial loss ([0-9.]+)");
  const std::regex final_re("final global model v5: loss ([0-9.]+)");
  for (Subprocess* d : devices) {
    std::optional<int> code = d->Wait(seconds(120));
    ASSERT_TRUE(code.has_value()) << d->Log();
    EXPECT_EQ(*code, 0) << d->Log();
    const std::string log = d->Log();
    std::smatch before, after;
    ASSERT_TRUE(std::regex_search(log, before, initial_re)) << log;
    ASSERT_TRUE(std::regex_search(log, after, final_re)) << log;
    EXPECT_LT(std::stod(after[1].str()), 0.25 * std::stod(before[1].str())) << log;
  }
  StopServer(server);
}

TEST_F(FederationE2eTest, ClientRejectsBadConfigWithUsageStatus) {
  const std::string client = Binary("client/fl-client");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--server", "127.0.0.1:1"}, "data.partition_index"},
      {{"--partition-index", "0", "--insecure", "--tls-ca", Path("certs/ca.pem")}, "insecure"},
      {{"--partition-index", "0", "--model", "resnet"}, "model.name"},
      {{"--partition-index", "0", "--set", "client.no_such_key=1"}, "no_such_key"},
  };
  std::vector<Subprocess*> runs;  // concurrently: each start loads LibTorch (~1 s)
  for (const Case& c : cases) {
    std::vector<std::string> argv = {client};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    runs.push_back(Spawn("bad-config-" + std::to_string(runs.size()), argv));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].message);
    std::optional<int> code = runs[i]->Wait(seconds(30));
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2) << runs[i]->Log();
    EXPECT_THAT(runs[i]->Log(), HasSubstr(cases[i].message));
  }
}

}  // namespace
}  // namespace fl::internal
