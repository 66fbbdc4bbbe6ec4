#include "server/coordinator_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "codec/param_io.h"
#include "fl/env.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

nlohmann::json Defaults() {
  nlohmann::json d = CoordinatorConfigDefaults();
  d.update(ModelConfigDefaults("random:16"));
  return d;
}

Config Build(const std::vector<std::string>& overrides) {
  Result<Config> config = Config::Build(Defaults(), "", overrides);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *config;
}

TEST(CoordinatorConfigTest, DefaultsMapOntoCoordinatorOptionsDefaults) {
  Result<CoordinatorOptions> o = CoordinatorOptionsFromConfig(Build({}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  const CoordinatorOptions d;
  EXPECT_EQ(o->state_dir, d.state_dir);
  EXPECT_EQ(o->num_rounds, d.num_rounds);
  EXPECT_DOUBLE_EQ(o->client_fraction, d.client_fraction);
  EXPECT_EQ(o->clients_per_round, d.clients_per_round);
  EXPECT_EQ(o->min_clients, d.min_clients);
  EXPECT_EQ(o->min_updates, d.min_updates);
  EXPECT_EQ(o->round_deadline, d.round_deadline);
  EXPECT_EQ(o->client_timeout, d.client_timeout);
  EXPECT_EQ(o->max_update_bytes, d.max_update_bytes);
  EXPECT_EQ(o->seed, d.seed);
  EXPECT_EQ(o->enrollment_token, d.enrollment_token);
  EXPECT_EQ(o->durable, d.durable);
  EXPECT_EQ(o->keep_models, d.keep_models);
  EXPECT_EQ(o->max_replay_rounds, d.max_replay_rounds);
}

TEST(CoordinatorConfigTest, EveryKeyReachesItsField) {
  Result<CoordinatorOptions> o = CoordinatorOptionsFromConfig(Build(
      {"coordinator.client_fraction=0.25", "coordinator.clients_per_round=4",
       "coordinator.min_clients=3", "coordinator.min_updates=2", "coordinator.round_deadline_s=1.5",
       "coordinator.client_timeout_s=90", "coordinator.max_update_mb=3",
       "coordinator.enrollment_token=secret", "coordinator.durable=false",
       "coordinator.keep_models=0", "coordinator.max_replay_rounds=5", "run.seed=42", "run.rounds=7", "run.state_dir=/tmp/x"}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_DOUBLE_EQ(o->client_fraction, 0.25);
  EXPECT_EQ(o->clients_per_round, 4u);
  EXPECT_EQ(o->min_clients, 3u);
  EXPECT_EQ(o->min_updates, 2u);
  EXPECT_EQ(o->round_deadline, std::chrono::milliseconds(1500));
  EXPECT_EQ(o->client_timeout, std::chrono::milliseconds(90000));
  EXPECT_EQ(o->max_update_bytes, 3u << 20);
  EXPECT_EQ(o->enrollment_token, "secret");
  EXPECT_FALSE(o->durable);
  EXPECT_EQ(o->keep_models, 0u);
  EXPECT_EQ(o->max_replay_rounds, 5u);
  EXPECT_EQ(o->seed, 42u);
  EXPECT_EQ(o->num_rounds, 7u);
  EXPECT_EQ(o->state_dir, "/tmp/x");
}

TEST(CoordinatorConfigTest, OutOfRangeValuesNameTheirKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"run.rounds=-3", "run.rounds"},
      {"run.rounds=0", "run.rounds"},
      {"run.seed=-1", "run.seed"},
      {"run.state_dir=", "run.state_dir"},
      {"coordinator.client_fraction=0", "coordinator.client_fraction"},
      {"coordinator.client_fraction=1.01", "coordinator.client_fraction"},
      {"coordinator.client_fraction=-0.5", "coordinator.client_fraction"},
      {"coordinator.clients_per_round=-1", "coordinator.clients_per_round"},
      {"coordinator.min_clients=0", "coordinator.min_clients"},
      {"coordinator.min_updates=0", "coordinator.min_updates"},
      {"coordinator.round_deadline_s=0", "coordinator.round_deadline_s"},
      {"coordinator.client_timeout_s=-1", "coordinator.client_timeout_s"},
      {"coordinator.max_update_mb=0", "coordinator.max_update_mb"},
      {"coordinator.keep_models=-2", "coordinator.keep_models"},
      {"coordinator.max_replay_rounds=-1", "coordinator.max_replay_rounds"},
      {"coordinator.max_clients=-1", "coordinator.max_clients"},
      {"coordinator.joins_per_second=-1", "coordinator.joins_per_second"},
      {"coordinator.join_burst=0", "coordinator.join_burst"},
      {"coordinator.session_ttl_s=0", "coordinator.session_ttl_s"},
      {"coordinator.max_rejected_rows_per_client=-1", "coordinator.max_rejected_rows_per_client"},
  };
  for (const auto& [assignment, key] : cases) {
    Result<CoordinatorOptions> o = CoordinatorOptionsFromConfig(Build({assignment}));
    ASSERT_FALSE(o.ok()) << assignment;
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument) << assignment;
    EXPECT_THAT(o.status().message(), HasSubstr(key)) << assignment;
  }
}

TEST(CoordinatorConfigTest, SyntheticModelIsDeterministicAndBounded) {
  Result<ParamSet> a = SyntheticModel(10000, 5);
  Result<ParamSet> b = SyntheticModel(10000, 5);
  Result<ParamSet> c = SyntheticModel(10000, 6);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_EQ(a->size(), 10000u);
  EXPECT_EQ(a->layout().hash(), c->layout().hash());
  EXPECT_TRUE(std::equal(a->values().begin(), a->values().end(), b->values().begin()));
  EXPECT_FALSE(std::equal(a->values().begin(), a->values().end(), c->values().begin()));
  double sum = 0;
  for (float v : a->values()) {
    EXPECT_GE(v, -0.1f);
    EXPECT_LT(v, 0.1f);
    sum += v;
  }
  EXPECT_LT(std::fabs(sum / 10000), 0.005) << "values should be centred on zero";
  EXPECT_FALSE(SyntheticModel(0, 1).ok());
}

TEST(CoordinatorConfigTest, SyntheticModelNames) {
  EXPECT_EQ(*ParseSyntheticModelName("random:123"), 123u);
  for (const char* bad : {"random:", "random:0", "random:-4", "random:12x", "cnn", "Random:5"}) {
    EXPECT_FALSE(ParseSyntheticModelName(bad).ok()) << bad;
  }
}

class InitialModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fl_coordinator_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(InitialModelTest, FromSyntheticNameOrFile) {
  Result<ParamSet> synthetic = InitialModelFromConfig(Build({"run.seed=9"}));
  ASSERT_TRUE(synthetic.ok()) << synthetic.status().ToString();
  EXPECT_EQ(synthetic->size(), 16u);
  EXPECT_TRUE(std::equal(synthetic->values().begin(), synthetic->values().end(),
                         SyntheticModel(16, 9)->values().begin()));

  Layout layout;
  layout.Add("conv.weight", {2, 3});
  layout.Add("conv.bias", {2});
  ParamSet params(layout);
  for (size_t i = 0; i < params.size(); ++i) params.data()[i] = 0.5f * static_cast<float>(i);
  const std::string path = dir_ + "/init.flps";
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(path, SerializeParamSet(params), false).ok());
  Result<ParamSet> loaded =
      InitialModelFromConfig(Build({"model.name=cnn", "model.init_file=" + path}));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->layout().hash(), params.layout().hash());
  EXPECT_TRUE(
      std::equal(loaded->values().begin(), loaded->values().end(), params.values().begin()));
}

TEST_F(InitialModelTest, RefusesWhatCannotBeAnInitialModel) {
  Result<ParamSet> no_file = InitialModelFromConfig(Build({"model.name=cnn"}));
  EXPECT_EQ(no_file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(no_file.status().message(), HasSubstr("model.init_file"));

  EXPECT_EQ(InitialModelFromConfig(Build({"model.name=random:0"})).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(InitialModelFromConfig(Build({"model.init_file=" + dir_ + "/missing"})).status().code(),
            StatusCode::kNotFound);

  const std::string garbage = dir_ + "/garbage.flps";
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(garbage, "not a model", false).ok());
  EXPECT_FALSE(InitialModelFromConfig(Build({"model.init_file=" + garbage})).ok());

  Layout layout;
  layout.Add("w", {4});
  ParamSet params(layout);
  params.data()[2] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan = dir_ + "/nan.flps";
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(nan, SerializeParamSet(params), false).ok());
  Result<ParamSet> non_finite = InitialModelFromConfig(Build({"model.init_file=" + nan}));
  EXPECT_EQ(non_finite.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(non_finite.status().message(), HasSubstr("non-finite"));
}

}  // namespace
}  // namespace fl::internal
