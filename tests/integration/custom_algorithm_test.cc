// An algorithm defined outside the SDK (sign-SGD, examples/sign_sgd.h) runs end to end
// through the public API alone: registered with fl::RegisterAlgorithm, then run in
// process by fl::RunSimulation and over gRPC with TLS by fl::Server and two fl::Clients.
// Only the development certificates come from an internal header.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "examples/linear_trainer.h"
#include "examples/sign_sgd.h"
#include "fl/algorithm.h"
#include "fl/client.h"
#include "fl/server.h"
#include "fl/simulation.h"
#include "server/dev_certs.h"

namespace fl {
namespace {

constexpr double kServerLr = 0.01;
constexpr uint64_t kRounds = 3;

void EnsureSignSgd() {
  static const Status registered = examples::RegisterSignSgd();
  ASSERT_TRUE(registered.ok()) << registered.ToString();
}

std::filesystem::path TestDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("fl_custom_algorithm_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

// What the observer saw in one round's ApplyRound.
struct RoundCheck {
  uint64_t moved = 0;     // coordinates whose vote was not a tie
  uint64_t off_rule = 0;  // coordinates that did not end where the sign step puts them
};

// Written by the coordinator's thread, read by the test's.
struct ObservedLog {
  std::mutex mu;
  std::vector<RoundCheck> rounds;
};

// sign-SGD's own strategy, wrapped to compare the model before and after every
// ApplyRound with the rule: each coordinate moves by exactly +-float(server_lr) in the
// direction of the vote's sign, or not at all on a tie.
class ObservedStrategy : public Strategy {
 public:
  ObservedStrategy(std::unique_ptr<Strategy> inner, std::shared_ptr<ObservedLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  std::string_view name() const override { return kName; }
  TrainConfig ConfigureRound(uint64_t round) const override {
    return inner_->ConfigureRound(round);
  }
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet& global,
                                                      uint64_t round) override {
    return inner_->NewRoundAggregator(global, round);
  }
  Status ApplyRound(AggregateReport report, ParamSet* global) override {
    const ParamSet before = *global;
    const ParamSet vote = report.mean_delta;
    FL_RETURN_IF_ERROR(inner_->ApplyRound(std::move(report), global));
    const float step = static_cast<float>(kServerLr);
    RoundCheck check;
    for (size_t i = 0; i < global->size(); ++i) {
      const float v = vote.data()[i];
      const float w = before.data()[i];
      const float expected = v > 0 ? w + step : v < 0 ? w - step : w;
      if (global->data()[i] != expected) ++check.off_rule;
      if (v != 0) ++check.moved;
    }
    std::lock_guard<std::mutex> lock(log_->mu);
    log_->rounds.push_back(check);
    return Status::Ok();
  }

  static constexpr char kName[] = "signsgd_observed";

 private:
  std::unique_ptr<Strategy> inner_;
  std::shared_ptr<ObservedLog> log_;
};

// sign-SGD under another name with the observer around its strategy. Its key
// signsgd.server_lr stays declared by "signsgd" (a key has one owner).
std::shared_ptr<ObservedLog> RegisterObservedSignSgd() {
  EnsureSignSgd();
  auto log = std::make_shared<ObservedLog>();
  AlgorithmDefinition d = examples::SignSgdAlgorithm();
  d.name = ObservedStrategy::kName;
  d.config_keys.clear();
  auto create = d.create_strategy;
  d.create_strategy = [create, log](const AlgorithmConfig& c) -> Result<std::unique_ptr<Strategy>> {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> inner, create(c));
    return std::unique_ptr<Strategy>(std::make_unique<ObservedStrategy>(std::move(inner), log));
  };
  Status s = RegisterAlgorithm(std::move(d));
  EXPECT_TRUE(s.ok()) << s.ToString();
  return log;
}

TEST(CustomAlgorithmTest, SignSgdRunsInASimulationAndStepsBySigns) {
  std::shared_ptr<ObservedLog> log = RegisterObservedSignSgd();
  const std::filesystem::path dir = TestDir("sim");
  SimulationOptions options;
  options.preset = "fmnist-cnn";
  options.config_overrides = {
      "algorithm.name=signsgd_observed", "signsgd.server_lr=" + std::to_string(kServerLr),
      "model.name=mlp", "run.rounds=" + std::to_string(kRounds), "run.seed=3",
      "data.num_clients=4", "coordinator.clients_per_round=2", "data.train_examples=2000",
      "data.test_examples=500", "sim.workers=2", "sim.progress=none",
      "sim.out_dir=" + dir.string()};
  std::vector<SimulationRound> seen;
  options.on_round = [&seen](const SimulationRound& r) { seen.push_back(r); };
  Result<SimulationReport> report = RunSimulation(options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();

  ASSERT_EQ(report->rounds.size(), kRounds);
  EXPECT_EQ(seen.size(), kRounds);
  std::lock_guard<std::mutex> lock(log->mu);
  ASSERT_EQ(log->rounds.size(), kRounds);
  for (uint64_t r = 0; r < kRounds; ++r) {
    EXPECT_EQ(report->rounds[r].round, r + 1);
    EXPECT_EQ(report->rounds[r].clients, 2u);
    EXPECT_EQ(log->rounds[r].off_rule, 0u) << "round " << r + 1;
    EXPECT_GT(log->rounds[r].moved, 0u) << "round " << r + 1;
  }
  // An untrained network is at chance (10%) on ten balanced classes; three sign steps
  // along the clients' majority must beat it clearly.
  EXPECT_GT(report->rounds.back().accuracy, 0.3);
  std::filesystem::remove_all(dir);
}

// Two linear-regression clients over TLS. Both draw data from y = w.x + 0.5 with
// w = (-2, -1, 0, 1, 2, ...) (examples/linear_trainer.h).
TEST(CustomAlgorithmTest, SignSgdRunsOverGrpcWithTls) {
  EnsureSignSgd();
  const std::filesystem::path dir = TestDir("grpc");
  Result<internal::DevCertPaths> certs = internal::MakeDevCerts((dir / "certs").string());
  ASSERT_TRUE(certs.ok()) << certs.status().ToString();

  constexpr size_t kDim = 10;
  std::vector<std::unique_ptr<examples::LinearTrainer>> trainers;
  for (uint64_t seed : {1, 2}) {
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 200, seed, &x, &y);
    trainers.push_back(std::make_unique<examples::LinearTrainer>(kDim, x, y));
  }
  const ParamSet initial(trainers[0]->layout());  // all zeros

  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls_cert_file = certs->server_cert;
  options.tls_key_file = certs->server_key;
  options.enrollment_token = "sign-in";
  options.state_dir = (dir / "state").string();
  options.initial_model = initial;
  options.algorithm = examples::kSignSgdName;
  options.rounds = kRounds;
  options.min_clients = 2;
  options.clients_per_round = 2;
  options.config_overrides = {"signsgd.server_lr=" + std::to_string(kServerLr),
                              "train.local_steps=10", "train.batch_size=16", "train.lr=0.05"};
  std::mutex mu;
  std::vector<RoundInfo> rounds;
  options.on_round = [&](const RoundInfo& r) {
    std::lock_guard<std::mutex> lock(mu);
    rounds.push_back(r);
  };
  Result<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  std::vector<Status> results(trainers.size());
  std::vector<std::thread> threads;
  for (size_t c = 0; c < trainers.size(); ++c) {
    threads.emplace_back([&, c] {
      ClientOptions o;
      o.server = "127.0.0.1:" + std::to_string((*server)->port());
      o.tls_ca_file = certs->ca_cert;
      o.enrollment_token = "sign-in";
      o.name = "linear-" + std::to_string(c);
      Result<std::unique_ptr<Client>> client = Client::Connect(o);
      results[c] = client.ok() ? (*client)->Run(*trainers[c]) : client.status();
    });
  }
  (*server)->Wait();
  for (std::thread& t : threads) t.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();

  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(rounds.size(), kRounds);
    for (uint64_t r = 0; r < kRounds; ++r) {
      EXPECT_EQ(rounds[r].round, r + 1);
      EXPECT_EQ(rounds[r].updates, 2u);
      EXPECT_EQ(rounds[r].rejected, 0u);
    }
  }
  // Every coordinate moved by a whole number of steps, at most one a round. Where the
  // true weight is not 0 both clients' deltas point at it every round (the model stays
  // within kRounds * kServerLr of 0), so the vote is unanimous and the step is full.
  const ParamSet final_model = (*server)->GlobalModel();
  ASSERT_EQ(final_model.size(), initial.size());
  for (size_t i = 0; i < final_model.size(); ++i) {
    const double steps = (final_model.data()[i] - initial.data()[i]) / kServerLr;
    EXPECT_NEAR(steps, std::round(steps), 1e-3) << i;
    EXPECT_LE(std::abs(std::round(steps)), static_cast<double>(kRounds)) << i;
    const double truth = i < kDim ? static_cast<double>(i % 5) - 2.0 : 0.5;  // bias last
    if (truth != 0) EXPECT_EQ(std::round(steps), kRounds * (truth > 0 ? 1.0 : -1.0)) << i;
  }
  server->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fl
