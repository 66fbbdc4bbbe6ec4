// The open algorithm registry (fl/algorithm.h, algorithms/registry.h): what a definition
// may declare, how its keys reach the config schema, that validate runs before the
// factory, the shared train.* reader, the dense-delta building blocks, and concurrent
// registration.

#include "fl/algorithm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/fedavg/dense_round_aggregator.h"
#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"
#include "examples/sign_sgd.h"

namespace fl::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A strategy that does nothing but answer to its name.
class NamedStrategy : public Strategy {
 public:
  explicit NamedStrategy(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  TrainConfig ConfigureRound(uint64_t) const override { return {}; }
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet&, uint64_t) override {
    return nullptr;
  }
  Status ApplyRound(AggregateReport, ParamSet*) override { return Status::Ok(); }

 private:
  std::string name_;
};

// A complete definition named `name` declaring `keys`.
AlgorithmDefinition Def(const std::string& name, std::vector<ConfigKey> keys = {}) {
  AlgorithmDefinition d;
  d.name = name;
  d.config_keys = std::move(keys);
  d.create_strategy = [name](const AlgorithmConfig&) -> Result<std::unique_ptr<Strategy>> {
    return std::unique_ptr<Strategy>(std::make_unique<NamedStrategy>(name));
  };
  d.create_learner = [] { return NewDenseDeltaLearner(); };
  return d;
}

// Registers sign-SGD once per process, whichever test runs first.
void EnsureSignSgd() {
  static const Status status = examples::RegisterSignSgd();
  ASSERT_TRUE(status.ok()) << status.ToString();
}

Result<Config> AlgorithmConfigWith(const std::vector<std::string>& overrides) {
  return Config::Build(AlgorithmConfigDefaults(), "", overrides);
}

TEST(AlgorithmRegistryTest, BuiltinsAreListedFirstInRegistrationOrder) {
  std::vector<std::string> names = RegisteredAlgorithms();
  ASSERT_GE(names.size(), 6u);
  names.resize(6);
  EXPECT_THAT(names, ElementsAre("fedavg", "fedprox", "fedadam", "ferret", "fedins", "sfprompt"));
  for (const std::string& name : names) {
    std::shared_ptr<const AlgorithmDefinition> d = GlobalAlgorithmRegistry().Find(name);
    ASSERT_NE(d, nullptr) << name;
    EXPECT_TRUE(ValidateAlgorithmDefinition(*d).ok()) << name;
  }
}

TEST(AlgorithmRegistryTest, RefusesBadNamesAndMissingFactories) {
  AlgorithmRegistry r;
  for (const std::string& bad : {std::string(""), std::string("FedAvg"), std::string("sign sgd"),
                                 std::string("sign.sgd"), std::string("x/y"), std::string(65, 'a')}) {
    Status s = r.Register(Def(bad));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("[a-z0-9_-]{1,64}")) << bad;
  }
  EXPECT_TRUE(r.Register(Def(std::string(64, 'a'))).ok());
  EXPECT_TRUE(r.Register(Def("sign-sgd_2")).ok());

  AlgorithmDefinition no_learner = Def("no_learner");
  no_learner.create_learner = nullptr;
  EXPECT_EQ(r.Register(no_learner).code(), StatusCode::kInvalidArgument);
  AlgorithmDefinition no_strategy = Def("no_strategy");
  no_strategy.create_strategy = nullptr;
  EXPECT_EQ(r.Register(no_strategy).code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.Names(), ElementsAre(std::string(64, 'a'), "sign-sgd_2"));
}

TEST(AlgorithmRegistryTest, RefusesMalformedKeysNamingThem) {
  AlgorithmRegistry r;
  for (const std::string key : {"lr", "a.b.c", ".lr", "mine.", "Mine.lr", "mine.l-r", "mine.l r"}) {
    Status s = r.Register(Def("mine", {{key, 1.0, ""}}));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(s.message(), HasSubstr("'" + key + "'"));
  }
  Status twice = r.Register(Def("mine", {{"mine.lr", 1.0, ""}, {"mine.lr", 2.0, ""}}));
  EXPECT_EQ(twice.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.message(), HasSubstr("declared twice"));
  EXPECT_TRUE(r.Names().empty());
}

TEST(AlgorithmRegistryTest, SdkSectionsAreClosedAndSharedOnesOnlyRepeatTheirKeys) {
  AlgorithmRegistry r;
  for (const std::string section :
       {"run", "coordinator", "model", "data", "sim", "server", "client", "lm", "pretrain"}) {
    Status s = r.Register(Def("mine", {{section + ".extra", 1.0, ""}}));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << section;
    EXPECT_THAT(s.message(), HasSubstr("SDK's own section '" + section + "'"));
  }
  for (const std::string key : {"train.extra", "algorithm.extra"}) {
    Status s = r.Register(Def("mine", {{key, 1.0, ""}}));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(s.message(), HasSubstr("shares"));
  }
  // An existing shared key may be repeated only as it is: another default or type would
  // silently change every other algorithm.
  EXPECT_EQ(r.Register(Def("mine", {{"train.lr", 0.5, ""}})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Register(Def("mine", {{"train.batch_size", 32.0, ""}})).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.Register(Def("mine", {{"train.lr", 0.05, ""}})).ok());
  // ... by any number of algorithms.
  EXPECT_TRUE(r.Register(Def("also_mine", {{"train.lr", 0.05, ""}})).ok());
}

TEST(AlgorithmRegistryTest, TakenNamesAndKeysAreAlreadyExistsAndAddNothing) {
  AlgorithmRegistry r;
  ASSERT_TRUE(r.Register(Def("first", {{"shared_section.a", int64_t{1}, ""}})).ok());
  EXPECT_EQ(r.Register(Def("first")).code(), StatusCode::kAlreadyExists);
  Status taken = r.Register(Def("second", {{"second.b", 1.0, ""}, {"shared_section.a", int64_t{1}, ""}}));
  EXPECT_EQ(taken.code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(taken.message(), HasSubstr("shared_section.a"));
  EXPECT_THAT(taken.message(), HasSubstr("'first'"));
  // A section may hold keys of several algorithms, one owner per key.
  EXPECT_TRUE(r.Register(Def("third", {{"shared_section.c", 1.0, ""}})).ok());
  EXPECT_THAT(r.Names(), ElementsAre("first", "third"));
  // The built-in names are taken in the process-wide registry.
  EXPECT_EQ(RegisterAlgorithm(Def("fedavg")).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(RegisterAlgorithm(Def("mine", {{"ferret.clip", 10.0, ""}})).code(),
            StatusCode::kAlreadyExists);
}

TEST(AlgorithmRegistryTest, DeclaredKeysReachTheSchemaWithTheirTypes) {
  const nlohmann::json before = AlgorithmConfigDefaults();
  EXPECT_FALSE(before.contains("typed"));
  ASSERT_TRUE(RegisterAlgorithm(Def("typed", {{"typed.flag", true, ""},
                                              {"typed.count", int64_t{3}, ""},
                                              {"typed.rate", 0.25, ""},
                                              {"typed.mode", std::string("fast"), ""}}))
                  .ok());
  // Built at call time: a defaults document made before registration lacks the section.
  const nlohmann::json after = AlgorithmConfigDefaults();
  ASSERT_TRUE(after.contains("typed"));
  EXPECT_TRUE(after["typed"]["flag"].is_boolean());
  EXPECT_TRUE(after["typed"]["count"].is_number_integer());
  EXPECT_TRUE(after["typed"]["rate"].is_number_float());
  EXPECT_TRUE(after["typed"]["mode"].is_string());

  Result<Config> c = AlgorithmConfigWith({"typed.rate=2", "typed.mode=slow"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const ConfigView view(*c);
  EXPECT_TRUE(view.GetBool("typed.flag"));
  EXPECT_EQ(view.GetInt("typed.count"), 3);
  EXPECT_EQ(view.GetDouble("typed.rate"), 2.0);
  EXPECT_EQ(view.GetString("typed.mode"), "slow");
  EXPECT_TRUE(view.Has("typed.count"));
  EXPECT_FALSE(view.Has("typed.nope"));
  for (const std::string bad : {"typed.count=1.5", "typed.flag=maybe", "typed.rate=abc",
                                "typed.nope=1"}) {
    Result<Config> r = AlgorithmConfigWith({bad});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(bad.substr(0, bad.find('=')))) << bad;
  }
}

// The flag a user would type, through the binaries' command-line parser.
TEST(AlgorithmRegistryTest, SetFlagOfAMistypedSignSgdValueIsRefused) {
  EnsureSignSgd();
  std::vector<std::string> args = {"fl-test", "--set", "signsgd.server_lr=abc"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  Result<CommandLine> cl = ParseCommandLine("fl-test", "test", AlgorithmConfigDefaults(), {},
                                            static_cast<int>(argv.size()), argv.data());
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(cl.status().message(), HasSubstr("signsgd.server_lr"));

  args[2] = "signsgd.server_lr=0.5";
  argv.clear();
  for (std::string& a : args) argv.push_back(a.data());
  cl = ParseCommandLine("fl-test", "test", AlgorithmConfigDefaults(), {},
                        static_cast<int>(argv.size()), argv.data());
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config.GetDouble("signsgd.server_lr"), 0.5);
  EXPECT_EQ(Config::FromDefaults(AlgorithmConfigDefaults())->GetDouble("signsgd.server_lr"), 0.01);
}

TEST(AlgorithmRegistryTest, CreateStrategyRunsValidateFirst) {
  // Static: the definition outlives the test in the process-wide registry.
  static std::atomic<int> validated{0};
  static std::atomic<int> created{0};
  AlgorithmDefinition d = Def("checked", {{"checked.level", int64_t{1}, ""}});
  d.validate = [](const AlgorithmConfig& c) {
    ++validated;
    if (c.GetInt("checked.level") > 2) return Status::InvalidArgument("checked.level must be <= 2");
    return Status::Ok();
  };
  auto create = d.create_strategy;
  d.create_strategy = [create](const AlgorithmConfig& c) {
    ++created;
    return create(c);
  };
  ASSERT_TRUE(RegisterAlgorithm(std::move(d)).ok());

  Result<Config> bad = AlgorithmConfigWith({"algorithm.name=checked", "checked.level=5"});
  ASSERT_TRUE(bad.ok());
  Result<std::unique_ptr<Strategy>> s = CreateStrategy(*bad);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("checked.level"));
  EXPECT_EQ(validated, 1);
  EXPECT_EQ(created, 0);
  EXPECT_EQ(ValidateAlgorithmConfig(*bad).code(), StatusCode::kInvalidArgument);

  Result<Config> good = AlgorithmConfigWith({"algorithm.name=checked"});
  ASSERT_TRUE(good.ok());
  s = CreateStrategy(*good);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "checked");
  EXPECT_EQ(validated, 3);
  EXPECT_EQ(created, 1);
}

// SFPrompt's rounds are FedAvg's; its phase settings reach every client's TrainConfig.
TEST(AlgorithmRegistryTest, SfPromptSendsItsPhaseSettingsToClients) {
  Result<Config> config = AlgorithmConfigWith(
      {"algorithm.name=sfprompt", "sfprompt.keep_ratio=0.25", "sfprompt.wire=bf16"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "sfprompt");
  const TrainConfig train = (*s)->ConfigureRound(3);
  EXPECT_EQ(*train.extra.at("sfprompt.keep_ratio").AsDouble(), 0.25);
  EXPECT_EQ(*train.extra.at("sfprompt.wire").AsString(), "bf16");
  EXPECT_EQ(*train.extra.at("sfprompt.local_epochs").AsInt64(), 1);
  EXPECT_EQ(*train.extra.at("sfprompt.local_pool").AsString(), "mean");
  for (const std::string bad : {"sfprompt.keep_ratio=0", "sfprompt.keep_ratio=1.5",
                                "sfprompt.local_epochs=-1", "sfprompt.local_pool=max",
                                "sfprompt.wire=int8"}) {
    Result<Config> c = AlgorithmConfigWith({"algorithm.name=sfprompt", bad});
    ASSERT_TRUE(c.ok()) << bad;
    Status v = ValidateAlgorithmConfig(*c);
    EXPECT_EQ(v.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(v.message(), HasSubstr(bad.substr(0, bad.find('=')))) << bad;
  }
}

TEST(AlgorithmRegistryTest, SignSgdValidatesItsServerLr) {
  EnsureSignSgd();
  for (const std::string bad : {"signsgd.server_lr=0", "signsgd.server_lr=-0.5"}) {
    Result<Config> c = AlgorithmConfigWith({"algorithm.name=signsgd", bad});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Status s = ValidateAlgorithmConfig(*c);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("signsgd.server_lr"));
    EXPECT_EQ(CreateStrategy(*c).status().code(), StatusCode::kInvalidArgument);
  }
  Result<Config> c = AlgorithmConfigWith({"algorithm.name=signsgd", "train.batch_size=0"});
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(ValidateAlgorithmConfig(*c).message(), HasSubstr("train.batch_size"));
  c = AlgorithmConfigWith({"algorithm.name=signsgd"});
  Result<std::unique_ptr<Strategy>> s = CreateStrategy(*c);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "signsgd");
  EXPECT_TRUE(CreateLearner("signsgd").ok());
  ParamSet model;
  EXPECT_EQ(ApplyReplayRecord("signsgd", "x", &model).code(), StatusCode::kUnimplemented);
}

TEST(AlgorithmRegistryTest, AStrategyMustAnswerToItsAlgorithmsName) {
  AlgorithmDefinition d = Def("impostor");
  d.create_strategy = [](const AlgorithmConfig&) -> Result<std::unique_ptr<Strategy>> {
    return std::unique_ptr<Strategy>(std::make_unique<NamedStrategy>("fedavg"));
  };
  ASSERT_TRUE(RegisterAlgorithm(std::move(d)).ok());
  Result<Config> c = AlgorithmConfigWith({"algorithm.name=impostor"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(CreateStrategy(*c).status().code(), StatusCode::kInternal);
}

TEST(AlgorithmRegistryTest, ConcurrentRegistrationKeepsEveryNameAndKeyOnce) {
  constexpr int kThreads = 8;
  constexpr int kEach = 25;
  std::atomic<int> race_name_wins{0};
  std::atomic<int> race_key_wins{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const std::string name = "concurrent_" + std::to_string(t) + "_" + std::to_string(i);
        if (!RegisterAlgorithm(Def(name, {{"concurrent." + name, 1.0, ""}})).ok()) failed = true;
        // Readers run while others write.
        if (GlobalAlgorithmRegistry().Find(name) == nullptr) failed = true;
        if (!AlgorithmConfigDefaults()["concurrent"].contains(name)) failed = true;
      }
      // Every thread tries the same name, and the same key under its own name.
      if (RegisterAlgorithm(Def("concurrent_race")).ok()) ++race_name_wins;
      const std::string own = "concurrent_key_" + std::to_string(t);
      if (RegisterAlgorithm(Def(own, {{"concurrent.raced_key", 1.0, ""}})).ok()) ++race_key_wins;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_EQ(race_name_wins, 1);
  EXPECT_EQ(race_key_wins, 1);
  std::vector<std::string> names = RegisteredAlgorithms();
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kEach; ++i) {
      const std::string name = "concurrent_" + std::to_string(t) + "_" + std::to_string(i);
      EXPECT_EQ(std::count(names.begin(), names.end(), name), 1) << name;
    }
  }
  EXPECT_EQ(std::count(names.begin(), names.end(), "concurrent_race"), 1);
}

TEST(AlgorithmConfigTest, LocalTrainingReadsAndChecksTheSharedSection) {
  Result<Config> c = AlgorithmConfigWith({"train.local_steps=7", "train.batch_size=16",
                                          "train.lr=0.2", "train.momentum=0.5",
                                          "train.upload_encoding=bf16"});
  ASSERT_TRUE(c.ok());
  Result<TrainConfig> t = ConfigView(*c).LocalTraining();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->local_steps, 7);
  EXPECT_EQ(t->batch_size, 16);
  EXPECT_EQ(t->lr, 0.2);
  EXPECT_EQ(t->momentum, 0.5);
  EXPECT_EQ(t->upload_encoding, Encoding::kDenseBF16);
  for (const std::string bad : {"train.batch_size=0", "train.local_steps=5000000000",
                                "train.lr=0", "train.momentum=1", "train.upload_encoding=f8"}) {
    Result<Config> b = AlgorithmConfigWith({bad});
    ASSERT_TRUE(b.ok()) << bad;
    Result<TrainConfig> r = ConfigView(*b).LocalTraining();
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(bad.substr(0, bad.find('=')))) << bad;
  }
}

// --- dense deltas ---------------------------------------------------------------------

constexpr uint64_t kRound = 3;

std::shared_ptr<const Layout> SmallLayout() {
  auto l = std::make_shared<Layout>();
  l->Add("w", {2, 2});
  return l;
}

Payload DensePayload(const std::vector<float>& values, Encoding encoding = Encoding::kDenseF32) {
  Payload p;
  EXPECT_TRUE(EncodeDense(values, encoding, &p.bytes).ok());
  p.meta.round = kRound;
  p.meta.weight = 2;
  p.meta.layout_hash = SmallLayout()->hash();
  p.meta.encoding = encoding;
  p.meta.train_loss = 0.5;
  return p;
}

TEST(DenseDeltaTest, DecodesWhatTheDenseAggregatorAccepts) {
  const std::vector<float> values = {1.5f, -2, 0, 0.25f};
  for (Encoding e : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    Result<ParamSet> d = DecodeDenseDelta(DensePayload(values, e), *SmallLayout());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_THAT(std::vector<float>(d->values().begin(), d->values().end()),
                ::testing::ElementsAreArray(values));
  }
}

TEST(DenseDeltaTest, RefusesWhatTheDenseAggregatorRefuses) {
  std::vector<Payload> bad;
  bad.push_back(DensePayload({1, 2, 3}));                                       // short
  bad.push_back(DensePayload({1, 2, std::nanf(""), 4}));                        // NaN
  bad.push_back(DensePayload({1, 2, std::numeric_limits<float>::infinity(), 4}));
  bad.push_back(DensePayload({1, 2, 3, 4}));
  bad.back().meta.layout_hash ^= 1;                                             // layout
  bad.push_back(DensePayload({1, 2, 3, 4}));
  bad.back().meta.weight = 0;                                                   // weight
  bad.push_back(DensePayload({1, 2, 3, 4}));
  bad.back().meta.weight = std::nan("");
  bad.push_back(DensePayload({1, 2, 3, 4}));
  bad.back().meta.train_loss = std::nan("");                                    // loss
  bad.push_back(DensePayload({1, 2, 3, 4}));
  bad.back().meta.encoding = Encoding::kFerret;                                 // encoding
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(DecodeDenseDelta(bad[i], *SmallLayout()).status().code(),
              StatusCode::kInvalidArgument) << i;
    DenseRoundAggregator agg(SmallLayout(), kRound);
    EXPECT_EQ(agg.Accumulate(bad[i]).code(), StatusCode::kInvalidArgument) << i;
  }
}

}  // namespace
}  // namespace fl::internal
