// The server's update policy (server/update_policy.h) on its own, and in a Coordinator on
// real SQLite files: capped or uniform weights, the L2 norm bound, the fp64 fold that a
// capped weight cannot overflow, and a round whose server step is not finite re-folded
// without the offending update.

#include "server/update_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>

#include "agg/weighted_accumulator.h"
#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "codec/named_subset_codec.h"
#include "core/config.h"
#include "server/coordinator.h"
#include "server/coordinator_config.h"
#include "simulations/in_process_link.h"
#include "store/store.h"
#include "tests/testing/manual_clock_env.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

constexpr float kFloatMax = std::numeric_limits<float>::max();

TEST(UpdatePolicyTest, ExamplesPolicyCapsOrRefusesTheClaimedWeight) {
  UpdatePolicy policy;
  policy.max_weight = 100;
  bool clipped = true;
  EXPECT_EQ(*PolicyWeight(policy, 40, &clipped), 40);
  EXPECT_FALSE(clipped);
  EXPECT_EQ(*PolicyWeight(policy, 100, &clipped), 100);
  EXPECT_FALSE(clipped);
  EXPECT_EQ(*PolicyWeight(policy, 1e12, &clipped), 100);
  EXPECT_TRUE(clipped);
  EXPECT_EQ(*PolicyWeight(policy, 1e300, &clipped), 100);
  // A claim that is not a weight passes through for the aggregator to refuse.
  EXPECT_TRUE(std::isnan(*PolicyWeight(policy, std::nan(""), &clipped)));
  EXPECT_EQ(*PolicyWeight(policy, -1, &clipped), -1);

  policy.over_cap = WeightOverCap::kRefuse;
  Result<double> refused = PolicyWeight(policy, 1e12, &clipped);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("coordinator.max_weight 100"));
  EXPECT_EQ(*PolicyWeight(policy, 99, &clipped), 99);
}

TEST(UpdatePolicyTest, UniformPolicyIgnoresTheClaim) {
  UpdatePolicy policy;
  policy.weight_policy = WeightPolicy::kUniform;
  bool clipped = true;
  for (double claim : {0.5, 7.0, 1e12, 1e300}) {
    EXPECT_EQ(*PolicyWeight(policy, claim, &clipped), 1.0);
    EXPECT_FALSE(clipped);
  }
}

TEST(UpdatePolicyTest, NamesAndLimits) {
  EXPECT_EQ(*ParseWeightPolicy("examples"), WeightPolicy::kExamples);
  EXPECT_EQ(*ParseWeightPolicy("uniform"), WeightPolicy::kUniform);
  EXPECT_FALSE(ParseWeightPolicy("claimed").ok());
  EXPECT_EQ(*ParseWeightOverCap("clip"), WeightOverCap::kClip);
  EXPECT_EQ(*ParseWeightOverCap("refuse"), WeightOverCap::kRefuse);
  EXPECT_FALSE(ParseWeightOverCap("drop").ok());
  UpdatePolicy policy;
  EXPECT_TRUE(ValidateUpdatePolicy(policy).ok());
  policy.max_weight = 0;
  EXPECT_FALSE(ValidateUpdatePolicy(policy).ok());
  policy.max_weight = kMaxWeightLimit * 10;
  EXPECT_FALSE(ValidateUpdatePolicy(policy).ok());
}

TEST(UpdatePolicyTest, NormAndScalingOfDenseUpdates) {
  for (Encoding encoding : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    // 10000 values spans several decode blocks.
    std::vector<float> values(10000, 0.0f);
    values[0] = 3;
    values[9999] = 4;
    Payload p;
    p.meta.encoding = encoding;
    ASSERT_TRUE(EncodeDense(values, encoding, &p.bytes).ok());
    Result<std::optional<double>> norm = UpdateNorm(p);
    ASSERT_TRUE(norm.ok() && norm->has_value());
    EXPECT_DOUBLE_EQ(**norm, 5.0);
    ASSERT_TRUE(ScaleUpdate(0.5, &p).ok());
    std::vector<float> scaled(values.size());
    ASSERT_TRUE(DecodeDense(p.bytes, encoding, scaled).ok());
    EXPECT_EQ(scaled[0], 1.5f);
    EXPECT_EQ(scaled[9999], 2.0f);
    EXPECT_EQ(scaled[5000], 0.0f);
  }
  Payload sparse;
  sparse.meta.encoding = Encoding::kFerret;
  sparse.bytes = "abc";
  Result<std::optional<double>> none = UpdateNorm(sparse);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// A keyed (named-subset) upload is bounded like a dense one: its norm covers every value
// of every entry, and scaling rewrites them in place, names and fractions untouched.
TEST(UpdatePolicyTest, NormAndScalingOfKeyedUpdates) {
  Layout layout;
  layout.Add("pool.0.key", {3});
  layout.Add("pool.1.key", {5000});  // spans two decode blocks of the f16 payload
  std::vector<float> a = {3, 0, 0}, b(5000, 0.0f);
  b[4999] = 4;
  for (Encoding encoding : {Encoding::kDenseF32, Encoding::kDenseF16, Encoding::kDenseBF16}) {
    const NamedTensorView views[] = {{"pool.0.key", 0.25, a}, {"pool.1.key", 1.0, b}};
    Payload p;
    p.meta.encoding = Encoding::kNamedSubset;
    ASSERT_TRUE(EncodeNamedSubset(views, encoding, &p.bytes).ok());
    Result<std::optional<double>> norm = UpdateNorm(p);
    ASSERT_TRUE(norm.ok() && norm->has_value()) << norm.status().ToString();
    EXPECT_DOUBLE_EQ(**norm, 5.0);
    ASSERT_TRUE(ScaleUpdate(0.5, &p).ok());
    Result<NamedSubset> scaled = DecodeNamedSubset(p.bytes, layout);
    ASSERT_TRUE(scaled.ok()) << scaled.status().ToString();
    EXPECT_EQ(scaled->tensors[0].values[0], 1.5f);
    EXPECT_EQ(scaled->tensors[0].fraction, 0.25);
    EXPECT_EQ(scaled->tensors[1].values[4999], 2.0f);
    p.bytes.resize(p.bytes.size() - 1);  // the last entry now runs past the end
    EXPECT_EQ(UpdateNorm(p).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(ScaleUpdate(2.0, &p).code(), StatusCode::kInvalidArgument);
  }
}

// The argument of update_policy.h, checked at its extreme: the largest allowed weight times
// the largest float32 value, folded many times, stays finite in fp64, and the mean is a
// finite float32.
TEST(UpdatePolicyTest, CappedWeightAndFiniteFloatsCannotOverflowTheFold) {
  Layout layout;
  layout.Add("w", {2});
  WeightedAccumulator acc(std::make_shared<const Layout>(layout));
  const std::vector<float> extreme = {kFloatMax, -kFloatMax};
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(acc.AccumulateValues(extreme, kMaxWeightLimit).ok());
  for (double s : acc.sums()) EXPECT_TRUE(std::isfinite(s));
  Result<ParamSet> mean = acc.Mean();
  ASSERT_TRUE(mean.ok());
  EXPECT_EQ(mean->data()[0], kFloatMax);
  EXPECT_EQ(mean->data()[1], -kFloatMax);
  // What the cap prevents: an uncapped 1e300 times 1e10 is not a finite fp64 term.
  volatile double uncapped = 1e300;
  EXPECT_TRUE(std::isinf(uncapped * 1e10));
}

TEST(UpdatePolicyConfigTest, KeysReachTheOptionsAndBadValuesNameTheKey) {
  auto build = [](const std::vector<std::string>& overrides) {
    nlohmann::json defaults = CoordinatorConfigDefaults();
    defaults["run"]["state_dir"] = "/tmp/unused";
    Result<Config> config = Config::Build(defaults, "", overrides);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    return CoordinatorOptionsFromConfig(*config);
  };
  Result<CoordinatorOptions> d = build({});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->update_policy.weight_policy, WeightPolicy::kExamples);
  EXPECT_EQ(d->update_policy.max_weight, 1e6);
  EXPECT_EQ(d->update_policy.over_cap, WeightOverCap::kClip);
  EXPECT_EQ(d->norm_bound, 0);
  EXPECT_EQ(d->norm_bound_quantile, 0);

  Result<CoordinatorOptions> o =
      build({"coordinator.weight_policy=uniform", "coordinator.max_weight=500",
             "coordinator.weight_over_cap=refuse", "coordinator.norm_bound=2.5",
             "coordinator.norm_bound_quantile=0.9", "coordinator.norm_bound_warmup=4"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->update_policy.weight_policy, WeightPolicy::kUniform);
  EXPECT_EQ(o->update_policy.max_weight, 500);
  EXPECT_EQ(o->update_policy.over_cap, WeightOverCap::kRefuse);
  EXPECT_EQ(o->norm_bound, 2.5);
  EXPECT_EQ(o->norm_bound_quantile, 0.9);
  EXPECT_EQ(o->norm_bound_warmup, 4u);

  for (const std::string key : {"weight_policy=claimed", "weight_over_cap=drop", "max_weight=0",
                                "max_weight=1e300", "norm_bound=-1", "norm_bound_quantile=1.5",
                                "norm_bound_warmup=0"}) {
    Result<CoordinatorOptions> bad = build({"coordinator." + key});
    ASSERT_FALSE(bad.ok()) << key;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(bad.status().message(), HasSubstr("coordinator." + key.substr(0, key.find('='))));
  }
}

// ---- in a Coordinator ----

constexpr size_t kDim = 8;

class CoordinatorPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_update_policy_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  CoordinatorOptions Options(uint64_t rounds) {
    CoordinatorOptions o;
    o.state_dir = dir_.string();
    o.num_rounds = rounds;
    o.min_clients = 3;
    o.seed = 7;
    o.env = &env_;
    return o;
  }

  static std::unique_ptr<Strategy> MakeStrategy(const std::vector<std::string>& overrides) {
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", overrides);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  static ParamSet Initial() {
    Layout layout;
    layout.Add("weight", {kDim});
    layout.Add("bias", {1});
    ParamSet p(layout);
    for (size_t i = 0; i < p.size(); ++i) p.data()[i] = 0.25f * static_cast<float>(i);
    return p;
  }

  void Start(const CoordinatorOptions& o, const std::vector<std::string>& strategy = {}) {
    Start(o, MakeStrategy(strategy));
  }

  // (Re)starts the coordinator on the state directory and joins client-0 .. client-2.
  void Start(const CoordinatorOptions& o, std::unique_ptr<Strategy> strategy) {
    links_.clear();
    coordinator_.reset();
    auto c = Coordinator::Create(o, std::move(strategy), Initial());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coordinator_ = std::move(c).value();
    coordinator_->SetRoundCallback([this](const RoundSummary& s, const ModelSnapshot&) {
      std::lock_guard<std::mutex> lock(mu_);
      summaries_.push_back(s);
    });
    for (int i = 0; i < 3; ++i) {
      links_.push_back(std::make_unique<InProcessLink>(coordinator_.get()));
      ASSERT_TRUE(links_.back()->Join("", "client-" + std::to_string(i)).ok());
    }
  }

  // A dense f32 update from client `i` for the open round: `values` (one per parameter,
  // or one broadcast to all) with the claimed `weight`.
  Result<PushAck> Push(int i, std::vector<float> values, double weight) {
    Result<Task> task = links_[i]->PullTask(std::chrono::milliseconds(0));
    EXPECT_TRUE(task.ok() && task->kind == TaskKind::kTrain);
    ModelSnapshot model = coordinator_->CurrentModel();
    if (values.size() == 1) values.assign(model.params->size(), values[0]);
    Payload p;
    EXPECT_TRUE(EncodeDense(values, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = task->round;
    p.meta.base_version = task->model_version;
    p.meta.weight = weight;
    p.meta.num_examples = 10;
    p.meta.train_loss = 0.5;
    p.meta.layout_hash = model.params->layout().hash();
    p.meta.encoding = Encoding::kDenseF32;
    return links_[i]->PushUpdate(p);
  }

  std::vector<LedgerEntry> Ledger(uint64_t round) {
    StoreOptions so;
    so.path = (dir_ / "state.db").string();
    Result<std::unique_ptr<Store>> store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    Result<std::vector<LedgerEntry>> rows = (*store)->LedgerForRound(round);
    EXPECT_TRUE(rows.ok()) << rows.status().ToString();
    return *rows;
  }

  RoundSummary LastSummary() {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(summaries_.empty());
    return summaries_.empty() ? RoundSummary() : summaries_.back();
  }

  ManualClockEnv env_;
  std::filesystem::path dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<std::unique_ptr<InProcessLink>> links_;
  std::mutex mu_;
  std::vector<RoundSummary> summaries_;
};

TEST_F(CoordinatorPolicyTest, InflatedWeightIsFoldedWithTheCapAndLedgered) {
  CoordinatorOptions o = Options(1);
  o.update_policy.max_weight = 100;
  Start(o);
  const ParamSet before = Initial();
  ASSERT_TRUE(Push(0, {0.1f}, 10).ok());
  ASSERT_TRUE(Push(1, {0.2f}, 10).ok());
  ASSERT_TRUE(Push(2, {0.5f}, 1e12).ok());
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u);
  const double mean = (10 * double(0.1f) + 10 * double(0.2f) + 100 * double(0.5f)) / 120;
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after.params->data()[i], static_cast<float>(before.data()[i] + static_cast<float>(mean)));
  }
  EXPECT_EQ(LastSummary().strategy_stats.at("robust.clipped_weight"), 1);
  EXPECT_EQ(LastSummary().total_weight, 120);
  bool found = false;
  for (const LedgerEntry& e : Ledger(1)) {
    if (e.status_code == 0 && e.weight == 100) found = true;
    EXPECT_LE(e.weight, 100);
  }
  EXPECT_TRUE(found) << "the ledger records the capped weight";
}

TEST_F(CoordinatorPolicyTest, WeightOverCapIsRefusedWhenConfigured) {
  CoordinatorOptions o = Options(1);
  o.update_policy.max_weight = 100;
  o.update_policy.over_cap = WeightOverCap::kRefuse;
  Start(o);
  Result<PushAck> refused = Push(2, {0.5f}, 1e300);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("coordinator.max_weight 100"));
  bool row = false;
  for (const LedgerEntry& e : Ledger(1)) {
    row |= e.status_code == static_cast<int>(StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(row);
  // The round goes on with the others, and the refused client may still report.
  ASSERT_TRUE(Push(0, {0.1f}, 10).ok());
  ASSERT_TRUE(Push(1, {0.2f}, 10).ok());
  ASSERT_TRUE(Push(2, {0.3f}, 10).ok());
  EXPECT_EQ(coordinator_->CurrentModel().version, 1u);
}

TEST_F(CoordinatorPolicyTest, UniformPolicyFoldsEveryUpdateWithWeightOne) {
  CoordinatorOptions o = Options(1);
  o.update_policy.weight_policy = WeightPolicy::kUniform;
  Start(o);
  ASSERT_TRUE(Push(0, {0.1f}, 1).ok());
  ASSERT_TRUE(Push(1, {0.2f}, 1000).ok());
  ASSERT_TRUE(Push(2, {0.6f}, 1e12).ok());
  const ParamSet before = Initial();
  const double mean = (double(0.1f) + double(0.2f) + double(0.6f)) / 3;
  ModelSnapshot after = coordinator_->CurrentModel();
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after.params->data()[i], static_cast<float>(before.data()[i] + static_cast<float>(mean)));
  }
  EXPECT_EQ(LastSummary().total_weight, 3);
  EXPECT_EQ(LastSummary().strategy_stats.count("robust.clipped_weight"), 0u);
}

TEST_F(CoordinatorPolicyTest, FixedNormBoundScalesLargeUpdatesDown) {
  CoordinatorOptions o = Options(1);
  o.norm_bound = 3.0;  // the updates below have 9 values: norm = 3 * |value|
  Start(o);
  ASSERT_TRUE(Push(0, {0.5f}, 10).ok());   // norm 1.5: kept
  ASSERT_TRUE(Push(1, {-0.5f}, 10).ok());  // norm 1.5: kept
  ASSERT_TRUE(Push(2, {100.0f}, 10).ok()); // norm 300: scaled to 3 (values 1)
  const ParamSet before = Initial();
  ModelSnapshot after = coordinator_->CurrentModel();
  const float mean = static_cast<float>((10 * 0.5 - 10 * 0.5 + 10 * 1.0) / 30);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_NEAR(after.params->data()[i], before.data()[i] + mean, 1e-6);
  }
  const RoundSummary s = LastSummary();
  EXPECT_EQ(s.strategy_stats.at("robust.clipped_norm"), 1);
  EXPECT_EQ(s.strategy_stats.at("robust.norm_bound"), 3.0);
}

// Round 1 warms the adaptive bound up; round 2 is bounded by the median of round 1's norms.
// With a restart in the middle of round 2, the refolded round uses the bound it was
// opened with (stored with the run), and the model is the one without the restart.
TEST_F(CoordinatorPolicyTest, AdaptiveNormBoundIsAQuantileOfEarlierRoundsAndSurvivesARestart) {
  for (bool restart : {false, true}) {
    SCOPED_TRACE(restart ? "with a restart" : "without a restart");
    links_.clear();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
    CoordinatorOptions o = Options(2);
    o.norm_bound_quantile = 0.5;
    o.norm_bound_warmup = 3;
    Start(o);
    // Round 1: warm-up, no bound; norms 3, 6, 9.
    ASSERT_TRUE(Push(0, {1.0f}, 1).ok());
    ASSERT_TRUE(Push(1, {2.0f}, 1).ok());
    ASSERT_TRUE(Push(2, {3.0f}, 1).ok());
    EXPECT_EQ(LastSummary().strategy_stats.at("robust.norm_bound"), 0);
    EXPECT_EQ(LastSummary().strategy_stats.at("robust.clipped_norm"), 0);
    const ModelSnapshot round1 = coordinator_->CurrentModel();
    // Round 2: the median of {3, 6, 9} = 6 bounds the updates.
    ASSERT_TRUE(Push(2, {1000.0f}, 1).ok());  // norm 3000: scaled to 6 (values 2)
    if (restart) Start(o);                    // on the same state directory
    ASSERT_TRUE(Push(0, {1.0f}, 1).ok());
    ASSERT_TRUE(Push(1, {1.0f}, 1).ok());
    EXPECT_EQ(LastSummary().round, 2u);
    EXPECT_EQ(LastSummary().strategy_stats.at("robust.norm_bound"), 6);
    EXPECT_EQ(LastSummary().strategy_stats.at("robust.clipped_norm"), 1);
    ModelSnapshot after = coordinator_->CurrentModel();
    ASSERT_EQ(after.version, 2u);
    for (size_t i = 0; i < after.params->size(); ++i) {
      EXPECT_NEAR(after.params->data()[i], round1.params->data()[i] + 4.0f / 3.0f, 1e-5);
    }
  }
}

// FedAdam's second moment overflows float32 for a finite but huge mean delta: the step is
// refused. The coordinator re-folds the round without the largest contribution, so the
// honest updates land exactly as they would have without the attacker.
TEST_F(CoordinatorPolicyTest, NonFiniteStepIsRetriedWithoutTheOffendingUpdate) {
  const std::vector<std::string> adam = {"algorithm.name=fedadam", "algorithm.server_lr=0.01"};
  Start(Options(1), adam);
  ASSERT_TRUE(Push(0, {0.1f}, 10).ok());
  ASSERT_TRUE(Push(2, {1e30f}, 1).ok());
  ASSERT_TRUE(Push(1, {0.2f}, 10).ok());
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u);

  // The expected model: the same strategy, applied to the two honest updates alone.
  std::unique_ptr<Strategy> reference = MakeStrategy(adam);
  const ParamSet initial = Initial();
  std::unique_ptr<RoundAggregator> agg = reference->NewRoundAggregator(initial, 1);
  for (float v : {0.1f, 0.2f}) {
    std::vector<float> values(initial.size(), v);
    Payload p;
    ASSERT_TRUE(EncodeDense(values, Encoding::kDenseF32, &p.bytes).ok());
    p.meta.round = 1;
    p.meta.weight = 10;
    p.meta.train_loss = 0.5;
    p.meta.layout_hash = initial.layout().hash();
    ASSERT_TRUE(agg->Accumulate(p).ok());
  }
  ParamSet expected = initial;
  ASSERT_TRUE(reference->ApplyRound(*std::move(*agg).Report(), &expected).ok());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(after.params->data()[i], expected.data()[i]) << i;
    EXPECT_NE(after.params->data()[i], initial.data()[i]) << "the honest updates must land";
  }
  const RoundSummary s = LastSummary();
  EXPECT_EQ(s.num_updates, 2u);
  EXPECT_EQ(s.strategy_stats.at("robust.dropped_updates"), 1);
  int dropped = 0;
  for (const LedgerEntry& e : Ledger(1)) {
    if (e.status_code != 0 && e.reason.find("dropped at round close") != std::string::npos) {
      ++dropped;
      EXPECT_EQ(e.client_id, 3u) << "client-2 joined third";
    }
  }
  EXPECT_EQ(dropped, 1);
}

// A custom algorithm with its own (non-dense) encoding: its aggregator records the
// weights it is given. The policy reaches it as it reaches the built-in ones.
class RecordingAggregator : public RoundAggregator {
 public:
  explicit RecordingAggregator(std::vector<double>* weights) : weights_(weights) {}
  Status Accumulate(const Payload& payload) override {
    weights_->push_back(payload.meta.weight);
    ++count_;
    return Status::Ok();
  }
  Status MergeWith(RoundAggregator&&) override { return Status::Unimplemented("merge"); }
  uint64_t count() const override { return count_; }
  bool CanReport() const override { return count_ > 0; }
  Result<AggregateReport> Report() && override {
    AggregateReport r;
    r.count = count_;
    return r;
  }

 private:
  std::vector<double>* weights_;
  uint64_t count_ = 0;
};

class RecordingStrategy : public Strategy {
 public:
  explicit RecordingStrategy(std::vector<double>* weights) : weights_(weights) {}
  std::string_view name() const override { return "recording"; }
  TrainConfig ConfigureRound(uint64_t) const override { return TrainConfig(); }
  std::unique_ptr<RoundAggregator> NewRoundAggregator(const ParamSet&, uint64_t) override {
    return std::make_unique<RecordingAggregator>(weights_);
  }
  Status ApplyRound(AggregateReport, ParamSet*) override { return Status::Ok(); }

 private:
  std::vector<double>* weights_;
};

TEST_F(CoordinatorPolicyTest, PolicyReachesCustomAlgorithmsWithTheirOwnEncoding) {
  for (WeightPolicy policy : {WeightPolicy::kExamples, WeightPolicy::kUniform}) {
    links_.clear();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
    std::vector<double> weights;
    CoordinatorOptions o = Options(1);
    o.update_policy.weight_policy = policy;
    o.update_policy.max_weight = 50;
    o.norm_bound = 1;  // not applied: the encoding is not dense
    Start(o, std::make_unique<RecordingStrategy>(&weights));
    const std::vector<double> claims = {5, 50, 1e12};
    for (int i = 0; i < 3; ++i) {
      Result<Task> task = links_[i]->PullTask(std::chrono::milliseconds(0));
      ASSERT_TRUE(task.ok() && task->kind == TaskKind::kTrain);
      Payload p;
      p.bytes = std::string(1000, static_cast<char>('a' + i));
      p.meta.round = task->round;
      p.meta.base_version = task->model_version;
      p.meta.weight = claims[i];
      p.meta.encoding = Encoding::kNamedSubset;
      ASSERT_TRUE(links_[i]->PushUpdate(p).ok());
    }
    ASSERT_EQ(coordinator_->CurrentModel().version, 1u);
    if (policy == WeightPolicy::kExamples) {
      EXPECT_EQ(weights, (std::vector<double>{5, 50, 50}));
    } else {
      EXPECT_EQ(weights, (std::vector<double>{1, 1, 1}));
    }
  }
}

TEST_F(CoordinatorPolicyTest, CreateRefusesPolicyOutOfRange) {
  CoordinatorOptions o = Options(1);
  o.update_policy.max_weight = 1e300;
  EXPECT_FALSE(Coordinator::Create(o, MakeStrategy({}), Initial()).ok());
  o = Options(1);
  o.norm_bound_quantile = 1.5;
  EXPECT_FALSE(Coordinator::Create(o, MakeStrategy({}), Initial()).ok());
  o = Options(1);
  o.norm_bound = -1;
  EXPECT_FALSE(Coordinator::Create(o, MakeStrategy({}), Initial()).ok());
}

}  // namespace
}  // namespace fl::internal
