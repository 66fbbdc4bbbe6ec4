// Asynchronous federations (coordinator.mode=async) over loopback TLS: fl-server and
// fl-client processes of different speeds training on Fashion-MNIST shards, a client of
// the test's own that answers a task too late, kill -9 of the server with a buffer half
// full, and the same refusal against an in-process server. Everything is checked in
// the server's SQLite file: tasks (the base version each client was given), ledger rows
// (buffer and staleness of each fold) and flushes (one per version).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client/grpc_link.h"
#include "codec/dense_codec.h"
#include "crypto/sha256.h"
#include "grpc_fixture.h"
#include "store/store.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr char kToken[] = "async-enrollment-token";
constexpr int kSeed = 7;
constexpr int kClients = 3;

// The federation's shape. Each fl-client waits client.slowdown_s before every task, so
// the clients run at different speeds whatever the machine; the waits are lower bounds
// on a task's duration, which bounds how far the fast clients can move the version
// while the slow one trains.
struct AsyncSetup {
  int rounds = 0;  // flushes (model versions) to run
  int concurrency = 0;
  int buffer_size = 0;
  int max_staleness = 0;
  std::vector<double> slowdown_s;  // per client
  int overlap_client = -1;         // the client started with --overlap, if any
};

class AsyncFederationTest : public ProcessTest {
 protected:
  AsyncFederationTest() : ProcessTest("fl_async") {}

  void SetUp() override {
    ProcessTest::SetUp();
    ASSERT_EQ(RunToCompletion("certs", {Binary("server/fl-server"), "certs", "--out", Path("certs")}),
              0);
    init_ = Path("init-mlp.flps");
    ASSERT_EQ(RunToCompletion("export-mlp",
                              {Binary("simulations/fl-sim"), "export-model", "--model", "mlp",
                               "--seed", std::to_string(kSeed), "--out", init_}),
              0);
  }

  std::vector<std::string> ServerArgs(const std::string& listen, const AsyncSetup& setup) {
    auto set = [](const std::string& key, int value) {
      return key + "=" + std::to_string(value);
    };
    return {
        Binary("server/fl-server"),
        "--listen", listen,
        "--tls-cert", Path("certs/server.pem"),
        "--tls-key", Path("certs/server.key"),
        "--init-model", init_,
        "--rounds", std::to_string(setup.rounds),
        "--seed", std::to_string(kSeed),
        "--state-dir", Path("state"),
        "--enrollment-token", kToken,
        "--min-clients", std::to_string(kClients),
        "--set", "coordinator.mode=async",
        "--set", set("async.concurrency", setup.concurrency),
        "--set", set("async.buffer_size", setup.buffer_size),
        "--set", set("async.max_staleness", setup.max_staleness),
        // Kept answering after the last flush until the test stops it once every client
        // has exited (as in federation_e2e_test).
        "--set", "server.drain_s=3600",
        "--set", "train.local_steps=4",
        "--set", "train.batch_size=16",
        "--set", "train.lr=0.05",
        "--set", "train.upload_encoding=f32",
    };
  }

  std::vector<Subprocess*> StartClients(int port, const AsyncSetup& setup) {
    std::vector<Subprocess*> clients;
    for (int i = 0; i < kClients; ++i) {
      std::vector<std::string> args = FlClientArgs(port, kToken);
      args.insert(args.end(), {
          "--data-dir", FL_FASHION_MNIST_DIR,
          "--partition", "dirichlet:0.5",
          "--num-partitions", std::to_string(kClients),
          "--partition-index", std::to_string(i),
          "--seed", std::to_string(kSeed),
          "--train-examples", "3000",
          "--model", "mlp",
          "--device", "cpu",
          "--threads", "1",
          "--set", "client.poll_wait_s=2",
          "--set", "client.slowdown_s=" + std::to_string(setup.slowdown_s[i]),
      });
      if (i == setup.overlap_client) args.push_back("--overlap");
      clients.push_back(Spawn("client-" + std::to_string(i), args));
    }
    return clients;
  }

  // Waits for every client to exit 0, then stops the draining server with SIGTERM and
  // waits for it to exit 0 (each wait bounded only as a safety cap).
  void ExpectFederationFinishes(Subprocess* server, const std::vector<Subprocess*>& clients) {
    for (Subprocess* c : clients) {
      std::optional<int> code = c->Wait(seconds(180));
      ASSERT_TRUE(code.has_value()) << "fl-client still running:\n" << c->Log();
      EXPECT_EQ(*code, 0) << c->Log();
      EXPECT_THAT(c->Log(), HasSubstr("federation finished"));
    }
    ASSERT_TRUE(server->Running()) << "fl-server ended before the clients:\n" << server->Log();
    server->Kill(SIGTERM);
    std::optional<int> code = server->Wait(seconds(120));
    ASSERT_TRUE(code.has_value()) << "fl-server ignored SIGTERM:\n" << server->Log();
    EXPECT_EQ(*code, 0) << server->Log();
  }

  std::unique_ptr<Store> OpenStore() {
    StoreOptions options;
    options.path = Path("state/state.db");
    options.durable = false;
    Result<std::unique_ptr<Store>> store = Store::Open(options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // The newest durable model version (0 if none can be read yet).
  uint64_t StoredVersion() {
    std::unique_ptr<Store> store = OpenStore();
    if (store == nullptr) return 0;
    Result<std::optional<ModelRecord>> latest = store->LatestModel();
    return latest.ok() && latest->has_value() ? (*latest)->version : 0;
  }

  std::string init_;
};

// Checks the finished federation in SQLite: `setup.rounds` versions, each made by one
// flush of exactly buffer_size updates; every accepted ledger row lies in exactly one
// flushed buffer, answers a task of its client, and records as its base the version
// that task handed out and as its staleness the buffer's version minus that base (buffer
// b is folded while version b - 1 is current). No task has two accepted rows. Returns
// the accepted rows.
std::vector<LedgerEntry> ExpectEachAcknowledgedUpdateFoldedOnce(Store& store,
                                                                const AsyncSetup& setup) {
  Result<std::optional<ModelRecord>> latest = store.LatestModel();
  EXPECT_TRUE(latest.ok() && latest->has_value());
  if (latest.ok() && latest->has_value()) {
    EXPECT_EQ((*latest)->version, static_cast<uint64_t>(setup.rounds));
  }

  Result<std::vector<FlushRecord>> flushes = store.ListFlushes(0);
  EXPECT_TRUE(flushes.ok()) << flushes.status().ToString();
  if (!flushes.ok()) return {};
  EXPECT_EQ(flushes->size(), static_cast<size_t>(setup.rounds));
  std::vector<LedgerEntry> folded;
  std::set<uint64_t> tasks;
  for (size_t i = 0; i < flushes->size(); ++i) {
    const FlushRecord& f = (*flushes)[i];
    SCOPED_TRACE("flush " + std::to_string(f.flush));
    EXPECT_EQ(f.flush, i + 1);
    EXPECT_EQ(f.version, i + 1);
    EXPECT_EQ(f.num_updates, static_cast<uint64_t>(setup.buffer_size));
    Result<std::vector<LedgerEntry>> rows = store.AcceptedUpdatesInBuffer(f.flush);
    EXPECT_TRUE(rows.ok()) << rows.status().ToString();
    if (!rows.ok()) continue;
    EXPECT_EQ(rows->size(), f.num_updates);
    std::map<std::string, uint64_t> histogram;
    double weight = 0;
    for (const LedgerEntry& e : *rows) {
      SCOPED_TRACE("task " + std::to_string(e.round));
      EXPECT_EQ(e.status_code, 0);
      EXPECT_EQ(e.buffer, f.flush);
      EXPECT_TRUE(tasks.insert(e.round).second) << "a task folded twice";
      Result<std::optional<TaskRecord>> task = store.GetTask(e.round);
      EXPECT_TRUE(task.ok() && task->has_value());
      if (!task.ok() || !task->has_value()) continue;
      EXPECT_EQ((*task)->client_id, e.client_id);
      EXPECT_EQ(e.base_version, (*task)->base_version);
      EXPECT_EQ(e.staleness, (f.version - 1) - (*task)->base_version);
      EXPECT_LE(e.staleness, static_cast<uint64_t>(setup.max_staleness));
      ++histogram[std::to_string(e.staleness)];
      weight += e.weight;
      folded.push_back(e);
    }
    using Histogram = std::map<std::string, uint64_t>;
    EXPECT_EQ(nlohmann::json::parse(f.staleness_histogram).get<Histogram>(), histogram);
    EXPECT_NEAR(f.total_weight, weight, 1e-9 * weight);
  }
  // No accepted row outside the flushed buffers: every task's accepted rows were seen.
  Result<uint64_t> last_task = store.LastTaskNumber();
  EXPECT_TRUE(last_task.ok());
  size_t accepted = 0;
  for (uint64_t t = 1; last_task.ok() && t <= *last_task; ++t) {
    Result<std::vector<LedgerEntry>> rows = store.AcceptedUpdates(t);
    EXPECT_TRUE(rows.ok());
    if (rows.ok()) accepted += rows->size();
  }
  EXPECT_EQ(accepted, folded.size());
  return folded;
}

std::map<uint64_t, std::string> ClientNames(Store& store) {
  std::map<uint64_t, std::string> names;
  Result<std::vector<ClientRecord>> clients = store.ListClients();
  EXPECT_TRUE(clients.ok());
  if (clients.ok()) {
    for (const ClientRecord& c : *clients) names[c.id] = c.name;
  }
  return names;
}

// A zero update answering `task`, shaped like `model`.
Payload ZeroUpdate(const Task& task, const ParamSet& model) {
  std::vector<float> delta(model.size(), 0.0f);
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.round = task.round;
  p.meta.base_version = task.model_version;
  p.meta.weight = 1;
  p.meta.num_examples = 1;
  p.meta.layout_hash = model.layout().hash();
  p.meta.encoding = Encoding::kDenseF32;
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

TEST_F(AsyncFederationTest, ClientsOfThreeSpeedsAdvanceVersionsAndStaleAnswerIsRefused) {
  AsyncSetup setup;
  setup.rounds = 12;
  // One slot per fl-client (the overlapping one sometimes wants two) and one for the
  // probe below.
  setup.concurrency = kClients + 1;
  setup.buffer_size = 2;
  setup.max_staleness = 5;
  // While the slow client trains (1.2 s and the real work) the others answer about
  // 1.2/0.3 + 1.2/0.6 = 6 tasks, 3 versions: its updates arrive stale, and within
  // max_staleness with room for a loaded machine.
  setup.slowdown_s = {0.3, 0.6, 1.2};
  setup.overlap_client = 1;
  int port = 0;
  Subprocess* server = StartServer("fl-server", ServerArgs("127.0.0.1:0", setup), &port);
  ASSERT_NE(port, 0);
  std::vector<Subprocess*> clients = StartClients(port, setup);

  // The probe: takes a task, holds it until the version is more than max_staleness past
  // the task's base, then answers it.
  GrpcLinkOptions link_options;
  link_options.target = "localhost:" + std::to_string(port);
  link_options.root_ca_path = Path("certs/ca.pem");
  Result<std::unique_ptr<GrpcLink>> probe = GrpcLink::Create(link_options);
  ASSERT_TRUE(probe.ok()) << probe.status().ToString();
  ASSERT_TRUE((*probe)->Join(kToken, "probe").ok());
  Task held;
  ASSERT_TRUE(WaitUntil(
      [&] {
        Result<Task> t = (*probe)->PullTask(std::chrono::milliseconds(2000));
        if (t.ok() && t->kind == TaskKind::kTrain) held = *t;
        return t.ok() && t->kind != TaskKind::kWait;
      },
      seconds(120)));
  ASSERT_EQ(held.kind, TaskKind::kTrain);
  Result<ModelSnapshot> base_model = (*probe)->FetchModel(held.model_version);
  ASSERT_TRUE(base_model.ok()) << base_model.status().ToString();
  const uint64_t too_stale = held.model_version + setup.max_staleness + 1;
  ASSERT_LT(too_stale, static_cast<uint64_t>(setup.rounds)) << "the probe started too late";
  ASSERT_TRUE(WaitUntil([&] { return StoredVersion() >= too_stale || !server->Running(); },
                        seconds(120)))
      << "the version did not reach " << too_stale;
  Result<PushAck> refused = (*probe)->PushUpdate(ZeroUpdate(held, *base_model->params));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition)
      << refused.status().ToString();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("max_staleness"));

  ExpectFederationFinishes(server, clients);

  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  const std::vector<LedgerEntry> folded = ExpectEachAcknowledgedUpdateFoldedOnce(*store, setup);
  const std::map<uint64_t, std::string> names = ClientNames(*store);
  std::map<std::string, std::vector<uint64_t>> staleness;  // client name -> folds
  for (const LedgerEntry& e : folded) staleness[names.at(e.client_id)].push_back(e.staleness);
  for (const auto& [name, values] : staleness) {
    std::string list;
    for (uint64_t s : values) list += " " + std::to_string(s);
    std::printf("%s: %zu updates folded, staleness%s\n", name.c_str(), values.size(),
                list.c_str());
  }
  EXPECT_EQ(staleness.count("probe"), 0u);
  for (int i = 0; i < kClients; ++i) {
    EXPECT_FALSE(staleness["client-" + std::to_string(i)].empty()) << "client-" << i;
  }
  const std::vector<uint64_t>& slow = staleness["client-2"];
  EXPECT_TRUE(std::any_of(slow.begin(), slow.end(), [](uint64_t s) { return s > 0; }))
      << "the slow client's updates must be stale";

  // The probe's answer: one ledger row, refused, with the base it was given.
  Result<std::vector<LedgerEntry>> rows = store->LedgerForRound(held.round);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].status_code, static_cast<int>(StatusCode::kFailedPrecondition));
  EXPECT_EQ((*rows)[0].base_version, held.model_version);
  EXPECT_GT((*rows)[0].staleness, static_cast<uint64_t>(setup.max_staleness));
  EXPECT_THAT((*rows)[0].reason, HasSubstr("max_staleness"));
  Result<std::optional<TaskRecord>> task = store->GetTask(held.round);
  ASSERT_TRUE(task.ok() && task->has_value());
  EXPECT_EQ((*task)->base_version, held.model_version);
  EXPECT_TRUE((*task)->closed);
}

TEST_F(AsyncFederationTest, ServerKilledMidBufferResumesAndFoldsEachAcknowledgedUpdateOnce) {
  constexpr uint64_t kCrashBuffer = 2;
  AsyncSetup setup;
  setup.rounds = 3;
  setup.concurrency = kClients;
  setup.buffer_size = 4;
  setup.max_staleness = 3;  // no update can be too stale: refusals would blur the count
  setup.slowdown_s = {0.3, 0.6, 1.0};
  int port = 0;
  Subprocess* server = StartServer("fl-server", ServerArgs("127.0.0.1:0", setup), &port);
  ASSERT_NE(port, 0);
  std::vector<Subprocess*> clients = StartClients(port, setup);

  // Kill -9 once buffer kCrashBuffer holds an acknowledged (durable) update.
  ASSERT_TRUE(WaitUntil(
      [&] {
        if (!server->Running()) return true;  // reported below
        std::unique_ptr<Store> store = OpenStore();
        if (store == nullptr) return false;
        Result<std::vector<LedgerEntry>> rows = store->AcceptedUpdatesInBuffer(kCrashBuffer);
        if (!rows.ok() || rows->empty()) return false;
        server->Kill(SIGKILL);
        return true;
      },
      seconds(120)))
      << "no update of buffer " << kCrashBuffer << " was acknowledged";
  ASSERT_EQ(server->Wait(seconds(0)), std::optional<int>(128 + SIGKILL))
      << "fl-server ended before the kill";
  std::vector<LedgerEntry> acknowledged;
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    Result<std::optional<RoundRecord>> open = store->GetOpenRound();
    ASSERT_TRUE(open.ok() && open->has_value()) << "the kill did not land inside a buffer";
    ASSERT_EQ((*open)->round, kCrashBuffer) << "the kill did not land inside buffer 2";
    acknowledged = store->AcceptedUpdatesInBuffer(kCrashBuffer).value();
  }
  ASSERT_GE(acknowledged.size(), 1u);
  ASSERT_LT(acknowledged.size(), static_cast<size_t>(setup.buffer_size));

  // Same state directory, same port: the clients' links retry until it is back.
  int restarted_port = 0;
  Subprocess* restarted = StartServer(
      "fl-server-restarted", ServerArgs("127.0.0.1:" + std::to_string(port), setup),
      &restarted_port);
  ASSERT_EQ(restarted_port, port);
  ExpectFederationFinishes(restarted, clients);
  EXPECT_THAT(restarted->Log(),
              HasSubstr("resumed round " + std::to_string(kCrashBuffer) + " with " +
                        std::to_string(acknowledged.size()) + " acknowledged updates refolded"));

  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ExpectEachAcknowledgedUpdateFoldedOnce(*store, setup);
  // Each update acknowledged before the kill is folded in the buffer it was
  // acknowledged in, under the same ledger row.
  Result<std::vector<LedgerEntry>> rows = store->AcceptedUpdatesInBuffer(kCrashBuffer);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  std::map<int64_t, std::string> crash_buffer;  // ledger id -> sha256
  for (const LedgerEntry& e : *rows) crash_buffer[e.id] = e.sha256_hex;
  for (const LedgerEntry& e : acknowledged) {
    ASSERT_EQ(crash_buffer.count(e.id), 1u) << "ledger row " << e.id;
    EXPECT_EQ(crash_buffer[e.id], e.sha256_hex);
  }
  std::printf("kill -9 in buffer %llu after %zu of %d updates acknowledged\n",
              static_cast<unsigned long long>(kCrashBuffer), acknowledged.size(),
              setup.buffer_size);
}

// The refusal alone, step by step, against an in-process server on loopback TLS.
class AsyncFederationGrpcTest : public GrpcFixture {};

TEST_F(AsyncFederationGrpcTest, UpdateStalerThanTheLimitIsFailedPreconditionWithALedgerRow) {
  CoordinatorOptions o = Options();
  o.mode = CoordinatorMode::kAsync;
  o.num_rounds = 10;
  o.async.concurrency = 4;
  o.async.buffer_size = 1;
  o.async.max_staleness = 1;
  Start(o);
  std::unique_ptr<GrpcLink> slow = Joined("slow");
  std::unique_ptr<GrpcLink> fast = Joined("fast");
  const Task old = TrainTask(*slow);
  ASSERT_EQ(old.model_version, 0u);
  Result<ModelSnapshot> base = slow->FetchModel(old.model_version);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  for (uint64_t v = 0; v < 2; ++v) {
    const Task t = TrainTask(*fast);
    ASSERT_EQ(t.model_version, v);
    Result<ModelSnapshot> model = fast->FetchModel(t.model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    ASSERT_TRUE(fast->PushUpdate(GoodUpdate(t, *model->params)).ok());
  }
  Result<ServerStatusInfo> status = slow->GetStatus();
  ASSERT_TRUE(status.ok());
  ASSERT_EQ(status->model_version, 2u);
  // Version 0 has left the servable window with the staleness limit.
  EXPECT_EQ(slow->FetchModel(0).status().code(), StatusCode::kNotFound);

  Result<PushAck> refused = slow->PushUpdate(GoodUpdate(old, *base->params));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition)
      << refused.status().ToString();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("max_staleness"));
  const std::vector<LedgerEntry> rows = Ledger(old.round);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status_code, static_cast<int>(StatusCode::kFailedPrecondition));
  EXPECT_EQ(rows[0].base_version, 0u);
  EXPECT_EQ(rows[0].staleness, 2u);
  EXPECT_THAT(rows[0].reason, HasSubstr("max_staleness"));
  EXPECT_EQ(slow->GetStatus()->model_version, 2u) << "a refused update changes nothing";

  // The refused client carries on with a fresh task on the current version.
  const Task fresh = TrainTask(*slow);
  EXPECT_EQ(fresh.model_version, 2u);
  Result<ModelSnapshot> current = slow->FetchModel(fresh.model_version);
  ASSERT_TRUE(current.ok());
  Result<PushAck> ack = slow->PushUpdate(GoodUpdate(fresh, *current->params));
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_EQ(slow->GetStatus()->model_version, 3u);
}

}  // namespace
}  // namespace fl::internal
