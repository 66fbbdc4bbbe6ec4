// fl-sim on the virtual clock: simulated time of real (cut-down Fashion-MNIST) runs.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "simulations/run_comparison.h"
#include "simulations/simulator.h"

namespace fl::internal {
namespace {

std::string ReadText(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 4 clients on 1200 training images, 3 per round, 3 rounds; stragglers and
// availability on so every part of the clock is exercised.
Result<Config> ClockedConfig(const std::string& out_dir, int workers) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fmnist-cnn");
  if (!preset.ok()) return preset.status();
  defaults.merge_patch(*preset);
  return Config::Build(
      defaults, "",
      {"data.dir=" FL_FASHION_MNIST_DIR, "data.num_clients=4", "data.train_examples=1200",
       "data.test_examples=500", "coordinator.clients_per_round=3", "run.rounds=3", "run.seed=9",
       "clock.straggler_fraction=0.25", "clock.mean_online_s=30", "clock.mean_offline_s=10",
       "clock.server_seconds=0.5", "sim.workers=" + std::to_string(workers),
       "sim.out_dir=" + out_dir});
}

// A column of a metrics.csv, as text ("<missing>" where a row lacks it).
std::vector<std::string> CsvColumn(const std::string& csv, const std::string& name) {
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  std::stringstream hs(line);
  for (std::string f; std::getline(hs, f, ',');) header.push_back(f);
  const size_t col = std::find(header.begin(), header.end(), name) - header.begin();
  std::vector<std::string> values;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ls(line);
    for (std::string f; std::getline(ls, f, ',');) fields.push_back(f);
    if (line.back() == ',') fields.push_back("");
    values.push_back(col < fields.size() ? fields[col] : "<missing>");
  }
  return values;
}

// The sim_time_s column of a metrics.csv, as text.
std::vector<std::string> SimTimeColumn(const std::string& csv) {
  return CsvColumn(csv, "sim_time_s");
}

TEST(SimClockTest, SimTimeDoesNotDependOnTheWorkerCount) {
  std::vector<std::string> columns[2];
  std::string jsonl[2];
  for (int workers : {1, 3}) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("fl_sim_clock_" + std::to_string(::getpid()) + "_" + std::to_string(workers));
    std::filesystem::remove_all(dir);
    Result<Config> config = ClockedConfig(dir.string(), workers);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    Result<SimulationResult> r = RunSimulation(*config, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->rounds.size(), 3u);
    double previous = 0;
    for (const SimRoundRecord& rec : r->rounds) {
      // Each round lasts at least its server cost plus two latencies and some training.
      EXPECT_GT(rec.sim_time_s, previous + 0.5 + 0.1);
      previous = rec.sim_time_s;
    }
    EXPECT_EQ(r->sim_time_s, r->rounds.back().sim_time_s);
    const int k = workers == 1 ? 0 : 1;
    columns[k] = SimTimeColumn(ReadText(dir / "metrics.csv"));
    std::istringstream lines(ReadText(dir / "metrics.jsonl"));
    for (std::string line; std::getline(lines, line);) {
      jsonl[k] += nlohmann::json::parse(line)["sim_time_s"].dump() + " ";
    }
    // fl-sim compare reads the column back and draws the simulated-time panel.
    Result<RunCurve> curve = ParseRunCurve(ReadText(dir / "metrics.csv"), "run");
    ASSERT_TRUE(curve.ok()) << curve.status().ToString();
    EXPECT_TRUE(curve->HasSimTime());
    EXPECT_NEAR(curve->points.back().sim_time_s, r->sim_time_s, 1e-9 * r->sim_time_s);  // 12 digits
    std::filesystem::remove_all(dir);
  }
  ASSERT_EQ(columns[0].size(), 3u);
  EXPECT_EQ(columns[0], columns[1]);
  EXPECT_EQ(jsonl[0], jsonl[1]);
  for (const std::string& v : columns[0]) EXPECT_FALSE(v.empty());
}

// Identical devices, always online, equal client sizes: every round lasts exactly one
// task (latency + download, training, latency + upload) plus the server's cost.
TEST(SimClockTest, SyncRoundLastsItsSlowestTaskPlusTheServerCost) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fl_sim_clock_exact_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Result<Config> config = ClockedConfig(dir.string(), 2);
  ASSERT_TRUE(config.ok());
  for (const char* o : {"data.partition=iid", "clock.compute_sigma=0", "clock.straggler_fraction=0",
                        "clock.bandwidth_sigma=0", "clock.mean_online_s=0",
                        "clock.mean_offline_s=0", "run.rounds=2"}) {
    ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
  }
  Result<SimulationResult> r = RunSimulation(*config, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->rounds.size(), 2u);
  double expected = 0;
  for (const SimRoundRecord& rec : r->rounds) {
    const double clients = static_cast<double>(rec.metrics.clients);
    const double down = static_cast<double>(rec.metrics.bytes_down) / clients;
    const double up = static_cast<double>(rec.metrics.bytes_up) / clients;
    const double examples = static_cast<double>(rec.train_samples) / clients;
    EXPECT_EQ(examples, 300.0);  // 1200 images, 4 clients, one epoch
    expected += 0.05 + down / (20e6 / 8) + examples * 0.002 + 0.05 + up / (5e6 / 8) + 0.5;
    EXPECT_NEAR(rec.sim_time_s, expected, 1e-9 * expected);
  }
  std::filesystem::remove_all(dir);
}

// Asynchronous mode: completions reach the coordinator in simulated-time order, so
// versions, staleness, the model and sim_time_s do not depend on the worker count,
// with client overlap (two events per task, two tasks per client) as without.
TEST(SimClockTest, AsyncRunIsTheSameForAnyWorkerCount) {
  std::vector<std::string> by_overlap[2];
  for (bool overlap : {false, true}) {
    SCOPED_TRACE(overlap ? "client.overlap=true" : "client.overlap=false");
    std::vector<std::string> columns[2], staleness[2];
    std::string models[2];
    for (int workers : {1, 2}) {
      const auto dir = std::filesystem::temp_directory_path() /
                       ("fl_sim_async_" + std::to_string(::getpid()) + "_" +
                        std::to_string(workers) + (overlap ? "_overlap" : ""));
      std::filesystem::remove_all(dir);
      Result<Config> config = ClockedConfig(dir.string(), workers);
      ASSERT_TRUE(config.ok()) << config.status().ToString();
      for (const char* o : {"coordinator.mode=async", "async.concurrency=3",
                            "async.buffer_size=2", "async.max_staleness=1", "run.rounds=4"}) {
        ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
      }
      ASSERT_TRUE(config->ApplyOverride(overlap ? "client.overlap=true" : "client.overlap=false")
                      .ok());
      Result<SimulationResult> r = RunSimulation(*config, nullptr);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_EQ(r->rounds.size(), 4u);  // one record per flush
      double previous = 0;
      for (const SimRoundRecord& rec : r->rounds) {
        EXPECT_EQ(rec.metrics.clients, 2u);  // buffer_size updates per flush
        EXPECT_GT(rec.sim_time_s, previous);
        previous = rec.sim_time_s;
      }
      EXPECT_GT(r->final_accuracy, 0.2);
      const int k = workers - 1;
      const std::string csv = ReadText(dir / "metrics.csv");
      columns[k] = SimTimeColumn(csv);
      staleness[k] = CsvColumn(csv, "async.mean_staleness");
      models[k] = ReadText(dir / "models" / "v4.flps");
      std::filesystem::remove_all(dir);
    }
    ASSERT_EQ(columns[0].size(), 4u);
    EXPECT_EQ(columns[0], columns[1]);
    EXPECT_EQ(staleness[0], staleness[1]);
    for (const std::string& v : staleness[0]) EXPECT_FALSE(v.empty() || v == "<missing>");
    ASSERT_FALSE(models[0].empty());
    EXPECT_TRUE(models[0] == models[1]);
    by_overlap[overlap] = columns[0];
  }
  EXPECT_NE(by_overlap[0], by_overlap[1]);  // overlap did change the timeline
}

// Overlapped timeline on identical, always-online clients of equal size, with every
// client allowed two tasks: all run in lockstep, so a buffer of 4 updates flushes when
// their uploads end. The downlink is made ~infinite, so a download is its latency and
// download + training is 0.05 + 300 x 0.002 = 0.65 s; the upload u is then read from
// the first flush. Without overlap flush k is at k (0.65 + u); with it the next task
// starts when the upload does and its upload waits for the uplink, so (u > 0.65) flush
// k is at 0.65 + k u.
TEST(SimClockTest, AsyncOverlapTimelineWithIdenticalClients) {
  std::vector<double> times[2];
  for (bool overlap : {false, true}) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("fl_sim_overlap_exact_" + std::to_string(::getpid()) +
                      (overlap ? "_on" : "_off"));
    std::filesystem::remove_all(dir);
    Result<Config> config = ClockedConfig(dir.string(), 2);
    ASSERT_TRUE(config.ok());
    for (const char* o :
         {"data.partition=iid", "clock.compute_sigma=0", "clock.straggler_fraction=0",
          "clock.bandwidth_sigma=0", "clock.mean_online_s=0", "clock.mean_offline_s=0",
          "clock.server_seconds=0", "clock.downlink_mbps=1e9", "coordinator.mode=async",
          "async.concurrency=8", "async.buffer_size=4", "async.max_staleness=8",
          "run.rounds=3", "sim.eval_every=3"}) {
      ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
    }
    ASSERT_TRUE(
        config->ApplyOverride(std::string("client.overlap=") + (overlap ? "true" : "false")).ok());
    Result<SimulationResult> r = RunSimulation(*config, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->rounds.size(), 3u);
    for (const SimRoundRecord& rec : r->rounds) times[overlap].push_back(rec.sim_time_s);
    std::filesystem::remove_all(dir);
  }
  constexpr double kDownloadAndTrain = 0.05 + 300 * 0.002;
  const double upload = times[0][0] - kDownloadAndTrain;
  ASSERT_GT(upload, kDownloadAndTrain);  // the uplink is the bottleneck
  for (int k = 1; k <= 3; ++k) {
    EXPECT_NEAR(times[0][k - 1], k * (kDownloadAndTrain + upload), 1e-6) << k;
    EXPECT_NEAR(times[1][k - 1], kDownloadAndTrain + k * upload, 1e-6) << k;
  }
}

// Client overlap (CO2) on the clock: each next task is based on the version current
// when the previous upload begins, so updates are staler, and its download and training
// hide behind the upload, so the same number of flushes takes less simulated time.
// Enough slots for every client to hold two tasks, and no refusals, so both runs fold
// the same number of updates.
TEST(SimClockTest, AsyncOverlapIsStalerAndFaster) {
  double mean_staleness[2] = {0, 0};
  double sim_time[2] = {0, 0};
  for (bool overlap : {false, true}) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("fl_sim_overlap_" + std::to_string(::getpid()) + (overlap ? "_on" : "_off"));
    std::filesystem::remove_all(dir);
    Result<Config> config = ClockedConfig(dir.string(), 2);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    for (const char* o : {"coordinator.mode=async", "async.concurrency=8", "async.buffer_size=2",
                          "async.max_staleness=8", "run.rounds=6", "clock.server_seconds=0"}) {
      ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
    }
    ASSERT_TRUE(
        config->ApplyOverride(std::string("client.overlap=") + (overlap ? "true" : "false")).ok());
    Result<SimulationResult> r = RunSimulation(*config, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->rounds.size(), 6u);
    const std::vector<std::string> column =
        CsvColumn(ReadText(dir / "metrics.csv"), "async.mean_staleness");
    ASSERT_EQ(column.size(), 6u);
    // Every flush folds buffer_size updates, so the mean of the rows is the run's mean.
    for (size_t k = 0; k < column.size(); ++k) {
      EXPECT_EQ(r->rounds[k].metrics.clients, 2u);
      ASSERT_FALSE(column[k].empty() || column[k] == "<missing>") << k;
      mean_staleness[overlap] += std::stod(column[k]) / 6;
    }
    sim_time[overlap] = r->rounds.back().sim_time_s;
    EXPECT_EQ(r->sim_time_s, sim_time[overlap]);
    EXPECT_GT(r->final_accuracy, 0.2);
    std::filesystem::remove_all(dir);
  }
  EXPECT_GT(mean_staleness[1], mean_staleness[0]);
  EXPECT_LT(sim_time[1], sim_time[0]);
  std::printf("6 flushes: mean staleness %.3f -> %.3f, sim time %.3f s -> %.3f s\n",
              mean_staleness[0], mean_staleness[1], sim_time[0], sim_time[1]);
}

TEST(SimClockTest, AsyncNeedsTheClock) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_sim_async_noclock_" + std::to_string(::getpid()));
  Result<Config> config = ClockedConfig(dir.string(), 1);
  ASSERT_TRUE(config.ok());
  for (const char* o : {"coordinator.mode=async", "clock.enabled=false"}) {
    ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
  }
  Result<SimulationResult> r = RunSimulation(*config, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("clock.enabled"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(SimClockTest, DisabledClockLeavesTheColumnEmpty) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fl_sim_noclock_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Result<Config> config = ClockedConfig(dir.string(), 2);
  ASSERT_TRUE(config.ok());
  for (const char* o : {"clock.enabled=false", "run.rounds=1"}) {
    ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
  }
  Result<SimulationResult> r = RunSimulation(*config, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->rounds.size(), 1u);
  EXPECT_TRUE(std::isnan(r->rounds[0].sim_time_s));
  EXPECT_EQ(SimTimeColumn(ReadText(dir / "metrics.csv")), std::vector<std::string>{""});
  const nlohmann::json row = nlohmann::json::parse(ReadText(dir / "metrics.jsonl"));
  EXPECT_TRUE(row["sim_time_s"].is_null());
  std::filesystem::remove_all(dir);
}

TEST(SimClockTest, BadClockValueFailsBeforeTraining) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fl_sim_badclock_" + std::to_string(::getpid()));
  Result<Config> config = ClockedConfig(dir.string(), 1);
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(config->ApplyOverride("clock.straggler_slowdown=0.5").ok());
  Result<SimulationResult> r = RunSimulation(*config, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("clock.straggler_slowdown"), std::string::npos)
      << r.status().ToString();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fl::internal
