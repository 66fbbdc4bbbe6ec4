// The Coordinator in asynchronous mode (coordinator.mode = async) on real SQLite files
// with the real FedAvg strategy. Updates are hand-made dense deltas, so every expected
// weight, staleness and model value can be computed here. Event-driven: no sleeps, no
// wall-clock bounds; a "crash" destroys the coordinator with its buffer open and reopens
// the same state directory.

#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "codec/dense_codec.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "examples/linear_trainer.h"
#include "server/coordinator.h"
#include "server/coordinator_config.h"
#include "simulations/in_process_link.h"
#include "store/store.h"
#include "tests/testing/manual_clock_env.h"

namespace fl::internal {
namespace {

// Holds up (or fails) the write of one model version's file, so a test can act while a
// flush is being made durable.
class GatedModelWriteEnv : public EnvWrapper {
 public:
  explicit GatedModelWriteEnv(Env* target) : EnvWrapper(target) {}
  void Gate(uint64_t version, bool fail, bool block) {
    std::lock_guard<std::mutex> lock(mu_);
    suffix_ = "/models/v" + std::to_string(version) + ".flps";
    fail_ = fail;
    block_ = block;
  }
  void WaitUntilEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  Status WriteFileAtomic(const std::string& path, std::string_view data, bool sync) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool gated = !suffix_.empty() && path.size() >= suffix_.size() &&
                         path.compare(path.size() - suffix_.size(), suffix_.size(), suffix_) == 0;
      if (gated) {
        entered_ = true;
        cv_.notify_all();
        if (block_) cv_.wait(lock, [&] { return released_; });
        if (fail_) return Status::Unavailable("injected: disk full");
      }
    }
    return EnvWrapper::WriteFileAtomic(path, data, sync);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string suffix_;
  bool fail_ = false, block_ = false, entered_ = false, released_ = false;
};

class AsyncCoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_async_coordinator_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.mode = CoordinatorMode::kAsync;
    o.state_dir = dir_.string();
    o.num_rounds = 100;
    o.min_clients = 1;
    o.seed = 3;
    o.env = &env_;
    o.async.concurrency = 8;
    o.async.buffer_size = 2;
    o.async.max_staleness = 4;
    return o;
  }

  static std::unique_ptr<Strategy> FedAvg(const std::vector<std::string>& overrides = {}) {
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", overrides);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  static ParamSet Initial() {
    Layout layout;
    layout.Add("weight", {4});
    layout.Add("bias", {1});
    return ParamSet(layout);
  }

  void Start(const CoordinatorOptions& o, const std::vector<std::string>& algorithm = {}) {
    coordinator_.reset();
    Result<std::unique_ptr<Coordinator>> c = Coordinator::Create(o, FedAvg(algorithm), Initial());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coordinator_ = std::move(c).value();
    coordinator_->SetRoundCallback(
        [this](const RoundSummary& s, const ModelSnapshot&) { summaries_.push_back(s); });
  }

  // Joins client-<i> (or re-joins after a restart) and returns its session.
  Session Client(int i) {
    Result<JoinReply> joined = coordinator_->Join("", "client-" + std::to_string(i));
    EXPECT_TRUE(joined.ok()) << joined.status().ToString();
    Result<Session> session = coordinator_->Authenticate(joined->session_token);
    EXPECT_TRUE(session.ok());
    return *session;
  }

  Task Pull(const Session& s) {
    Result<Task> task = coordinator_->PullTask(s, std::chrono::milliseconds(0));
    EXPECT_TRUE(task.ok()) << task.status().ToString();
    return task.ok() ? *task : Task{};
  }

  // A dense delta answering `task`: tensor "weight" all `value`, "bias" -value.
  static Payload Update(const Task& task, float value, double weight = 10) {
    const ParamSet initial = Initial();
    std::vector<float> values(initial.size(), value);
    values.back() = -value;
    Payload p;
    EXPECT_TRUE(EncodeDense(values, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = task.round;
    p.meta.base_version = task.model_version;
    p.meta.weight = weight;
    p.meta.num_examples = static_cast<uint64_t>(weight);
    p.meta.layout_hash = initial.layout().hash();
    p.meta.encoding = Encoding::kDenseF32;
    p.meta.sha256 = Sha256(p.bytes);
    return p;
  }

  Result<PushAck> Push(const Session& s, const Task& task, float value, double weight = 10) {
    return coordinator_->PushUpdate(s, Update(task, value, weight));
  }

  std::unique_ptr<Store> OpenStore() {
    StoreOptions so;
    so.path = (dir_ / "state.db").string();
    Result<std::unique_ptr<Store>> store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return std::move(store).value();
  }

  uint64_t Version() { return coordinator_->CurrentModel().version; }

  ManualClockEnv env_;
  std::filesystem::path dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<RoundSummary> summaries_;
};

TEST_F(AsyncCoordinatorTest, VersionsAdvanceEveryBufferSizeUpdates) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 3;
  o.async.staleness_weight = StalenessWeight::kConstant;
  Start(o);
  std::vector<Session> s = {Client(0), Client(1), Client(2)};
  for (int k = 0; k < 3; ++k) {
    std::vector<Task> tasks;
    for (const Session& session : s) tasks.push_back(Pull(session));
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(tasks[i].kind, TaskKind::kTrain);
      EXPECT_EQ(tasks[i].model_version, static_cast<uint64_t>(k));
      EXPECT_EQ(Version(), static_cast<uint64_t>(k)) << "no flush before the buffer is full";
      Result<PushAck> ack = Push(s[i], tasks[i], 0.1f * static_cast<float>(i + 1));
      ASSERT_TRUE(ack.ok()) << ack.status().ToString();
      EXPECT_FALSE(ack->duplicate);
      EXPECT_EQ(ack->round, tasks[i].round);
    }
    EXPECT_EQ(Version(), static_cast<uint64_t>(k + 1));
  }
  ASSERT_EQ(summaries_.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(summaries_[k].round, k + 1);
    EXPECT_EQ(summaries_[k].new_version, k + 1);
    EXPECT_EQ(summaries_[k].num_updates, 3u);
    EXPECT_EQ(summaries_[k].strategy_stats.at("async.mean_staleness"), 0);
  }
  // Three steps of the mean delta 0.2 (server lr 1, no momentum).
  const ModelSnapshot model = coordinator_->CurrentModel();
  EXPECT_NEAR(model.params->data()[0], 0.6f, 1e-6);
  EXPECT_NEAR(model.params->data()[4], -0.6f, 1e-6);
  std::vector<FlushRecord> flushes = OpenStore()->ListFlushes(0).value();
  ASSERT_EQ(flushes.size(), 3u);
  EXPECT_EQ(flushes[2].version, 3u);
  EXPECT_EQ(flushes[2].num_updates, 3u);
  EXPECT_EQ(flushes[2].staleness_histogram, R"({"0":3})");
  EXPECT_DOUBLE_EQ(flushes[2].total_weight, 30);
}

TEST_F(AsyncCoordinatorTest, StalenessInTheStoreMatchesTheBaseVersionsHandedOut) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 2;
  o.async.max_staleness = 8;
  Start(o);
  std::vector<Session> s = {Client(0), Client(1), Client(2), Client(3)};
  struct Given {
    uint64_t base = 0;
    uint64_t version_at_fold = 0;
  };
  std::map<uint64_t, Given> given;  // task -> what the test saw
  std::map<int, Task> holding;
  // A fixed schedule of pulls and pushes in which clients fall behind by varying amounts.
  const std::vector<std::pair<char, int>> schedule = {
      {'p', 0}, {'p', 1}, {'p', 2}, {'p', 3}, {'u', 0}, {'u', 1}, {'p', 0}, {'p', 1},
      {'u', 0}, {'u', 2}, {'p', 0}, {'p', 2}, {'u', 1}, {'u', 0}, {'u', 3}, {'u', 2}};
  for (const auto& [what, i] : schedule) {
    if (what == 'p') {
      holding[i] = Pull(s[i]);
      ASSERT_EQ(holding[i].kind, TaskKind::kTrain);
      given[holding[i].round].base = holding[i].model_version;
      EXPECT_EQ(holding[i].model_version, Version());
    } else {
      given[holding[i].round].version_at_fold = Version();
      Result<PushAck> ack = Push(s[i], holding[i], 0.01f * static_cast<float>(i + 1));
      ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    }
  }
  EXPECT_EQ(Version(), 4u);
  std::unique_ptr<Store> store = OpenStore();
  std::map<uint64_t, uint64_t> histogram_total;
  for (const auto& [task, g] : given) {
    std::vector<LedgerEntry> rows = store->AcceptedUpdates(task).value();
    ASSERT_EQ(rows.size(), 1u) << "task " << task;
    EXPECT_EQ(rows[0].base_version, g.base) << "task " << task;
    EXPECT_EQ(rows[0].staleness, g.version_at_fold - g.base) << "task " << task;
    EXPECT_EQ(rows[0].buffer, g.version_at_fold + 1) << "task " << task;
    // Policy weight 10 times (1 + tau)^-1/2.
    EXPECT_DOUBLE_EQ(rows[0].weight, 10 * std::pow(1.0 + static_cast<double>(rows[0].staleness), -0.5));
    ++histogram_total[rows[0].staleness];
  }
  EXPECT_GT(histogram_total.rbegin()->first, 0u) << "the schedule must produce stale updates";
  std::map<uint64_t, uint64_t> recorded;
  for (const FlushRecord& f : store->ListFlushes(0).value()) {
    nlohmann::json h = nlohmann::json::parse(f.staleness_histogram);
    uint64_t n = 0;
    for (const auto& [key, count] : h.items()) {
      recorded[std::stoull(key)] += count.get<uint64_t>();
      n += count.get<uint64_t>();
    }
    EXPECT_EQ(n, f.num_updates);
  }
  EXPECT_EQ(recorded, histogram_total);
}

TEST_F(AsyncCoordinatorTest, StaleUpdateIsRefusedWithFailedPreconditionAndALedgerRow) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 1;
  o.async.max_staleness = 1;
  Start(o);
  Session slow = Client(0), fast = Client(1);
  const Task old = Pull(slow);
  for (int k = 0; k < 2; ++k) ASSERT_TRUE(Push(fast, Pull(fast), 0.1f).ok());
  ASSERT_EQ(Version(), 2u);
  // Version 0 left the window: neither served nor accepted.
  EXPECT_EQ(coordinator_->FetchModel(slow, 0).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(coordinator_->FetchModel(slow, 1).ok()) << "versions 1 and 2 stay servable";
  Result<PushAck> refused = Push(slow, old, 0.1f);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("max_staleness"), std::string::npos)
      << refused.status().ToString();
  std::vector<LedgerEntry> rows = OpenStore()->LedgerForRound(old.round).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status_code, static_cast<int>(StatusCode::kFailedPrecondition));
  EXPECT_EQ(rows[0].staleness, 2u);
  EXPECT_EQ(rows[0].base_version, 0u);
  EXPECT_EQ(Version(), 2u);
  // The slow client is not stuck: it gets a fresh task on the current version.
  const Task fresh = Pull(slow);
  EXPECT_EQ(fresh.model_version, 2u);
  EXPECT_TRUE(Push(slow, fresh, 0.1f).ok());
}

TEST_F(AsyncCoordinatorTest, TheLastMaxStalenessPlusOneVersionsAreServedAlsoAfterARestart) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 1;
  o.async.max_staleness = 4;
  o.keep_models = 2;  // the window's files are kept regardless
  Start(o);
  Session s = Client(0);
  std::vector<std::vector<float>> models;
  auto values = [](const ModelSnapshot& m) {
    return std::vector<float>(m.params->data(), m.params->data() + m.params->size());
  };
  models.push_back(values(coordinator_->CurrentModel()));
  for (int k = 1; k <= 6; ++k) {
    ASSERT_TRUE(Push(s, Pull(s), 0.1f * static_cast<float>(k)).ok());
    models.push_back(values(coordinator_->CurrentModel()));
  }
  ASSERT_EQ(Version(), 6u);
  for (int restart = 0; restart < 2; ++restart) {
    if (restart == 1) {
      Start(o);
      s = Client(0);
    }
    for (uint64_t v = 0; v <= 6; ++v) {
      Result<ModelSnapshot> m = coordinator_->FetchModel(s, v);
      if (v < 2) {
        EXPECT_EQ(m.status().code(), StatusCode::kNotFound) << "version " << v;
        continue;
      }
      ASSERT_TRUE(m.ok()) << "version " << v << ": " << m.status().ToString();
      EXPECT_EQ(m->version, v);
      EXPECT_EQ(values(*m), models[v]) << "version " << v;
    }
  }
}

TEST_F(AsyncCoordinatorTest, TheUpdatePolicyAppliesAsInSyncMode) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 1;
  o.async.staleness_weight = StalenessWeight::kConstant;
  o.norm_bound = 0.5;
  o.update_policy.max_weight = 100;
  o.update_policy.over_cap = WeightOverCap::kRefuse;
  Start(o);
  Session s = Client(0);
  // A delta of norm sqrt(5) is scaled down to the bound before it is folded.
  ASSERT_TRUE(Push(s, Pull(s), 1.0f).ok());
  const ParamSet& model = *coordinator_->CurrentModel().params;
  double norm = 0;
  for (size_t i = 0; i < model.size(); ++i) norm += double{model.data()[i]} * model.data()[i];
  EXPECT_NEAR(std::sqrt(norm), 0.5, 1e-6);
  EXPECT_EQ(summaries_.back().strategy_stats.at("robust.clipped_norm"), 1);
  // A weight over the cap is refused with a ledger row; the task stays answerable.
  const Task t = Pull(s);
  Result<PushAck> heavy = Push(s, t, 0.1f, /*weight=*/1000);
  EXPECT_EQ(heavy.status().code(), StatusCode::kInvalidArgument);
  std::vector<LedgerEntry> rows = OpenStore()->LedgerForRound(t.round).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status_code, static_cast<int>(StatusCode::kInvalidArgument));
  EXPECT_TRUE(Push(s, t, 0.1f, /*weight=*/50).ok());
  EXPECT_EQ(Version(), 2u);
}

TEST_F(AsyncCoordinatorTest, ConcurrencyLimitsTheTasksHeld) {
  CoordinatorOptions o = Options();
  o.async.concurrency = 2;
  o.async.buffer_size = 10;
  Start(o);
  Session a = Client(0), b = Client(1), c = Client(2);
  const Task ta = Pull(a);
  const Task tb = Pull(b);
  EXPECT_EQ(ta.kind, TaskKind::kTrain);
  EXPECT_EQ(tb.kind, TaskKind::kTrain);
  EXPECT_NE(ta.round, tb.round) << "every task has its own number";
  EXPECT_EQ(Pull(c).kind, TaskKind::kWait);
  EXPECT_EQ(coordinator_->GetStatus().clients_selected, 2u);
  ASSERT_TRUE(Push(a, ta, 0.1f).ok());
  // A retry of an acknowledged update is acknowledged again and not folded twice.
  Result<PushAck> again = Push(a, ta, 0.1f);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(coordinator_->GetStatus().updates_in_round, 1u);
  const Task tc = Pull(c);
  EXPECT_EQ(tc.kind, TaskKind::kTrain);
  EXPECT_EQ(Pull(a).kind, TaskKind::kWait);
  // A task is answered once, and only by the client it was given to.
  EXPECT_EQ(Push(b, tc, 0.1f).status().code(), StatusCode::kFailedPrecondition);
  Task forged = tb;
  forged.model_version = 7;
  EXPECT_EQ(Push(b, forged, 0.1f).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(AsyncCoordinatorTest, AnUnansweredTaskFreesItsSlotAfterTheTaskTimeout) {
  CoordinatorOptions o = Options();
  o.async.concurrency = 1;
  o.async.task_timeout = std::chrono::seconds(60);
  Start(o);
  Session gone = Client(0), waiting = Client(1);
  const Task held = Pull(gone);
  EXPECT_EQ(Pull(waiting).kind, TaskKind::kWait);
  env_.Advance(std::chrono::seconds(59));
  EXPECT_EQ(Pull(waiting).kind, TaskKind::kWait);
  env_.Advance(std::chrono::seconds(1));
  const Task next = Pull(waiting);
  EXPECT_EQ(next.kind, TaskKind::kTrain);
  EXPECT_EQ(coordinator_->GetStatus().clients_selected, 1u);
  // The late task is still answerable while its base version is servable.
  EXPECT_TRUE(Push(gone, held, 0.1f).ok());
  EXPECT_TRUE(Push(waiting, next, 0.1f).ok());
  EXPECT_EQ(Version(), 1u);
  // With the timeout off, only answers free slots, however long a task is held.
  std::filesystem::remove_all(dir_);
  o.async.task_timeout = std::chrono::milliseconds(0);
  Start(o);
  gone = Client(0);
  waiting = Client(1);
  const Task kept = Pull(gone);
  env_.Advance(std::chrono::hours(24 * 30));
  EXPECT_EQ(Pull(waiting).kind, TaskKind::kWait);
  EXPECT_TRUE(Push(gone, kept, 0.1f).ok());
  EXPECT_EQ(Pull(waiting).kind, TaskKind::kTrain);
}

// The same schedule, once straight through and once with the coordinator destroyed while
// its second buffer holds two acknowledged updates.
TEST_F(AsyncCoordinatorTest, RestartMidBufferFoldsEachAcknowledgedUpdateExactlyOnce) {
  CoordinatorOptions o = Options();
  o.async.buffer_size = 3;
  o.async.gap_penalty = 0.5;  // stale updates in buffer 2 are scaled by the gap penalty
  const std::vector<std::string> algorithm = {"algorithm.server_momentum=0.5",
                                              "algorithm.momentum_clip=0.3"};
  auto run = [&](bool crash) -> std::vector<float> {
    std::filesystem::remove_all(dir_);
    Start(o, algorithm);
    std::vector<Session> s = {Client(0), Client(1), Client(2), Client(3)};
    std::vector<Task> t(4);
    for (int i = 0; i < 4; ++i) t[i] = Pull(s[i]);        // tasks 1..4 on version 0
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(Push(s[i], t[i], 0.1f * (i + 1)).ok());
    EXPECT_EQ(Version(), 1u);
    const Task t5 = Pull(s[0]), t6 = Pull(s[1]);            // on version 1
    EXPECT_TRUE(Push(s[3], t[3], 0.4f).ok());               // staleness 1
    EXPECT_TRUE(Push(s[0], t5, 0.5f).ok());
    if (crash) {
      Start(o, algorithm);  // the old coordinator is gone without a clean shutdown
      EXPECT_EQ(coordinator_->GetStatus().updates_in_round, 2u);
      EXPECT_EQ(Version(), 1u);
      s = {Client(0), Client(1), Client(2), Client(3)};
      Result<PushAck> again = Push(s[0], t5, 0.5f);  // never saw its acknowledgement
      EXPECT_TRUE(again.ok() && again->duplicate);
    }
    EXPECT_TRUE(Push(s[1], t6, 0.6f).ok()) << "task 6 survives the restart";
    EXPECT_EQ(Version(), 2u);
    const ParamSet& p = *coordinator_->CurrentModel().params;
    return std::vector<float>(p.data(), p.data() + p.size());
  };
  const std::vector<float> reference = run(false);
  const std::vector<float> recovered = run(true);
  EXPECT_EQ(recovered, reference);  // bit for bit
  std::unique_ptr<Store> store = OpenStore();
  std::vector<LedgerEntry> buffer2 = store->AcceptedUpdatesInBuffer(2).value();
  ASSERT_EQ(buffer2.size(), 3u);
  EXPECT_EQ(buffer2[0].round, 4u);
  EXPECT_EQ(buffer2[0].staleness, 1u);
  EXPECT_EQ(buffer2[1].round, 5u);
  EXPECT_EQ(buffer2[2].round, 6u);
}

TEST_F(AsyncCoordinatorTest, PushesGoOnWhileAFlushIsWritten) {
  GatedModelWriteEnv gated(&env_);
  CoordinatorOptions o = Options();
  o.env = &gated;
  Start(o);
  Session a = Client(0), b = Client(1), c = Client(2);
  const Task ta = Pull(a), tb = Pull(b), tc = Pull(c);
  ASSERT_TRUE(Push(a, ta, 0.1f).ok());
  gated.Gate(1, /*fail=*/false, /*block=*/true);
  std::thread filler([&] { EXPECT_TRUE(Push(b, tb, 0.2f).ok()); });  // fills buffer 1
  gated.WaitUntilEntered();
  // Version 1 is served while its file is being written; buffer 2 takes updates.
  EXPECT_EQ(Version(), 1u);
  EXPECT_TRUE(coordinator_->FetchModel(a, 1).ok());
  Result<PushAck> during = Push(c, tc, 0.3f);
  EXPECT_TRUE(during.ok()) << during.status().ToString();
  const Task next = Pull(a);
  EXPECT_EQ(next.model_version, 1u);
  EXPECT_TRUE(summaries_.empty()) << "observers hear of a version once it is durable";
  gated.Release();
  filler.join();
  ASSERT_EQ(summaries_.size(), 1u);
  EXPECT_EQ(summaries_[0].new_version, 1u);
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_EQ(store->ListFlushes(0).value().size(), 1u);
  EXPECT_EQ(store->GetOpenRound().value()->round, 2u);
  std::vector<LedgerEntry> rows = store->AcceptedUpdates(tc.round).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].buffer, 2u);
  EXPECT_EQ(rows[0].staleness, 1u);
  EXPECT_TRUE(Push(a, next, 0.4f).ok());
  EXPECT_EQ(Version(), 2u);
}

// Two pushes fill the next buffer while the previous flush is still being written: both
// wait for it, and the buffer is flushed once, not once per waiter.
TEST_F(AsyncCoordinatorTest, PushesWaitingOnAFlushFlushTheirBufferOnce) {
  GatedModelWriteEnv gated(&env_);
  CoordinatorOptions o = Options();
  o.env = &gated;
  o.async.buffer_size = 1;
  Start(o);
  Session a = Client(0), b = Client(1), c = Client(2);
  const Task ta = Pull(a), tb = Pull(b), tc = Pull(c);
  gated.Gate(1, /*fail=*/false, /*block=*/true);
  std::thread first([&] { EXPECT_TRUE(Push(a, ta, 0.1f).ok()); });
  gated.WaitUntilEntered();
  std::thread second([&] { EXPECT_TRUE(Push(b, tb, 0.2f).ok()); });
  std::thread third([&] { EXPECT_TRUE(Push(c, tc, 0.3f).ok()); });
  // Both are folded into buffer 2 before they wait for version 1 to be durable.
  while (coordinator_->GetStatus().updates_in_round < 2) std::this_thread::yield();
  gated.Release();
  first.join();
  second.join();
  third.join();
  EXPECT_EQ(Version(), 2u);
  std::vector<FlushRecord> flushes = OpenStore()->ListFlushes(0).value();
  ASSERT_EQ(flushes.size(), 2u);
  EXPECT_EQ(flushes[1].num_updates, 2u);
  EXPECT_EQ(coordinator_->GetStatus().updates_in_round, 0u);
}

// Killed after a flush was served but before it was durable, with an update of the
// next buffer acknowledged: the restart recomputes the same version and refolds that
// update on top of it.
TEST_F(AsyncCoordinatorTest, RestartBeforeAFlushIsDurableRecomputesTheSameVersion) {
  CoordinatorOptions o = Options();
  o.async.gap_penalty = 0.5;
  const std::vector<std::string> algorithm = {"algorithm.server_momentum=0.5"};
  auto run = [&](bool crash) {
    std::filesystem::remove_all(dir_);
    GatedModelWriteEnv gated(&env_);
    CoordinatorOptions with_gate = o;
    with_gate.env = &gated;
    if (crash) gated.Gate(1, /*fail=*/true, /*block=*/false);
    Start(with_gate, algorithm);
    std::vector<Session> s = {Client(0), Client(1), Client(2), Client(3)};
    std::vector<Task> t;
    for (const Session& session : s) t.push_back(Pull(session));
    EXPECT_TRUE(Push(s[0], t[0], 0.1f).ok());
    EXPECT_TRUE(Push(s[1], t[1], 0.2f).ok());
    EXPECT_EQ(Version(), 1u);
    EXPECT_TRUE(Push(s[2], t[2], 0.3f).ok());  // staleness 1, buffer 2
    if (crash) {
      EXPECT_TRUE(OpenStore()->ListFlushes(0).value().empty());
      Start(o, algorithm);
      EXPECT_EQ(Version(), 1u);
      EXPECT_EQ(coordinator_->GetStatus().updates_in_round, 1u);
      s = {Client(0), Client(1), Client(2), Client(3)};
      Result<PushAck> again = Push(s[2], t[2], 0.3f);
      EXPECT_TRUE(again.ok() && again->duplicate);
    }
    EXPECT_TRUE(Push(s[3], t[3], 0.4f).ok());
    EXPECT_EQ(Version(), 2u);
    const ParamSet& p = *coordinator_->CurrentModel().params;
    std::vector<float> values(p.data(), p.data() + p.size());
    coordinator_.reset();  // before `gated` goes away
    return values;
  };
  const std::vector<float> reference = run(false);
  EXPECT_EQ(run(true), reference);
  std::vector<FlushRecord> flushes = OpenStore()->ListFlushes(0).value();
  ASSERT_EQ(flushes.size(), 2u);
  EXPECT_EQ(flushes[1].staleness_histogram, R"({"1":2})");
}

// The FedAvg family's server halves in async mode: every flush is one of their steps
// (SGD with momentum, FedProx's, Adam's), applied to stale folds as to fresh ones.
TEST_F(AsyncCoordinatorTest, FedAvgFedProxAndFedAdamAdvanceVersionsOnStaleUpdates) {
  const std::vector<std::vector<std::string>> algorithms = {
      {"algorithm.name=fedavg", "algorithm.server_momentum=0.5"},
      {"algorithm.name=fedprox", "train.prox_mu=0.01"},
      {"algorithm.name=fedadam", "algorithm.server_lr=0.01"}};
  for (const std::vector<std::string>& algorithm : algorithms) {
    SCOPED_TRACE(algorithm[0]);
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
    CoordinatorOptions o = Options();
    o.num_rounds = 3;
    o.async.buffer_size = 2;
    Start(o, algorithm);
    const Session a = Client(0), b = Client(1);
    Task slow = Pull(b);  // answered last: two versions stale
    for (int k = 0; k < 2; ++k) {
      for (int step = 0; step < 2; ++step) {
        ASSERT_TRUE(Push(a, Pull(a), 0.02f).ok());
      }
    }
    ASSERT_EQ(Version(), 2u);
    Result<PushAck> stale = Push(b, slow, 0.02f);
    ASSERT_TRUE(stale.ok()) << stale.status().ToString();
    ASSERT_TRUE(Push(a, Pull(a), 0.02f).ok());
    EXPECT_EQ(Version(), 3u);
    EXPECT_TRUE(coordinator_->WaitUntilFinished(std::chrono::milliseconds(0)));
    // Every delta raised "weight" and lowered "bias": so did every server step.
    const ParamSet& model = *coordinator_->CurrentModel().params;
    EXPECT_GT(model.data()[0], 0.0f);
    EXPECT_LT(model.data()[model.size() - 1], 0.0f);
    EXPECT_TRUE(std::isfinite(model.data()[0]));
  }
}

// As in rounds, a finite update never voids a buffer: when the flush's server step is
// not finite with it (FedAdam's second moment of a 1e30 delta), the step is taken again
// without the largest contribution, and the honest updates land.
TEST_F(AsyncCoordinatorTest, AFlushThatIsNotFiniteDropsItsLargestContribution) {
  const std::vector<std::string> adam = {"algorithm.name=fedadam", "algorithm.server_lr=0.01"};
  CoordinatorOptions o = Options();
  o.async.buffer_size = 3;
  Start(o, adam);
  const Session a = Client(0), b = Client(1), c = Client(2);
  const Task ta = Pull(a), tb = Pull(b), tc = Pull(c);
  ASSERT_TRUE(Push(a, ta, 0.1f).ok());
  ASSERT_TRUE(Push(c, tc, 1e30f, 1).ok());
  ASSERT_TRUE(Push(b, tb, 0.2f).ok());
  ASSERT_EQ(Version(), 1u);

  // The expected model: the same strategy applied to the two honest updates alone.
  std::unique_ptr<Strategy> reference = FedAvg(adam);
  const ParamSet initial = Initial();
  std::unique_ptr<RoundAggregator> agg = reference->NewRoundAggregator(initial, 1);
  for (float v : {0.1f, 0.2f}) {
    Payload p = Update(ta, v);
    p.meta.round = 1;
    ASSERT_TRUE(agg->Accumulate(p).ok());
  }
  ParamSet expected = initial;
  ASSERT_TRUE(reference->ApplyRound(*std::move(*agg).Report(), &expected).ok());
  const ParamSet& model = *coordinator_->CurrentModel().params;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(model.data()[i], expected.data()[i]) << i;
    EXPECT_NE(model.data()[i], initial.data()[i]) << "the honest updates must land";
  }
  ASSERT_EQ(summaries_.size(), 1u);
  EXPECT_EQ(summaries_[0].num_updates, 2u);
  EXPECT_EQ(summaries_[0].strategy_stats.at("robust.dropped_updates"), 1);
  std::unique_ptr<Store> store = OpenStore();
  int dropped = 0;
  for (uint64_t task : {ta.round, tb.round, tc.round}) {
    const std::vector<LedgerEntry> rows = store->LedgerForRound(task).value();
    for (const LedgerEntry& e : rows) {
      if (e.status_code != 0 && e.reason.find("dropped at flush") != std::string::npos) {
        ++dropped;
        EXPECT_EQ(task, tc.round);
      }
    }
  }
  EXPECT_EQ(dropped, 1);
}

TEST_F(AsyncCoordinatorTest, FixedCallOrderGivesTheSameModel) {
  CoordinatorOptions o = Options();
  o.async.gap_penalty = 1;
  o.durable = false;
  auto run = [&] {
    std::filesystem::remove_all(dir_);
    Start(o, {"algorithm.server_optimizer=adam", "algorithm.server_lr=0.1"});
    std::vector<Session> s = {Client(0), Client(1), Client(2)};
    std::vector<Task> t(3);
    for (int k = 0; k < 12; ++k) {
      const int i = (k * 7) % 3;
      if (t[i].kind == TaskKind::kTrain) {
        EXPECT_TRUE(Push(s[i], t[i], 0.05f * (k % 5)).ok());
      }
      t[i] = Pull(s[i]);
    }
    const ParamSet& p = *coordinator_->CurrentModel().params;
    return std::make_pair(Version(), std::vector<float>(p.data(), p.data() + p.size()));
  };
  const auto first = run();
  EXPECT_GT(first.first, 2u);
  EXPECT_EQ(run(), first);
}

// fl-sim's in-process path: ClientRuntime over InProcessLink, the real learner and a
// C++ trainer. Every client pulls, then each trains and pushes in turn, so the later
// ones train on versions that moved on meanwhile (fetched from the servable window).
TEST_F(AsyncCoordinatorTest, ClientRuntimesTrainOnStaleVersionsAndTheModelLearns) {
  constexpr size_t kDim = 8;
  CoordinatorOptions o = Options();
  o.num_rounds = 6;
  o.async.buffer_size = 2;
  o.async.gap_penalty = 2;
  Layout layout;
  layout.Add("weight", {kDim});
  layout.Add("bias", {1});
  Result<std::unique_ptr<Coordinator>> c = Coordinator::Create(
      o, FedAvg({"train.lr=0.05", "train.batch_size=8", "algorithm.server_momentum=0.3"}),
      ParamSet(layout));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  coordinator_ = std::move(c).value();
  coordinator_->SetRoundCallback(
      [this](const RoundSummary& s, const ModelSnapshot&) { summaries_.push_back(s); });
  std::vector<std::unique_ptr<InProcessLink>> links;
  std::vector<std::unique_ptr<ClientRuntime>> runtimes;
  std::vector<std::unique_ptr<examples::LinearTrainer>> trainers;
  for (int i = 0; i < 3; ++i) {
    links.push_back(std::make_unique<InProcessLink>(coordinator_.get()));
    ClientRuntimeOptions options;
    options.client_name = "client-" + std::to_string(i);
    runtimes.push_back(std::make_unique<ClientRuntime>(links.back().get(), options));
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 64, 100 + i, &x, &y);
    trainers.push_back(std::make_unique<examples::LinearTrainer>(kDim, std::move(x), std::move(y)));
    ASSERT_TRUE(runtimes.back()->Join().ok());
  }
  double first_loss = -1, last_loss = -1;
  bool done = false, stale = false;
  for (int iteration = 0; iteration < 20 && !done; ++iteration) {
    std::vector<Task> tasks;
    for (auto& runtime : runtimes) {
      Result<Task> t = runtime->Pull(std::chrono::milliseconds(0));
      ASSERT_TRUE(t.ok());
      done = done || t->kind == TaskKind::kDone;
      tasks.push_back(*t);
    }
    for (int i = 0; i < 3; ++i) {
      if (tasks[i].kind != TaskKind::kTrain) continue;
      stale = stale || tasks[i].model_version < Version();
      CancelToken cancel;
      Result<ExecuteReport> r = runtimes[i]->Execute(tasks[i], *trainers[i], cancel);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      if (first_loss < 0) first_loss = r->train.mean_loss;
      last_loss = r->train.mean_loss;
    }
  }
  EXPECT_TRUE(done);
  EXPECT_TRUE(stale) << "some clients must have trained on an older version";
  ASSERT_EQ(summaries_.size(), 6u);
  EXPECT_EQ(summaries_.back().new_version, 6u);
  EXPECT_EQ(Version(), 6u);
  EXPECT_LT(last_loss, 0.5 * first_loss);
  EXPECT_TRUE(coordinator_->WaitUntilFinished(std::chrono::milliseconds(10)));
}

TEST_F(AsyncCoordinatorTest, ModeIsFixedPerStateDirectory) {
  Start(Options());
  coordinator_.reset();
  CoordinatorOptions sync = Options();
  sync.mode = CoordinatorMode::kSync;
  Result<std::unique_ptr<Coordinator>> c = Coordinator::Create(sync, FedAvg(), Initial());
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition) << c.status().ToString();
}

TEST_F(AsyncCoordinatorTest, FerretIsRefusedInAsyncMode) {
  Result<std::unique_ptr<Coordinator>> c =
      Coordinator::Create(Options(), FedAvg({"algorithm.name=ferret"}), Initial());
  ASSERT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("coordinator.mode=async"), std::string::npos)
      << c.status().ToString();
}

TEST(AsyncCoordinatorConfigTest, KeysReachCoordinatorOptionsAndBadValuesNameTheKey) {
  auto build = [](std::vector<std::string> overrides) {
    return Config::Build(CoordinatorConfigDefaults(), "", overrides);
  };
  Result<Config> config =
      build({"coordinator.mode=async", "async.concurrency=20", "async.task_timeout_s=0",
             "async.max_staleness=5",
             "async.buffer_size=4", "async.staleness_weight=hinge", "async.hinge_a=2",
             "async.hinge_b=3", "async.gap_penalty=2.5", "async.staleness_exponent=1"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Result<CoordinatorOptions> o = CoordinatorOptionsFromConfig(*config);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->mode, CoordinatorMode::kAsync);
  EXPECT_EQ(o->async.concurrency, 20u);
  EXPECT_EQ(o->async.task_timeout.count(), 0);
  EXPECT_EQ(o->async.max_staleness, 5u);
  EXPECT_EQ(o->async.buffer_size, 4u);
  EXPECT_EQ(o->async.staleness_weight, StalenessWeight::kHinge);
  EXPECT_EQ(o->async.hinge_a, 2);
  EXPECT_EQ(o->async.hinge_b, 3u);
  EXPECT_EQ(o->async.gap_penalty, 2.5);
  EXPECT_EQ(o->async.staleness_exponent, 1);
  Result<CoordinatorOptions> defaults = CoordinatorOptionsFromConfig(*build({}));
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->mode, CoordinatorMode::kSync);

  for (const std::string bad :
       {"coordinator.mode=rounds", "async.concurrency=0", "async.buffer_size=0",
        "async.task_timeout_s=-1",
        "async.max_staleness=-1", "async.staleness_weight=linear", "async.staleness_exponent=-1",
        "async.hinge_a=-0.5", "async.hinge_b=-2", "async.gap_penalty=-1"}) {
    Result<Config> c = build({bad});
    ASSERT_TRUE(c.ok()) << bad;
    Result<CoordinatorOptions> r = CoordinatorOptionsFromConfig(*c);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    const std::string key = bad.substr(0, bad.find('='));
    EXPECT_NE(r.status().message().find(key), std::string::npos) << r.status().ToString();
  }
}

}  // namespace
}  // namespace fl::internal
