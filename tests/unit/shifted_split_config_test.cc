#include "data/shifted_split_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/prediction_csv.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

// fl-sim's keys and fl-client's (data.num_partitions, data.seed) in one config.
Config Both(const std::vector<std::string>& overrides = {}) {
  const nlohmann::json defaults = {
      {"data",
       {{"domains", "clean,inverted,rot90,noise,blur"},
        {"domains_per_client", 3},
        {"partition", "dirichlet:0.5"},
        {"train_examples", 0},
        {"num_clients", 10},
        {"num_partitions", 10},
        {"seed", 1}}},
      {"run", {{"seed", 1}}},
  };
  Result<Config> c = Config::Build(defaults, "", overrides);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

const ShiftedSplitKeys kClientKeys{.num_clients = "data.num_partitions", .seed = "data.seed"};

TEST(ShiftedSplitConfigTest, ClientKeysGiveFlSimsOptions) {
  const Config c = Both({"data.num_clients=7", "data.num_partitions=7", "run.seed=5", "data.seed=5",
                         "data.domains=noise,blur", "data.domains_per_client=2",
                         "data.train_examples=2000", "data.partition=iid"});
  Result<ShiftedSplitOptions> sim = ShiftedSplitOptionsFromConfig(c, 60000);
  Result<ShiftedSplitOptions> client = ShiftedSplitOptionsFromConfig(c, 60000, kClientKeys);
  ASSERT_TRUE(sim.ok() && client.ok());
  for (const ShiftedSplitOptions& o : {*sim, *client}) {
    EXPECT_EQ(o.begin, kFederatedBegin);
    EXPECT_EQ(o.end, kFederatedBegin + 2000);
    EXPECT_EQ(o.num_clients, 7);
    EXPECT_EQ(o.seed, 5u);
    EXPECT_EQ(o.domains, (std::vector<Domain>{Domain::kNoise, Domain::kBlur}));
    EXPECT_EQ(o.domains_per_client, 2);
    EXPECT_EQ(PartitionSpecToString(o.label_skew), "iid");
  }
}

TEST(ShiftedSplitConfigTest, NoLimitMeansTheWholeFederatedRange) {
  Result<ShiftedSplitOptions> o = ShiftedSplitOptionsFromConfig(Both(), 60000);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->end, 60000);
  Result<ShiftedSplitOptions> beyond =
      ShiftedSplitOptionsFromConfig(Both({"data.train_examples=100000"}), 60000);
  ASSERT_TRUE(beyond.ok());
  EXPECT_EQ(beyond->end, 60000);
}

TEST(ShiftedSplitConfigTest, ErrorsNameTheProgramsKey) {
  Result<ShiftedSplitOptions> sim =
      ShiftedSplitOptionsFromConfig(Both({"data.num_clients=0"}), 60000);
  ASSERT_FALSE(sim.ok());
  EXPECT_THAT(sim.status().message(), HasSubstr("data.num_clients"));
  Result<ShiftedSplitOptions> client =
      ShiftedSplitOptionsFromConfig(Both({"data.num_partitions=0"}), 60000, kClientKeys);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr("data.num_partitions"));
  Result<ShiftedSplitOptions> seed =
      ShiftedSplitOptionsFromConfig(Both({"data.seed=-1"}), 60000, kClientKeys);
  ASSERT_FALSE(seed.ok());
  EXPECT_THAT(seed.status().message(), HasSubstr("data.seed"));
  for (std::string bad : {"data.domains=clean,sepia", "data.domains_per_client=6",
                          "data.partition=zipf", "data.train_examples=-1"}) {
    Result<ShiftedSplitOptions> o = ShiftedSplitOptionsFromConfig(Both({bad}), 60000);
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(o.status().message(), HasSubstr(bad.substr(0, bad.find('=')))) << bad;
  }
}

TEST(PredictionCsvTest, RowsListEntriesMostSimilarFirst) {
  std::string csv = kPredictionCsvHeader;
  const std::vector<int32_t> entries = {3, 7, 1};
  AppendPredictionRow(0, 9, entries, &csv);
  AppendPredictionRow(12, 4, {}, &csv);
  EXPECT_EQ(csv, "index,label,entries\n0,9,3;7;1\n12,4,\n");
}

}  // namespace
}  // namespace fl::internal
