// FedIns rounds on the real Coordinator (SQLite files, spool, ledger), with plain C++
// pool trainers driven through InProcessLink: keyed uploads are folded per tensor, bad
// ones are refused with a precise reason and a ledger row while the round goes on, pool
// entries nobody trained keep their bits, async buffers fold them the same way, and a
// restart refolds the spooled uploads.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "codec/named_subset_codec.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "server/coordinator.h"
#include "simulations/in_process_link.h"
#include "store/store.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

constexpr int kEntries = 4;

// Per entry: a key (4 values) and a head (2x4).
Layout PoolLayout() {
  Layout l;
  for (int e = 0; e < kEntries; ++e) {
    l.Add("pool." + std::to_string(e) + ".key", {4});
    l.Add("pool." + std::to_string(e) + ".head.weight", {2, 4});
  }
  return l;
}

ParamSet InitialPool() {
  ParamSet p(PoolLayout());
  for (size_t i = 0; i < p.size(); ++i) p.data()[i] = 0.01f * static_cast<float>(i) - 0.2f;
  p.data()[p.size() - 1] = -0.0f;  // an unsent -0 stays -0
  return p;
}

// "Trains" the entries it is given (each value += step * (entry + 1)) and reports them
// as keyed, with `fraction` of the weight each.
class PoolTrainer : public Trainer {
 public:
  PoolTrainer(std::vector<int> entries, double fraction, float step, uint64_t examples)
      : layout_(PoolLayout()),
        params_(layout_),
        entries_(std::move(entries)),
        fraction_(fraction),
        step_(step),
        examples_(examples) {}
  const Layout& layout() const override { return layout_; }
  Status GetParameters(ParamSet* out) override {
    *out = params_;
    return Status::Ok();
  }
  Status SetParameters(const ParamSet& p) override {
    params_ = p;
    return Status::Ok();
  }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken&) override {
    seen = config;
    TrainStats s;
    for (int e : entries_) {
      for (const char* part : {".key", ".head.weight"}) {
        const std::string name = "pool." + std::to_string(e) + part;
        for (float& v : params_.tensor(layout_.Find(name))) v += step_ * static_cast<float>(e + 1);
        s.tensor_weights[name] = fraction_;
      }
    }
    s.dataset_size = examples_;
    s.num_examples = examples_;
    s.mean_loss = 1.0;
    return s;
  }
  Result<EvalStats> Evaluate() override { return EvalStats{}; }

  TrainConfig seen;

 private:
  Layout layout_;
  ParamSet params_;
  std::vector<int> entries_;
  double fraction_;
  float step_;
  uint64_t examples_;
};

class FedInsFederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_fedins_federation_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.state_dir = dir_.string();
    o.num_rounds = 1;
    o.min_clients = 3;
    o.seed = 7;
    return o;
  }

  static std::unique_ptr<Strategy> FedIns(const std::vector<std::string>& overrides = {}) {
    std::vector<std::string> all = {"algorithm.name=fedins", "fedins.entries=4", "fedins.top_k=2"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", all);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  std::vector<std::unique_ptr<InProcessLink>> JoinedLinks(Coordinator* c, int n) {
    std::vector<std::unique_ptr<InProcessLink>> links;
    for (int i = 0; i < n; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c));
      Result<JoinReply> joined = links.back()->Join("", "client-" + std::to_string(i));
      EXPECT_TRUE(joined.ok()) << joined.status().ToString();
    }
    return links;
  }

  // Trains one client's keyed update for the open round without pushing it.
  static Payload TrainUpdate(InProcessLink& link, PoolTrainer& trainer) {
    Result<Task> task = link.PullTask(std::chrono::milliseconds(0));
    EXPECT_TRUE(task.ok());
    EXPECT_EQ(task->kind, TaskKind::kTrain);
    EXPECT_EQ(task->algorithm, "fedins");
    Result<ModelSnapshot> model = link.FetchModel(task->model_version);
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    Result<std::unique_ptr<Learner>> learner = CreateLearner(task->algorithm);
    EXPECT_TRUE(learner.ok());
    CancelToken cancel;
    Result<Payload> p = (*learner)->Train(*task, *model->params, trainer, cancel);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return std::move(p).value();
  }

  // The three clients: 0 trains entries {0, 1} (weight 10, fraction 0.5), 1 trains {1}
  // (weight 30, fraction 1), 2 trains {0} (weight 20, fraction 0.25). Entries 2 and 3:
  // nobody.
  static std::vector<PoolTrainer> Trainers() {
    return {PoolTrainer({0, 1}, 0.5, 0.5f, 10), PoolTrainer({1}, 1.0, -0.25f, 30),
            PoolTrainer({0}, 0.25, 1.0f, 20)};
  }

  // The expected global model after one round with Trainers() and the selected rule.
  static ParamSet Expected() {
    ParamSet g = InitialPool();
    // Entry 0: (10 * 0.5 * 0.5 + 20 * 0.25 * 1.0) / (5 + 5) = 0.75 (x (0 + 1)).
    // Entry 1: (10 * 0.5 * 0.5 * 2 + 30 * 1 * -0.25 * 2) / (5 + 30) = (5 - 15) / 35.
    const double delta[kEntries] = {0.75, -10.0 / 35, 0, 0};
    for (int e = 0; e < 2; ++e) {
      const float d = static_cast<float>(delta[e]);
      for (size_t t : {2 * e, 2 * e + 1}) {
        for (float& v : g.tensor(t)) v = static_cast<float>(v + 1.0 * d);
      }
    }
    return g;
  }

  std::filesystem::path dir_;
};

// A copy of `good` with other bytes (and their digest).
Payload WithTensors(const Payload& good, const std::vector<NamedTensorView>& tensors) {
  Payload p = good;
  EXPECT_TRUE(EncodeNamedSubset(tensors, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

TEST_F(FedInsFederationTest, BadKeyedUpdatesAreRefusedRecordedAndTheRoundGoesOn) {
  auto c = Coordinator::Create(Options(), FedIns(), InitialPool());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  std::vector<PoolTrainer> trainers = Trainers();
  std::vector<Payload> good;
  for (int i = 0; i < 3; ++i) good.push_back(TrainUpdate(*links[i], trainers[i]));
  EXPECT_EQ(*trainers[0].seen.extra.at("fedins.top_k").AsInt64(), 2);
  EXPECT_EQ(*trainers[0].seen.extra.at("fedins.entries").AsInt64(), 4);

  const std::vector<float> key(4, 0.5f), short_key(3, 0.5f);
  const std::vector<std::pair<Payload, std::string>> bad = {
      {WithTensors(good[0], {{"pool.0.key", 1.0, key}, {"pool.1.key", 1.0, short_key}}),
       "pool.1.key has 3 values, the layout's has 4"},
      {WithTensors(good[0], {{"pool.9.key", 1.0, key}}), "unknown tensor 'pool.9.key'"},
      {WithTensors(good[0], {{"pool.0.key", -0.5, key}}), "pool.0.key has weight fraction -0.5"},
      {WithTensors(good[0], {{"pool.2.key", std::nan(""), key}}),
       "pool.2.key has weight fraction nan"},
  };
  for (const auto& [payload, reason] : bad) {
    Result<PushAck> r = links[0]->PushUpdate(payload);
    ASSERT_FALSE(r.ok()) << reason;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_THAT(r.status().message(), HasSubstr(reason));
  }
  EXPECT_EQ((*c)->GetStatus().updates_in_round, 0u);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(links[i]->PushUpdate(good[i]).ok()) << i;

  ModelSnapshot model = (*c)->CurrentModel();
  EXPECT_EQ(model.version, 1u);
  const ParamSet expected = Expected();
  const ParamSet initial = InitialPool();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ(model.params->data()[i], expected.data()[i]) << "parameter " << i;
  }
  // Entries 2 and 3, which nobody trained, keep their bits (the -0 included).
  const size_t unsent = PoolLayout().tensors()[4].offset;
  EXPECT_EQ(std::memcmp(model.params->data() + unsent, initial.data() + unsent,
                        (initial.size() - unsent) * sizeof(float)),
            0);

  Result<std::unique_ptr<Store>> store = Store::Open({.path = (dir_ / "state.db").string()});
  ASSERT_TRUE(store.ok());
  Result<std::vector<LedgerEntry>> ledger = (*store)->LedgerForRound(1);
  ASSERT_TRUE(ledger.ok());
  std::vector<std::string> reasons;
  int accepted = 0;
  for (const LedgerEntry& e : *ledger) {
    if (e.status_code == 0) ++accepted;
    if (e.status_code == static_cast<int>(StatusCode::kInvalidArgument)) {
      reasons.push_back(e.reason);
    }
  }
  EXPECT_EQ(accepted, 3);
  ASSERT_EQ(reasons.size(), bad.size());
  for (size_t i = 0; i < bad.size(); ++i) EXPECT_THAT(reasons[i], HasSubstr(bad[i].second));
}

// coordinator.norm_bound reaches keyed uploads: a client that sends a huge entry has its
// values scaled to the bound before they are folded, so the entry moves by at most it.
TEST_F(FedInsFederationTest, NormBoundScalesAHugeKeyedUpload) {
  CoordinatorOptions o = Options();
  o.norm_bound = 1.0;
  auto c = Coordinator::Create(o, FedIns(), InitialPool());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  std::vector<PoolTrainer> trainers = {PoolTrainer({2}, 1.0, 1e6f, 10),
                                       PoolTrainer({2}, 1.0, 0.0f, 10),
                                       PoolTrainer({2}, 1.0, 0.0f, 10)};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(links[i]->PushUpdate(TrainUpdate(*links[i], trainers[i])).ok()) << i;
  }
  ModelSnapshot model = (*c)->CurrentModel();
  ASSERT_EQ(model.version, 1u);
  const ParamSet initial = InitialPool();
  const Layout layout = PoolLayout();
  double moved = 0;  // squared L2 distance of entry 2 from where it started
  for (size_t t : {size_t{4}, size_t{5}}) {
    const TensorSpec& s = layout.tensors()[t];
    for (size_t i = s.offset; i < s.offset + s.numel; ++i) {
      const double d = model.params->data()[i] - initial.data()[i];
      moved += d * d;
    }
  }
  // The attacker's update, clipped to norm 1, is one of three equal weights.
  EXPECT_GT(moved, 0);
  EXPECT_LE(std::sqrt(moved), 1.0 / 3 + 1e-5);
}

TEST_F(FedInsFederationTest, UniformRuleCountsEveryClientForEveryEntry) {
  auto c = Coordinator::Create(Options(), FedIns({"fedins.aggregate=uniform"}), InitialPool());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  std::vector<PoolTrainer> trainers = Trainers();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(links[i]->PushUpdate(TrainUpdate(*links[i], trainers[i])).ok());
  }
  ModelSnapshot model = (*c)->CurrentModel();
  ASSERT_EQ(model.version, 1u);
  // Entry 0: (0.5 + 1.0) / 3; entry 1: (0.5 * 2 - 0.25 * 2) / 3.
  const ParamSet initial = InitialPool();
  const Layout layout = PoolLayout();
  const float d0 = static_cast<float>(1.5 / 3), d1 = static_cast<float>(0.5 / 3);
  for (size_t t = 0; t < 4; ++t) {
    const float d = t < 2 ? d0 : d1;
    const TensorSpec& s = layout.tensors()[t];
    for (size_t i = s.offset; i < s.offset + s.numel; ++i) {
      EXPECT_FLOAT_EQ(model.params->data()[i], initial.data()[i] + d) << i;
    }
  }
  const size_t unsent = layout.tensors()[4].offset;
  EXPECT_EQ(std::memcmp(model.params->data() + unsent, initial.data() + unsent,
                        (initial.size() - unsent) * sizeof(float)),
            0);
}

TEST_F(FedInsFederationTest, AsyncBuffersFoldKeyedUploadsPerTensor) {
  CoordinatorOptions o = Options();
  o.mode = CoordinatorMode::kAsync;
  o.async.buffer_size = 3;
  auto c = Coordinator::Create(o, FedIns(), InitialPool());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  std::vector<PoolTrainer> trainers = Trainers();
  std::vector<Payload> payloads;
  for (int i = 0; i < 3; ++i) payloads.push_back(TrainUpdate(*links[i], trainers[i]));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[i]).ok()) << i;
  // Every upload has staleness 0, so the flushed buffer is the synchronous round.
  ModelSnapshot model = (*c)->CurrentModel();
  EXPECT_EQ(model.version, 1u);
  const ParamSet expected = Expected();
  const ParamSet initial = InitialPool();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ(model.params->data()[i], expected.data()[i]) << "parameter " << i;
  }
  const size_t unsent = PoolLayout().tensors()[4].offset;
  EXPECT_EQ(std::memcmp(model.params->data() + unsent, initial.data() + unsent,
                        (initial.size() - unsent) * sizeof(float)),
            0);
}

TEST_F(FedInsFederationTest, RestartRefoldsSpooledKeyedUpdates) {
  std::vector<Payload> payloads;
  std::vector<std::string> tokens;
  {
    auto c = Coordinator::Create(Options(), FedIns(), InitialPool());
    ASSERT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    std::vector<PoolTrainer> trainers = Trainers();
    for (int i = 0; i < 3; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c->get()));
      Result<JoinReply> j = links.back()->Join("", "client-" + std::to_string(i));
      ASSERT_TRUE(j.ok());
      tokens.push_back(j->session_token);
    }
    for (int i = 0; i < 3; ++i) payloads.push_back(TrainUpdate(*links[i], trainers[i]));
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[i]).ok());
    // The coordinator goes away with the round open.
  }
  auto c = Coordinator::Create(Options(), FedIns(), InitialPool());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->GetStatus().updates_in_round, 2u);
  Result<Session> s2 = (*c)->Authenticate(tokens[2]);
  ASSERT_TRUE(s2.ok());
  ASSERT_TRUE((*c)->PushUpdate(*s2, payloads[2]).ok());
  ModelSnapshot model = (*c)->CurrentModel();
  EXPECT_EQ(model.version, 1u);
  const ParamSet expected = Expected();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ(model.params->data()[i], expected.data()[i]) << "parameter " << i;
  }
}

}  // namespace
}  // namespace fl::internal
