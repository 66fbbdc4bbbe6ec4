#include "simulations/simulator.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "store/store.h"

namespace fl::internal {
namespace {

std::string ReadText(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A cut-down fmnist-cnn: 6 clients on 3000 training images, 3 rounds, 2 workers.
Result<Config> TinyConfig(const std::string& out_dir) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fmnist-cnn");
  if (!preset.ok()) return preset.status();
  defaults.merge_patch(*preset);
  return Config::Build(defaults, "",
                       {"data.dir=" FL_FASHION_MNIST_DIR, "data.num_clients=6",
                        "data.train_examples=3000", "data.test_examples=1000",
                        "coordinator.clients_per_round=4", "run.rounds=3", "run.seed=5",
                        "sim.workers=2", "sim.out_dir=" + out_dir});
}

TEST(SimulatorTest, TinyFederationLearnsAndWritesEveryOutput) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_sim_e2e_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Result<Config> config = TinyConfig(dir.string());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  int finished_rounds = 0;
  uint64_t client_reports = 0;
  Result<SimulationResult> result = RunSimulation(*config, [&](const SimProgress& p) {
    EXPECT_EQ(p.total_rounds, 3u);
    if (p.round_finished) {
      ++finished_rounds;
    } else {
      ++client_reports;
    }
  });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(finished_rounds, 3);
  EXPECT_EQ(client_reports, 3u * 4u);
  ASSERT_EQ(result->rounds.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const SimRoundRecord& r = result->rounds[i];
    EXPECT_EQ(r.metrics.round, i + 1);
    EXPECT_EQ(r.metrics.clients, 4u);
    EXPECT_TRUE(r.evaluated);
    EXPECT_GT(r.train_samples, 0u);
    // Four dense f32 CNN updates go up; four models (plus file framing) come down.
    EXPECT_EQ(r.metrics.bytes_up, 4u * 215370u * 4u);
    EXPECT_GE(r.metrics.bytes_down, 4u * 215370u * 4u);
    EXPECT_EQ(r.bytes_up_total, (i + 1) * r.metrics.bytes_up);
    EXPECT_TRUE(r.strategy_stats.empty());  // FedAvg reports none
  }
  // Three rounds on Fashion-MNIST are far above chance (10%).
  EXPECT_GT(result->final_accuracy, 0.35);
  EXPECT_GT(result->train_samples_per_sec, 0.0);
  // Every phase of the tasks was timed and reported (the figures themselves belong to
  // tests/bench/sim_efficiency_bench).
  const TaskTimes& times = result->task_times;
  EXPECT_GT(times.train, 0.0);
  EXPECT_GT(times.set_params, 0.0);
  EXPECT_GT(times.get_params, 0.0);
  EXPECT_GT(times.push, 0.0);
  EXPECT_GT(times.encode, 0.0);

  // CSV: header plus one row per round.
  std::string csv = ReadText(dir / "metrics.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  EXPECT_EQ(csv.rfind("round,accuracy,test_loss,train_loss,bytes_up,bytes_down,bytes_up_total,clients,", 0), 0u);
  // JSONL: one parseable object per round.
  std::istringstream jsonl(ReadText(dir / "metrics.jsonl"));
  std::string line;
  int rows = 0;
  while (std::getline(jsonl, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["round"].get<int>(), ++rows);
    EXPECT_NEAR(j["accuracy"].get<double>(), result->rounds[rows - 1].metrics.accuracy, 1e-12);
  }
  EXPECT_EQ(rows, 3);
  std::string svg = ReadText(dir / "accuracy_bytes.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);

  // The run record: per-round metrics and the effective config.
  StoreOptions so;
  so.path = (dir / "run.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::vector<RoundMetrics>> metrics = (*store)->ListRoundMetrics();
  ASSERT_TRUE(metrics.ok());
  ASSERT_EQ(metrics->size(), 3u);
  EXPECT_DOUBLE_EQ(metrics->back().accuracy, result->final_accuracy);
  Result<std::optional<std::string>> cfg = (*store)->GetMeta("config");
  ASSERT_TRUE(cfg.ok() && cfg->has_value());
  EXPECT_NE((*cfg)->find("train_examples: 3000"), std::string::npos) << **cfg;
  Result<std::vector<RoundRecord>> rounds = (*store)->ListRounds();
  ASSERT_TRUE(rounds.ok());
  EXPECT_EQ(rounds->size(), 3u);  // the coordinator's own rounds, same file
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST(SimulatorTest, MoreVirtualClientsThanImagesWithSampledShards) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_sim_sample_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Result<Config> config = TinyConfig(dir.string());
  ASSERT_TRUE(config.ok());
  // 100,000 clients of 8 images each, drawn from 3,000.
  for (const char* o : {"run.rounds=1", "data.num_clients=100000", "data.partition=sample:8",
                        "data.test_examples=500", "coordinator.clients_per_round=5"}) {
    ASSERT_TRUE(config->ApplyOverride(o).ok());
  }
  Result<SimulationResult> r = RunSimulation(*config, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->rounds.size(), 1u);
  EXPECT_EQ(r->rounds[0].metrics.clients, 5u);
  EXPECT_EQ(r->train_samples, 5u * 8u);  // one epoch over each client's 8 images
  // Every client is registered in the run record; the round selected 5 of them.
  StoreOptions so;
  so.path = (dir / "run.db").string();
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::vector<ClientRecord>> clients = (*store)->ListClients();
  ASSERT_TRUE(clients.ok());
  EXPECT_EQ(clients->size(), 100000u);
  Result<std::vector<RoundRecord>> rounds = (*store)->ListRounds();
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ(rounds->front().selected.size(), 5u);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST(SimulatorTest, SameSeedSameModelWhateverTheWorkerCount) {
  std::string models[2];
  double accuracy[2];
  for (int workers : {1, 2}) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("fl_sim_det_" + std::to_string(::getpid()) + "_" + std::to_string(workers));
    std::filesystem::remove_all(dir);
    Result<Config> config = TinyConfig(dir.string());
    ASSERT_TRUE(config.ok());
    for (const char* o : {"run.rounds=2", "data.num_clients=4", "data.train_examples=1200",
                          "data.test_examples=500", "coordinator.clients_per_round=3"}) {
      ASSERT_TRUE(config->ApplyOverride(o).ok());
    }
    ASSERT_TRUE(config->Set("sim.workers", std::to_string(workers), "test").ok());
    Result<SimulationResult> r = RunSimulation(*config, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    models[workers - 1] = ReadText(dir / "models" / "v2.flps");
    accuracy[workers - 1] = r->final_accuracy;
    std::filesystem::remove_all(dir);
  }
  ASSERT_FALSE(models[0].empty());
  // Training depends only on (seed, client, round); the order in which updates reach
  // the aggregator varies with the worker count, but the fold is exact enough here.
  EXPECT_TRUE(models[0] == models[1]);
  EXPECT_EQ(accuracy[0], accuracy[1]);
}

TEST(SimulatorTest, FerretRunReportsItsCountersAndCompactUploads) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_sim_ferret_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Result<Config> config = TinyConfig(dir.string());
  ASSERT_TRUE(config.ok());
  for (const char* o : {"algorithm.name=ferret", "run.rounds=2", "ferret.num_bases=32",
                        "ferret.server_lr=0.05", "ferret.clip=0.001"}) {
    ASSERT_TRUE(config->ApplyOverride(o).ok()) << o;
  }
  Result<SimulationResult> result = RunSimulation(*config, nullptr);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->rounds.size(), 2u);
  uint64_t total = 0;
  for (const SimRoundRecord& r : result->rounds) {
    total += r.metrics.bytes_up;
    EXPECT_EQ(r.bytes_up_total, total);
    // Coefficient tables, not dense models: far below 215,370 f32 values per client.
    EXPECT_LT(r.metrics.bytes_up, r.metrics.clients * 215370u * 4u / 50u);
    ASSERT_EQ(r.strategy_stats.count("ferret.terms_applied"), 1u);
    EXPECT_GT(r.strategy_stats.at("ferret.terms_applied"), 0);
    // A tiny clip norm clips most terms (not those of blocks that barely moved), and
    // the count says so.
    EXPECT_GT(r.strategy_stats.at("ferret.terms_clipped"),
              r.strategy_stats.at("ferret.terms_applied") / 2);
    EXPECT_LE(r.strategy_stats.at("ferret.terms_clipped"),
              r.strategy_stats.at("ferret.terms_applied"));
    EXPECT_EQ(r.strategy_stats.at("ferret.terms_skipped_nonfinite"), 0);
  }
  const std::string csv = ReadText(dir / "metrics.csv");
  const std::string header = csv.substr(0, csv.find('\n'));
  for (const char* column : {"ferret.terms_applied", "ferret.terms_clipped",
                             "ferret.terms_skipped_nonfinite", "bytes_up_total"}) {
    EXPECT_NE(header.find(column), std::string::npos) << column << " not in " << header;
  }
  std::filesystem::remove_all(dir);
}

TEST(SimulatorTest, BadConfigValuesAreInvalidArgument) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_sim_bad_" + std::to_string(::getpid()));
  Result<Config> config = TinyConfig(dir.string());
  ASSERT_TRUE(config.ok());
  Config bad_partition = *config;
  ASSERT_TRUE(bad_partition.Set("data.partition", "zipf:2", "test").ok());
  Result<SimulationResult> r = RunSimulation(bad_partition, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("data.partition"), std::string::npos);

  Config bad_workers = *config;
  ASSERT_TRUE(bad_workers.Set("sim.workers", "0", "test").ok());
  EXPECT_EQ(RunSimulation(bad_workers, nullptr).status().code(), StatusCode::kInvalidArgument);

  Config missing_data = *config;
  ASSERT_TRUE(missing_data.Set("data.dir", "/nonexistent/fmnist", "test").ok());
  Result<SimulationResult> m = RunSimulation(missing_data, nullptr);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("dataset-fashion-mnist"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(SimulatorTest, PresetsAndOutputDirectory) {
  EXPECT_EQ(PresetValues("nope").status().code(), StatusCode::kInvalidArgument);
  Result<nlohmann::json> w1 = PresetValues("fmnist-cnn");
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ((*w1)["data"]["num_clients"], 100);
  EXPECT_EQ((*w1)["run"]["rounds"], 50);
  EXPECT_EQ((*w1)["coordinator"]["clients_per_round"], 10);
  EXPECT_EQ((*w1)["train"]["batch_size"], 32);
  nlohmann::json defaults = SimulatorConfigDefaults();
  defaults.merge_patch(*w1);
  Result<Config> c = Config::Build(defaults, "", {"run.seed=7"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(OutputDirectory(*c), "runs/fmnist-cnn-7");
}

}  // namespace
}  // namespace fl::internal
