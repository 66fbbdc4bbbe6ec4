#include "algorithms/fedavg/fedavg_strategy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"

namespace fl::internal {
namespace {

Layout TwoValues() {
  Layout l;
  l.Add("w", {2});
  return l;
}

ParamSet Values(std::vector<float> v) {
  ParamSet p(TwoValues());
  for (size_t i = 0; i < v.size(); ++i) p.data()[i] = v[i];
  return p;
}

AggregateReport Report(std::vector<float> mean_delta) {
  AggregateReport r;
  r.mean_delta = Values(std::move(mean_delta));
  r.total_weight = 1;
  r.count = 1;
  return r;
}

// Runs one real round through the strategy's own aggregator.
Status RunRound(FedAvgStrategy& s, ParamSet* global, uint64_t round,
                const std::vector<std::pair<std::vector<float>, double>>& updates) {
  std::unique_ptr<RoundAggregator> agg = s.NewRoundAggregator(*global, round);
  for (const auto& [delta, weight] : updates) {
    Payload p;
    EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = round;
    p.meta.weight = weight;
    p.meta.layout_hash = global->layout().hash();
    FL_RETURN_IF_ERROR(agg->Accumulate(p));
  }
  FL_ASSIGN_OR_RETURN(AggregateReport report, std::move(*agg).Report());
  return s.ApplyRound(std::move(report), global);
}

TEST(FedAvgStrategyTest, SgdAppliesWeightedMeanDelta) {
  FedAvgOptions o;
  FedAvgStrategy s(o);
  ParamSet global = Values({1, 2});
  // mean = (1 * [1, -1] + 3 * [4, 2]) / 4 = [3.25, 1.25]
  ASSERT_TRUE(RunRound(s, &global, 1, {{{1, -1}, 1.0}, {{4, 2}, 3.0}}).ok());
  EXPECT_EQ(global.data()[0], 4.25f);
  EXPECT_EQ(global.data()[1], 3.25f);
  EXPECT_EQ(s.SaveState(), "");  // plain FedAvg has no optimizer state
  EXPECT_EQ(s.steps(), 1u);

  FedAvgOptions half;
  half.server_lr = 0.5;
  FedAvgStrategy s2(half);
  ParamSet g2 = Values({1, 2});
  ASSERT_TRUE(RunRound(s2, &g2, 1, {{{1, -1}, 1.0}, {{4, 2}, 3.0}}).ok());
  EXPECT_EQ(g2.data()[0], 2.625f);
  EXPECT_EQ(g2.data()[1], 2.625f);
}

TEST(FedAvgStrategyTest, SgdMomentum) {
  FedAvgOptions o;
  o.server_momentum = 0.5;
  FedAvgStrategy s(o);
  ParamSet global = Values({0, 0});
  ASSERT_TRUE(s.ApplyRound(Report({1, -2}), &global).ok());  // m = d
  EXPECT_EQ(global.data()[0], 1.0f);
  EXPECT_EQ(global.data()[1], -2.0f);
  ASSERT_TRUE(s.ApplyRound(Report({1, -2}), &global).ok());  // m = 0.5 d + d
  EXPECT_EQ(global.data()[0], 2.5f);
  EXPECT_EQ(global.data()[1], -5.0f);
  EXPECT_FALSE(s.SaveState().empty());
}

TEST(FedAvgStrategyTest, AdamMatchesHandComputedSteps) {
  FedAvgOptions o;
  o.server_optimizer = ServerOptimizer::kAdam;
  o.server_lr = 0.1;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.tau = 1e-3;
  FedAvgStrategy s(o);
  ParamSet global = Values({0, 0});
  // Step 1, d = [0.5, -0.2]: m = 0.1 d; v = 0.99 tau^2 + 0.01 d^2; w += 0.1 m / (sqrt(v) + tau)
  //   w0 = 0.1 * 0.05 / (sqrt(0.00250099) + 0.001) = 0.0980202
  //   w1 = 0.1 * -0.02 / (sqrt(0.00040099) + 0.001) = -0.0951261
  ASSERT_TRUE(s.ApplyRound(Report({0.5f, -0.2f}), &global).ok());
  EXPECT_NEAR(global.data()[0], 0.0980202, 1e-6);
  EXPECT_NEAR(global.data()[1], -0.0951261, 1e-6);
  // Step 2, same d: m = [0.095, -0.038]; v = [0.00497598, 0.00079698]
  ASSERT_TRUE(s.ApplyRound(Report({0.5f, -0.2f}), &global).ok());
  EXPECT_NEAR(global.data()[0], 0.2308119, 1e-6);
  EXPECT_NEAR(global.data()[1], -0.2251258, 1e-6);
}

TEST(FedAvgStrategyTest, YogiGrowsSecondMomentAdditively) {
  FedAvgOptions o;
  o.server_optimizer = ServerOptimizer::kYogi;
  o.server_lr = 0.1;
  o.tau = 1e-3;
  FedAvgStrategy s(o);
  ParamSet global = Values({0, 0});
  // v0 = tau^2 < d^2, so v = tau^2 + 0.01 d^2 (same as adam's 0.99 tau^2 + 0.01 d^2 plus 0.01 tau^2)
  ASSERT_TRUE(s.ApplyRound(Report({0.5f, -0.2f}), &global).ok());
  const double v0 = 1e-6 + 0.01 * 0.25;
  EXPECT_NEAR(global.data()[0], 0.1 * 0.05 / (std::sqrt(v0) + 1e-3), 1e-6);
}

TEST(FedAvgStrategyTest, StateRoundTripResumesExactly) {
  FedAvgOptions o;
  o.server_optimizer = ServerOptimizer::kAdam;
  o.server_lr = 0.05;
  FedAvgStrategy a(o);
  ParamSet ga = Values({1, -1});
  ASSERT_TRUE(a.ApplyRound(Report({0.3f, 0.7f}), &ga).ok());
  std::string state = a.SaveState();
  ASSERT_FALSE(state.empty());

  FedAvgStrategy b(o);  // a restarted server
  ASSERT_TRUE(b.LoadState(state).ok());
  EXPECT_EQ(b.steps(), 1u);
  const ParamSet after_first = ga;
  ParamSet gb = ga;
  ASSERT_TRUE(a.ApplyRound(Report({-0.1f, 0.2f}), &ga).ok());
  ASSERT_TRUE(b.ApplyRound(Report({-0.1f, 0.2f}), &gb).ok());
  EXPECT_EQ(ga.data()[0], gb.data()[0]);
  EXPECT_EQ(ga.data()[1], gb.data()[1]);
  EXPECT_EQ(a.SaveState(), b.SaveState());

  // Without the moments the same step lands elsewhere: the check above is not vacuous.
  FedAvgStrategy amnesiac(o);
  ParamSet gf = after_first;
  ASSERT_TRUE(amnesiac.ApplyRound(Report({-0.1f, 0.2f}), &gf).ok());
  EXPECT_NE(gf.data()[0], gb.data()[0]);
  EXPECT_NE(gf.data()[1], gb.data()[1]);

  ASSERT_TRUE(b.LoadState("").ok());  // empty resets
  EXPECT_EQ(b.steps(), 0u);
  EXPECT_EQ(b.SaveState(), "");
}

TEST(FedAvgStrategyTest, LoadStateRejectsCorruptOrForeignState) {
  FedAvgOptions adam;
  adam.server_optimizer = ServerOptimizer::kAdam;
  FedAvgStrategy a(adam);
  ParamSet g = Values({0, 0});
  ASSERT_TRUE(a.ApplyRound(Report({0.1f, 0.1f}), &g).ok());
  const std::string state = a.SaveState();
  for (size_t n = 1; n < state.size(); ++n) {
    FedAvgStrategy b(adam);
    EXPECT_EQ(b.LoadState(state.substr(0, n)).code(), StatusCode::kDataLoss) << n;
  }
  FedAvgStrategy b(adam);
  EXPECT_EQ(b.LoadState(state + "xxxx").code(), StatusCode::kDataLoss);
  std::string bad_magic = state;
  bad_magic[0] = 'X';
  EXPECT_EQ(b.LoadState(bad_magic).code(), StatusCode::kDataLoss);
  FedAvgOptions sgd;
  sgd.server_momentum = 0.9;
  FedAvgStrategy c(sgd);
  EXPECT_EQ(c.LoadState(state).code(), StatusCode::kInvalidArgument);

  // State of another model size is refused at the first step, leaving the model alone.
  ASSERT_TRUE(b.LoadState(state).ok());
  Layout three;
  three.Add("w", {3});
  ParamSet g3(three);
  AggregateReport r;
  r.mean_delta = ParamSet(three);
  EXPECT_EQ(b.ApplyRound(std::move(r), &g3).code(), StatusCode::kFailedPrecondition);
}

TEST(FedAvgStrategyTest, ApplyRoundRefusesBadAggregates) {
  FedAvgOptions o;
  o.server_optimizer = ServerOptimizer::kAdam;
  FedAvgStrategy s(o);
  ParamSet global = Values({1, 2});
  Layout other;
  other.Add("x", {2});
  AggregateReport wrong;
  wrong.mean_delta = ParamSet(other);
  EXPECT_EQ(s.ApplyRound(std::move(wrong), &global).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ApplyRound(Report({std::nanf(""), 0}), &global).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(global.data()[0], 1.0f);
  EXPECT_EQ(s.SaveState(), "");

  FedAvgOptions big;
  big.server_lr = 1e30;
  FedAvgStrategy overflow(big);
  ParamSet g = Values({3e38f, 0});
  EXPECT_EQ(overflow.ApplyRound(Report({1e10f, 0}), &g).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.data()[0], 3e38f);
  EXPECT_EQ(overflow.steps(), 0u);
}

TEST(FedAvgStrategyTest, ConfigureRoundSendsTrainConfig) {
  FedAvgOptions o;
  o.train.lr = 0.01;
  o.train.local_epochs = 2;
  o.train.prox_mu = 0.1;
  o.train.upload_encoding = Encoding::kDenseF16;
  FedAvgStrategy s(o);
  TrainConfig c = s.ConfigureRound(3);
  EXPECT_EQ(c.lr, 0.01);
  EXPECT_EQ(c.local_epochs, 2);
  EXPECT_EQ(c.prox_mu, 0.1);
  EXPECT_EQ(c.upload_encoding, Encoding::kDenseF16);
}

// --- registry -------------------------------------------------------------------

Result<std::unique_ptr<Strategy>> FromOverrides(const std::vector<std::string>& overrides) {
  FL_ASSIGN_OR_RETURN(Config config, Config::Build(AlgorithmConfigDefaults(), "", overrides));
  return CreateStrategy(config);
}

TEST(AlgorithmRegistryTest, DefaultsHaveTheDocumentedValues) {
  Config c = *Config::FromDefaults(AlgorithmConfigDefaults());
  EXPECT_EQ(c.GetString("algorithm.name"), "fedavg");
  EXPECT_EQ(c.GetString("algorithm.server_optimizer"), "sgd");
  EXPECT_EQ(c.GetDouble("algorithm.server_lr"), 1.0);
  EXPECT_EQ(c.GetDouble("algorithm.beta2"), 0.99);
  EXPECT_EQ(c.GetDouble("algorithm.tau"), 1e-3);
  EXPECT_EQ(c.GetInt("train.local_epochs"), 1);
  EXPECT_EQ(c.GetInt("train.batch_size"), 32);
  EXPECT_EQ(c.GetDouble("train.lr"), 0.05);
  EXPECT_EQ(c.GetString("train.upload_encoding"), "f32");
  // Floating-point keys must reject nothing that is a number, integer keys reject 0.5.
  EXPECT_TRUE(Config::Build(AlgorithmConfigDefaults(), "", {"train.momentum=0"}).ok());
  EXPECT_FALSE(Config::Build(AlgorithmConfigDefaults(), "", {"train.batch_size=0.5"}).ok());
}

TEST(AlgorithmRegistryTest, CreatesTheFedAvgFamily) {
  Result<std::unique_ptr<Strategy>> s = FromOverrides({});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "fedavg");

  s = FromOverrides({"algorithm.name=fedprox", "train.prox_mu=0.01", "train.upload_encoding=bf16"});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "fedprox");
  TrainConfig c = (*s)->ConfigureRound(1);
  EXPECT_EQ(c.prox_mu, 0.01);
  EXPECT_EQ(c.upload_encoding, Encoding::kDenseBF16);

  s = FromOverrides({"algorithm.name=fedadam", "algorithm.server_lr=0.01"});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto* adam = dynamic_cast<FedAvgStrategy*>(s->get());
  ASSERT_NE(adam, nullptr);
  EXPECT_EQ(adam->options().server_optimizer, ServerOptimizer::kAdam);
  EXPECT_EQ(adam->options().server_lr, 0.01);

  for (const std::string& name : GlobalAlgorithmRegistry().Names()) {
    Result<std::unique_ptr<Learner>> l = CreateLearner(name);
    EXPECT_TRUE(l.ok()) << name;
  }
  EXPECT_EQ(CreateLearner("nope").status().code(), StatusCode::kNotFound);
}

TEST(AlgorithmRegistryTest, OutOfRangeValuesNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"algorithm.name=nope", "algorithm.name"},
      {"algorithm.name=fedprox", "train.prox_mu"},
      {"algorithm.server_optimizer=rmsprop", "algorithm.server_optimizer"},
      {"algorithm.server_lr=0", "algorithm.server_lr"},
      {"algorithm.server_momentum=1", "algorithm.server_momentum"},
      {"algorithm.beta1=-0.1", "algorithm.beta1"},
      {"algorithm.beta2=1.5", "algorithm.beta2"},
      {"algorithm.tau=0", "algorithm.tau"},
      {"train.batch_size=0", "train.batch_size"},
      {"train.local_epochs=-1", "train.local_epochs"},
      {"train.local_steps=-3", "train.local_steps"},
      {"train.lr=-0.1", "train.lr"},
      {"train.momentum=1", "train.momentum"},
      {"train.weight_decay=-1", "train.weight_decay"},
      {"train.prox_mu=-1", "train.prox_mu"},
      {"train.upload_encoding=f8", "train.upload_encoding"},
      {"train.local_steps=5000000000", "train.local_steps"},
  };
  for (const auto& [override, key] : cases) {
    Result<std::unique_ptr<Strategy>> s = FromOverrides({override});
    ASSERT_FALSE(s.ok()) << override;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << override;
    EXPECT_NE(s.status().message().find(key), std::string::npos) << override << ": " << s.status().message();
  }
  Result<std::unique_ptr<Strategy>> s = FromOverrides({"train.local_epochs=0"});
  EXPECT_FALSE(s.ok());
  s = FromOverrides({"train.local_epochs=0", "train.local_steps=10"});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
}

TEST(AlgorithmRegistryTest, RegistryRefusesDuplicatesAndIncompleteEntries) {
  AlgorithmRegistry r;
  ASSERT_TRUE(RegisterBuiltinAlgorithms(&r).ok());
  EXPECT_EQ(r.Names(), (std::vector<std::string>{"fedavg", "fedprox", "fedadam", "ferret",
                                                 "fedins", "sfprompt"}));
  AlgorithmDefinition dup = *r.Find("fedavg");
  EXPECT_EQ(r.Register(dup).code(), StatusCode::kAlreadyExists);
  AlgorithmDefinition empty;
  empty.name = "x";
  EXPECT_EQ(r.Register(empty).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Find("fedadam")->name, "fedadam");
  EXPECT_EQ(r.Find("no-such-algorithm"), nullptr);
}

}  // namespace
}  // namespace fl::internal
