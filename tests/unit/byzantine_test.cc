#include "simulations/byzantine.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simulations/simulator.h"

namespace fl::internal {
namespace {

// Parameters start where SetParameters puts them; Train adds 1 to each.
class StepTrainer final : public Trainer {
 public:
  StepTrainer() { layout_.Add("w", {4}); }
  const Layout& layout() const override { return layout_; }
  Status GetParameters(ParamSet* out) override {
    *out = params_;
    return Status::Ok();
  }
  Status SetParameters(const ParamSet& params) override {
    params_ = params;
    return Status::Ok();
  }
  Result<TrainStats> Train(const TrainConfig&, const CancelToken&) override {
    for (float& v : params_.values()) v += 1;
    TrainStats s;
    s.num_examples = 7;
    s.dataset_size = 7;
    s.mean_loss = 0.5;
    return s;
  }
  Result<EvalStats> Evaluate() override { return EvalStats{}; }

 private:
  Layout layout_;
  ParamSet params_;
};

// Runs one round of the wrapped trainer from global (10, 20, 30, 40) and returns the
// update the Learner would compute (trained - global) and the claimed weight.
std::pair<std::vector<float>, uint64_t> Attack(const ByzantineOptions& o, uint64_t seed = 3) {
  StepTrainer inner;
  ByzantineTrainer t(o);
  t.Bind(&inner);
  ParamSet global(inner.layout());
  for (size_t i = 0; i < 4; ++i) global.data()[i] = 10.0f * static_cast<float>(i + 1);
  EXPECT_TRUE(t.SetParameters(global).ok());
  TrainConfig config;
  config.seed = seed;
  CancelToken cancel;
  Result<TrainStats> stats = t.Train(config, cancel);
  EXPECT_TRUE(stats.ok());
  ParamSet local;
  EXPECT_TRUE(t.GetParameters(&local).ok());
  std::vector<float> delta(4);
  for (size_t i = 0; i < 4; ++i) delta[i] = local.data()[i] - global.data()[i];
  return {delta, stats.ok() ? stats->dataset_size : 0};
}

TEST(ByzantineTest, AttackersAreAFixedSeededFraction) {
  std::vector<bool> a = ChooseByzantineClients(100, 0.1, 1);
  EXPECT_EQ(std::count(a.begin(), a.end(), true), 10);
  EXPECT_EQ(a, ChooseByzantineClients(100, 0.1, 1));
  EXPECT_NE(a, ChooseByzantineClients(100, 0.1, 2));
  std::vector<bool> b = ChooseByzantineClients(10, 0.3, 1);
  EXPECT_EQ(std::count(b.begin(), b.end(), true), 3);
  std::vector<bool> none = ChooseByzantineClients(10, 0.0, 1);
  EXPECT_EQ(std::count(none.begin(), none.end(), true), 0);
}

TEST(ByzantineTest, EachAttackTransformsTheUpdate) {
  ByzantineOptions o;
  o.fraction = 1;
  o.attack = ByzantineAttack::kSignFlip;
  o.scale = 3;
  EXPECT_EQ(Attack(o).first, (std::vector<float>{-3, -3, -3, -3}));
  EXPECT_EQ(Attack(o).second, 7u);

  o.attack = ByzantineAttack::kConstant;
  o.constant = -0.5;
  EXPECT_EQ(Attack(o).first, (std::vector<float>{-0.5f, -0.5f, -0.5f, -0.5f}));

  o.attack = ByzantineAttack::kInflatedWeight;
  o.weight_factor = 100;
  EXPECT_EQ(Attack(o).first, (std::vector<float>{1, 1, 1, 1}));  // honest update
  EXPECT_EQ(Attack(o).second, 700u);

  o.attack = ByzantineAttack::kGaussian;
  o.sigma = 2;
  std::vector<float> noise = Attack(o, 5).first;
  EXPECT_EQ(noise, Attack(o, 5).first);  // seeded by the task's training seed
  EXPECT_NE(noise, Attack(o, 6).first);
  for (float v : noise) EXPECT_NE(v, 1.0f);
}

TEST(ByzantineTest, OptionsAreValidated) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  for (const char* bad : {"byzantine.fraction=1.5", "byzantine.attack=flip",
                          "byzantine.sigma=-1", "byzantine.weight_factor=0"}) {
    Result<Config> config = Config::Build(defaults, "", {bad});
    ASSERT_TRUE(config.ok()) << bad;
    Result<ByzantineOptions> o = ByzantineOptionsFromConfig(*config);
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument) << bad;
    const std::string key = std::string(bad).substr(0, std::string(bad).find('='));
    EXPECT_NE(o.status().message().find(key), std::string::npos) << o.status().ToString();
  }
  Result<Config> config = Config::Build(defaults, "", {});
  ASSERT_TRUE(config.ok());
  Result<ByzantineOptions> o = ByzantineOptionsFromConfig(*config);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->fraction, 0.0);
}

// 10 iid clients on 2000 images, all selected every round, an MLP, 3 rounds; 3 clients
// flip the sign of their update and scale it by 4.
Result<SimulationResult> RunTiny(const std::string& tag, std::vector<std::string> overrides) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fmnist-cnn");
  if (!preset.ok()) return preset.status();
  defaults.merge_patch(*preset);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fl_byz_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::vector<std::string> all = {"data.dir=" FL_FASHION_MNIST_DIR, "data.num_clients=10",
                                  "data.partition=iid", "data.train_examples=2000",
                                  "data.test_examples=1000", "model.name=mlp",
                                  "coordinator.clients_per_round=10", "run.rounds=3",
                                  "run.seed=1", "sim.workers=2", "sim.out_dir=" + dir.string()};
  all.insert(all.end(), overrides.begin(), overrides.end());
  FL_ASSIGN_OR_RETURN(Config config, Config::Build(defaults, "", all));
  Result<SimulationResult> r = RunSimulation(config, nullptr);
  if (r.ok()) {
    std::ifstream csv(dir / "metrics.csv");
    std::string header;
    std::getline(csv, header);
    const bool attacked = r->byzantine_updates > 0;
    EXPECT_EQ(header.find("byzantine_updates") != std::string::npos, attacked) << header;
  }
  std::filesystem::remove_all(dir);
  return r;
}

TEST(ByzantineSimulationTest, SignFlipHurtsFedAvgAndTheMedianDefends) {
  const std::vector<std::string> attack = {"byzantine.fraction=0.3", "byzantine.attack=sign_flip",
                                           "byzantine.scale=4"};
  Result<SimulationResult> clean = RunTiny("clean", {});
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_EQ(clean->byzantine_updates, 0u);
  Result<SimulationResult> fedavg = RunTiny("mean", attack);
  ASSERT_TRUE(fedavg.ok()) << fedavg.status().ToString();
  std::vector<std::string> median = attack;
  median.push_back("algorithm.aggregator=median");
  Result<SimulationResult> defended = RunTiny("median", median);
  ASSERT_TRUE(defended.ok()) << defended.status().ToString();
  std::vector<std::string> trimmed = attack;
  trimmed.push_back("algorithm.aggregator=trimmed_mean");
  trimmed.push_back("algorithm.trim_beta=0.3");
  Result<SimulationResult> trimmed_run = RunTiny("trimmed", trimmed);
  ASSERT_TRUE(trimmed_run.ok()) << trimmed_run.status().ToString();

  // 3 attackers in each of 3 rounds, counted per round.
  EXPECT_EQ(fedavg->byzantine_updates, 9u);
  for (const SimRoundRecord& r : fedavg->rounds) {
    EXPECT_EQ(r.strategy_stats.at("byzantine_updates"), 3.0);
  }
  const double c = clean->final_accuracy, a = fedavg->final_accuracy;
  const double m = defended->final_accuracy, t = trimmed_run->final_accuracy;
  EXPECT_GT(c, 0.6) << "clean";
  EXPECT_LT(a, c - 0.3) << "sign-flip attackers should break FedAvg";
  EXPECT_GT(m, a + 0.3) << "the median should defend";
  EXPECT_GT(m, c - 0.15) << "the median should stay near the clean run";
  EXPECT_GT(t, a + 0.3) << "the trimmed mean should defend";
}

TEST(ByzantineSimulationTest, LabelFlipAndKrumRun) {
  Result<SimulationResult> r =
      RunTiny("labelflip", {"byzantine.fraction=0.3", "byzantine.attack=label_flip",
                        "algorithm.aggregator=multi_krum", "algorithm.krum_f=3", "run.rounds=2"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->byzantine_updates, 6u);
  EXPECT_GT(r->final_accuracy, 0.4);
}

}  // namespace
}  // namespace fl::internal
