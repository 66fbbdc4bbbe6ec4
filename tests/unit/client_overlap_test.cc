// ClientRuntime's overlap (ClientRuntimeOptions::overlap, CO2): a trained update is sent
// while the next task trains. Against an asynchronous Coordinator with one client and a
// buffer of one update, every update is a new version, so what overlap changes is exact:
// each task after the first is pulled before the previous update arrived, and is
// therefore based on a version one step older (staleness 1 in the ledger).

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "core/config.h"
#include "examples/linear_trainer.h"
#include "server/coordinator.h"
#include "simulations/in_process_link.h"
#include "store/store.h"

namespace fl::internal {
namespace {

constexpr size_t kDim = 8;
constexpr uint64_t kVersions = 5;

struct OverlapRun {
  std::vector<LedgerEntry> accepted;  // in task order
  uint64_t tasks_reported = 0;
  uint64_t version = 0;
};

OverlapRun RunOneClient(bool overlap, const std::filesystem::path& dir) {
  std::filesystem::remove_all(dir);
  CoordinatorOptions o;
  o.mode = CoordinatorMode::kAsync;
  o.state_dir = dir.string();
  o.num_rounds = kVersions;
  o.async.buffer_size = 1;
  o.async.concurrency = 2;  // room for the task pulled while the previous one uploads
  o.async.max_staleness = 4;
  Result<Config> algorithm =
      Config::Build(AlgorithmConfigDefaults(), "", {"train.lr=0.05", "train.batch_size=8"});
  EXPECT_TRUE(algorithm.ok());
  Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(*algorithm);
  EXPECT_TRUE(strategy.ok());
  Layout layout;
  layout.Add("weight", {kDim});
  layout.Add("bias", {1});
  Result<std::unique_ptr<Coordinator>> coordinator =
      Coordinator::Create(o, std::move(strategy).value(), ParamSet(layout));
  EXPECT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  OverlapRun run;
  {
    InProcessLink link(coordinator->get());
    ClientRuntimeOptions options;
    options.client_name = "client-0";
    options.overlap = overlap;
    options.poll_wait = std::chrono::milliseconds(0);
    ClientRuntime runtime(&link, options);
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 64, 7, &x, &y);
    examples::LinearTrainer trainer(kDim, std::move(x), std::move(y));
    RunLimits limits;
    limits.on_task = [&](const ExecuteReport&, uint64_t done) { run.tasks_reported = done; };
    CancelToken cancel;
    Status s = runtime.Run(trainer, cancel, limits);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  run.version = (*coordinator)->CurrentModel().version;
  coordinator->reset();
  StoreOptions so;
  so.path = (dir / "state.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  EXPECT_TRUE(store.ok());
  for (uint64_t task = 1; task <= kVersions + 1; ++task) {
    for (const LedgerEntry& e : (*store)->AcceptedUpdates(task).value()) run.accepted.push_back(e);
  }
  std::filesystem::remove_all(dir);
  return run;
}

std::filesystem::path TestDir(const char* name) {
  return std::filesystem::temp_directory_path() /
         ("fl_client_overlap_test_" + std::to_string(::getpid()) + "_" + name);
}

TEST(ClientOverlapTest, WithoutOverlapEveryUpdateIsFresh) {
  OverlapRun run = RunOneClient(/*overlap=*/false, TestDir("off"));
  EXPECT_EQ(run.version, kVersions);
  EXPECT_EQ(run.tasks_reported, kVersions);
  ASSERT_EQ(run.accepted.size(), kVersions);
  for (const LedgerEntry& e : run.accepted) EXPECT_EQ(e.staleness, 0u);
}

TEST(ClientOverlapTest, OverlapSendsEachUpdateWhileTheNextTaskTrains) {
  OverlapRun run = RunOneClient(/*overlap=*/true, TestDir("on"));
  EXPECT_EQ(run.version, kVersions);
  EXPECT_EQ(run.tasks_reported, kVersions);
  ASSERT_EQ(run.accepted.size(), kVersions);
  // The first task has nothing to overlap with; every later one was pulled (and its
  // base fixed) while the previous update was still unsent.
  EXPECT_EQ(run.accepted[0].staleness, 0u);
  for (size_t i = 1; i < run.accepted.size(); ++i) {
    EXPECT_EQ(run.accepted[i].staleness, 1u) << "update " << i;
  }
}

}  // namespace
}  // namespace fl::internal
