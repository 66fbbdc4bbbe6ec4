// FedIns' halves without a coordinator: the keyed round aggregator, the named-subset
// learner with a fake trainer that reports tensor weights, and the strategy's config.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "algorithms/fedins/fedins_strategy.h"
#include "algorithms/fedins/keyed_round_aggregator.h"
#include "algorithms/fedins/named_subset_learner.h"
#include "algorithms/fedins/register.h"
#include "algorithms/registry.h"
#include "codec/named_subset_codec.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "fl/algorithm.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRound = 2;

// Two pool entries of a key (2 values) and a head (2x2).
std::shared_ptr<const Layout> PoolLayout() {
  auto l = std::make_shared<Layout>();
  l->Add("pool.0.key", {2});
  l->Add("pool.0.head.weight", {2, 2});
  l->Add("pool.1.key", {2});
  l->Add("pool.1.head.weight", {2, 2});
  return l;
}

Payload Keyed(const std::vector<NamedTensorView>& tensors, double weight, double loss = 1.0,
              Encoding values = Encoding::kDenseF32) {
  Payload p;
  EXPECT_TRUE(EncodeNamedSubset(tensors, values, &p.bytes).ok());
  p.meta.round = kRound;
  p.meta.weight = weight;
  p.meta.layout_hash = PoolLayout()->hash();
  p.meta.encoding = Encoding::kNamedSubset;
  p.meta.sha256 = Sha256(p.bytes);
  p.meta.train_loss = loss;
  return p;
}

const std::vector<float> kKey = {1, -2};
const std::vector<float> kHead = {0.5f, 1, 2, 4};
const std::vector<float> kOtherKey = {3, 3};

TEST(KeyedRoundAggregatorTest, ReportsADenseMeanOverTheWholeLayout) {
  KeyedRoundAggregator agg(PoolLayout(), kRound, KeyedRule::kSelected);
  EXPECT_FALSE(agg.CanReport());
  // Client A (weight 3) trained entry 0 only; client B (weight 1) entry 0's key and
  // entry 1's head, half of its examples each.
  const Payload a =
      Keyed({{"pool.0.key", 1.0, kKey}, {"pool.0.head.weight", 1.0, kHead}}, 3.0, 2.0);
  const std::vector<float> key_b = {5, 2};
  const Payload b = Keyed({{"pool.0.key", 0.5, key_b}, {"pool.1.head.weight", 0.5, kHead}}, 1.0,
                          4.0, Encoding::kDenseBF16);
  ASSERT_TRUE(agg.Accumulate(a).ok());
  ASSERT_TRUE(agg.Accumulate(b).ok());
  EXPECT_EQ(agg.count(), 2u);
  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->count, 2u);
  EXPECT_EQ(r->total_weight, 4.0);
  EXPECT_DOUBLE_EQ(r->mean_train_loss, (3 * 2.0 + 4.0) / 4);
  ASSERT_EQ(r->mean_delta.layout().hash(), PoolLayout()->hash());
  // pool.0.key = (3 * {1, -2} + 0.5 * {5, 2}) / 3.5; pool.0.head = kHead; pool.1.key
  // untouched; pool.1.head = kHead (its only sender).
  const std::vector<float> expect = {static_cast<float>(5.5 / 3.5),
                                     static_cast<float>(-5.0 / 3.5),
                                     0.5f,
                                     1,
                                     2,
                                     4,
                                     0,
                                     0,
                                     0.5f,
                                     1,
                                     2,
                                     4};
  const std::vector<float> got(r->mean_delta.values().begin(), r->mean_delta.values().end());
  EXPECT_EQ(got, expect);
}

TEST(KeyedRoundAggregatorTest, RefusalsNameTheProblemAndLeaveItUnchanged) {
  KeyedRoundAggregator agg(PoolLayout(), kRound, KeyedRule::kSelected);
  ASSERT_TRUE(agg.Accumulate(Keyed({{"pool.0.key", 1.0, kKey}}, 1.0)).ok());
  auto refused = [&](const Payload& p, StatusCode code, const std::string& what) {
    Status s = agg.Accumulate(p);
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(what));
  };
  const std::vector<float> long_key = {1, 2, 3};
  refused(Keyed({{"pool.1.key", 1.0, kKey}, {"pool.0.head.weight", 1.0, long_key}}, 1.0),
          StatusCode::kInvalidArgument, "pool.0.head.weight has 3 values, the layout's has 4");
  refused(Keyed({{"pool.9.key", 1.0, kKey}}, 1.0), StatusCode::kInvalidArgument,
          "unknown tensor 'pool.9.key'");
  refused(Keyed({{"pool.1.key", -0.5, kKey}}, 1.0), StatusCode::kInvalidArgument,
          "pool.1.key has weight fraction");
  refused(Keyed({{"pool.1.key", std::nan(""), kKey}}, 1.0), StatusCode::kInvalidArgument,
          "pool.1.key has weight fraction");
  const std::vector<float> nan_key = {1, std::nanf("")};
  refused(Keyed({{"pool.1.key", 1.0, nan_key}}, 1.0), StatusCode::kInvalidArgument,
          "pool.1.key holds a non-finite value at index 1");
  Payload wrong_round = Keyed({{"pool.1.key", 1.0, kKey}}, 1.0);
  wrong_round.meta.round = kRound + 1;
  refused(wrong_round, StatusCode::kFailedPrecondition, "round 3");
  Payload wrong_layout = Keyed({{"pool.1.key", 1.0, kKey}}, 1.0);
  wrong_layout.meta.layout_hash ^= 1;
  refused(wrong_layout, StatusCode::kInvalidArgument, "layout hash");
  refused(Keyed({{"pool.1.key", 1.0, kKey}}, 0.0), StatusCode::kInvalidArgument, "weight");
  refused(Keyed({{"pool.1.key", 1.0, kKey}}, 1.0, INFINITY), StatusCode::kInvalidArgument,
          "train loss");
  Payload dense = Keyed({{"pool.1.key", 1.0, kKey}}, 1.0);
  dense.meta.encoding = Encoding::kDenseF32;
  refused(dense, StatusCode::kInvalidArgument, "is not named_subset");
  EXPECT_EQ(agg.count(), 1u);
  Result<AggregateReport> r = std::move(agg).Report();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total_weight, 1.0);
  const std::vector<float> got(r->mean_delta.values().begin(), r->mean_delta.values().end());
  EXPECT_EQ(got, (std::vector<float>{1, -2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(KeyedRoundAggregatorTest, MergeEqualsSequentialAndConsumes) {
  const std::vector<Payload> updates = {
      Keyed({{"pool.0.key", 0.25, kKey}}, 2.0, 1.0),
      Keyed({{"pool.0.key", 1.0, kOtherKey}, {"pool.1.head.weight", 0.75, kHead}}, 5.0, 3.0),
      Keyed({{"pool.1.key", 1.0, kKey}}, 1.0, 0.5)};
  for (KeyedRule rule : {KeyedRule::kSelected, KeyedRule::kUniform}) {
    KeyedRoundAggregator all(PoolLayout(), kRound, rule), a(PoolLayout(), kRound, rule),
        b(PoolLayout(), kRound, rule);
    for (size_t i = 0; i < updates.size(); ++i) {
      ASSERT_TRUE(all.Accumulate(updates[i]).ok());
      ASSERT_TRUE((i == 0 ? a : b).Accumulate(updates[i]).ok());
    }
    ASSERT_TRUE(a.MergeWith(std::move(b)).ok());
    EXPECT_FALSE(b.CanReport());
    EXPECT_EQ(b.Accumulate(updates[0]).code(), StatusCode::kFailedPrecondition);
    Result<AggregateReport> ra = std::move(a).Report(), rall = std::move(all).Report();
    ASSERT_TRUE(ra.ok() && rall.ok());
    EXPECT_EQ(ra->count, 3u);
    EXPECT_EQ(ra->total_weight, rall->total_weight);
    EXPECT_DOUBLE_EQ(ra->mean_train_loss, rall->mean_train_loss);
    for (size_t i = 0; i < ra->mean_delta.size(); ++i) {
      EXPECT_FLOAT_EQ(ra->mean_delta.data()[i], rall->mean_delta.data()[i]) << i;
    }
  }
  KeyedRoundAggregator selected(PoolLayout(), kRound, KeyedRule::kSelected);
  KeyedRoundAggregator uniform(PoolLayout(), kRound, KeyedRule::kUniform);
  KeyedRoundAggregator other_round(PoolLayout(), kRound + 1, KeyedRule::kSelected);
  EXPECT_EQ(selected.MergeWith(std::move(uniform)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(selected.MergeWith(std::move(other_round)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(std::move(selected).Report().status().code(), StatusCode::kFailedPrecondition);
}

// A trainer whose "training" adds lr * (i + 1) to every parameter and reports the
// tensor weights it is told to.
class PoolTrainer : public Trainer {
 public:
  PoolTrainer() : layout_(*PoolLayout()), params_(layout_) {}
  const Layout& layout() const override { return layout_; }
  Status GetParameters(ParamSet* out) override {
    *out = params_;
    return Status::Ok();
  }
  Status SetParameters(const ParamSet& p) override {
    if (p.layout().hash() != layout_.hash()) return Status::InvalidArgument("layout");
    params_ = p;
    return Status::Ok();
  }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override {
    if (cancel.cancelled()) return Status::Cancelled("stop");
    seen_config = config;
    for (size_t i = 0; i < params_.size(); ++i) {
      params_.data()[i] += static_cast<float>(config.lr * (i + 1));
    }
    if (diverge_tensor >= 0) params_.tensor(diverge_tensor)[0] = INFINITY;
    TrainStats s;
    s.dataset_size = 8;
    s.num_examples = 16;
    s.mean_loss = 0.5;
    s.tensor_weights = tensor_weights;
    return s;
  }
  Result<EvalStats> Evaluate() override { return EvalStats{}; }

  Layout layout_;
  ParamSet params_;
  TrainConfig seen_config;
  std::map<std::string, double> tensor_weights;
  int diverge_tensor = -1;
};

Task TrainTask(Encoding values = Encoding::kDenseF32) {
  Task t;
  t.kind = TaskKind::kTrain;
  t.round = kRound;
  t.model_version = 1;
  t.algorithm = "fedins";
  t.config.lr = 0.25;
  t.config.upload_encoding = values;
  return t;
}

Result<Payload> TrainWith(PoolTrainer& trainer, const Task& task = TrainTask()) {
  ParamSet global(trainer.layout());
  for (size_t i = 0; i < global.size(); ++i) global.data()[i] = static_cast<float>(i);
  CancelToken cancel;
  return NewNamedSubsetLearner()->Train(task, global, trainer, cancel);
}

TEST(NamedSubsetLearnerTest, UploadsOnlyTheReportedTensorsWithTheirFractions) {
  PoolTrainer trainer;
  trainer.tensor_weights = {{"pool.1.head.weight", 0.25},
                            {"pool.1.key", 1.0},
                            {"pool.0.key", 0.0}};  // 0: trained by nobody, not sent
  Result<Payload> p = TrainWith(trainer);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->meta.encoding, Encoding::kNamedSubset);
  EXPECT_EQ(p->meta.round, kRound);
  EXPECT_EQ(p->meta.base_version, 1u);
  EXPECT_EQ(p->meta.weight, 8.0);
  EXPECT_EQ(p->meta.num_examples, 16u);
  EXPECT_EQ(p->meta.train_loss, 0.5);
  EXPECT_EQ(p->meta.layout_hash, PoolLayout()->hash());
  EXPECT_EQ(p->meta.sha256, Sha256(p->bytes));
  Result<NamedSubset> s = DecodeNamedSubset(p->bytes, *PoolLayout());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->tensors.size(), 2u);
  // Layout order: pool.1.key (offset 6) then pool.1.head.weight (offset 8).
  EXPECT_EQ(s->tensors[0].index, 2u);
  EXPECT_EQ(s->tensors[0].fraction, 1.0);
  EXPECT_EQ(s->tensors[0].values, (std::vector<float>{7 * 0.25f, 8 * 0.25f}));
  EXPECT_EQ(s->tensors[1].index, 3u);
  EXPECT_EQ(s->tensors[1].fraction, 0.25);
  EXPECT_EQ(s->tensors[1].values, (std::vector<float>{9 * 0.25f, 10 * 0.25f, 11 * 0.25f, 3.0f}));
}

TEST(NamedSubsetLearnerTest, NoTensorWeightsMeansEveryTensorWithTheWholeWeight) {
  PoolTrainer trainer;
  Result<Payload> p = TrainWith(trainer, TrainTask(Encoding::kDenseBF16));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Result<NamedSubset> s = DecodeNamedSubset(p->bytes, *PoolLayout());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->value_encoding, Encoding::kDenseBF16);
  ASSERT_EQ(s->tensors.size(), 4u);
  for (size_t t = 0; t < 4; ++t) {
    EXPECT_EQ(s->tensors[t].index, t);
    EXPECT_EQ(s->tensors[t].fraction, 1.0);
  }
}

TEST(NamedSubsetLearnerTest, RefusesWhatTheServerWouldRefuse) {
  PoolTrainer trainer;
  trainer.tensor_weights = {{"pool.5.key", 1.0}};
  EXPECT_THAT(TrainWith(trainer).status().message(), HasSubstr("outside the model's layout"));
  trainer.tensor_weights = {{"pool.0.key", 1.5}};
  EXPECT_EQ(TrainWith(trainer).status().code(), StatusCode::kFailedPrecondition);
  trainer.tensor_weights = {{"pool.0.key", std::nan("")}};
  EXPECT_EQ(TrainWith(trainer).status().code(), StatusCode::kFailedPrecondition);
  trainer.tensor_weights = {{"pool.0.key", 0.0}};
  EXPECT_THAT(TrainWith(trainer).status().message(), HasSubstr("no tensor"));
  // Divergence in a tensor that is uploaded is refused; elsewhere it stays home.
  trainer.tensor_weights = {{"pool.0.key", 1.0}};
  trainer.diverge_tensor = 0;
  EXPECT_THAT(TrainWith(trainer).status().message(), HasSubstr("non-finite values in pool.0.key"));
  trainer.diverge_tensor = 3;
  EXPECT_TRUE(TrainWith(trainer).ok());
  Task ferret = TrainTask(Encoding::kFerret);
  EXPECT_EQ(TrainWith(trainer, ferret).status().code(), StatusCode::kInvalidArgument);
  Task wait = TrainTask();
  wait.kind = TaskKind::kWait;
  EXPECT_EQ(TrainWith(trainer, wait).status().code(), StatusCode::kInvalidArgument);
}

Result<Config> FedInsConfig(const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {"algorithm.name=fedins"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return Config::Build(AlgorithmConfigDefaults(), "", all);
}

Status FedInsValidation(const std::vector<std::string>& overrides) {
  Result<Config> config = FedInsConfig(overrides);
  if (!config.ok()) return config.status();
  return ValidateAlgorithmConfig(*config);
}

TEST(FedInsStrategyTest, SendsItsSettingsInTrainConfigExtra) {
  Result<Config> config =
      FedInsConfig({"fedins.entries=25", "fedins.top_k=5", "fedins.lambda=0.2",
                    "fedins.batch_shared_ssf=true", "train.upload_encoding=bf16"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->name(), "fedins");
  TrainConfig c = (*s)->ConfigureRound(1);
  EXPECT_EQ(c.upload_encoding, Encoding::kDenseBF16);
  EXPECT_EQ(*c.extra.at("fedins.entries").AsInt64(), 25);
  EXPECT_EQ(*c.extra.at("fedins.top_k").AsInt64(), 5);
  EXPECT_EQ(*c.extra.at("fedins.lambda").AsDouble(), 0.2);
  EXPECT_EQ(*c.extra.at("fedins.batch_shared_ssf").AsBool(), true);
  EXPECT_TRUE(c.extra.at("fedins.top_k").is_int());
  EXPECT_TRUE(c.extra.at("fedins.batch_shared_ssf").is_bool());
  // The keyed aggregator, and the keyed learner on the client.
  ParamSet global(*PoolLayout());
  std::unique_ptr<RoundAggregator> agg = (*s)->NewRoundAggregator(global, 1);
  EXPECT_NE(dynamic_cast<KeyedRoundAggregator*>(agg.get()), nullptr);
  Result<std::unique_ptr<Learner>> learner = CreateLearner("fedins");
  ASSERT_TRUE(learner.ok());
  EXPECT_NE(dynamic_cast<NamedSubsetLearner*>(learner->get()), nullptr);
}

TEST(FedInsStrategyTest, ValidatesItsKeys) {
  EXPECT_TRUE(FedInsValidation({}).ok());
  auto refused = [](const std::vector<std::string>& overrides, const std::string& key) {
    Status s = FedInsValidation(overrides);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(key));
  };
  refused({"fedins.entries=0"}, "fedins.entries");
  refused({"fedins.entries=1025"}, "fedins.entries");
  refused({"fedins.top_k=0"}, "fedins.top_k");
  refused({"fedins.entries=4", "fedins.top_k=5"}, "fedins.top_k");
  refused({"fedins.lambda=-0.1"}, "fedins.lambda");
  refused({"fedins.lambda=1.5"}, "fedins.lambda");
  refused({"fedins.aggregate=mean"}, "fedins.aggregate");
  refused({"algorithm.aggregator=median"}, "algorithm.aggregator");
  refused({"train.upload_encoding=ferret"}, "upload_encoding");
  Status smallest = FedInsValidation(
      {"fedins.entries=1", "fedins.top_k=1", "fedins.lambda=1", "fedins.aggregate=uniform"});
  EXPECT_TRUE(smallest.ok()) << smallest.ToString();
}

TEST(FedInsStrategyTest, UnsentTensorsKeepTheirBits) {
  FedInsOptions o;
  o.fedavg.name = "fedins";
  FedInsStrategy strategy(o);
  ParamSet global(*PoolLayout());
  for (size_t i = 0; i < global.size(); ++i) global.data()[i] = 0.1f * static_cast<float>(i);
  global.tensor(2)[0] = -0.0f;  // -0 + 0 would be +0
  const ParamSet before = global;
  KeyedRoundAggregator agg(PoolLayout(), 1, KeyedRule::kSelected);
  Payload p = Keyed({{"pool.0.key", 1.0, kKey}}, 1.0);
  p.meta.round = 1;
  ASSERT_TRUE(agg.Accumulate(p).ok());
  ASSERT_TRUE(strategy.ApplyRound(*std::move(agg).Report(), &global).ok());
  EXPECT_EQ(global.data()[0], before.data()[0] + 1.0f);
  EXPECT_EQ(global.data()[1], before.data()[1] - 2.0f);
  EXPECT_EQ(std::memcmp(global.data() + 2, before.data() + 2, (global.size() - 2) * 4), 0);
}

}  // namespace
}  // namespace fl::internal
