// Ferret federations on the real Coordinator (SQLite files, spool, ledger) with plain
// C++ linear-regression clients, driven through InProcessLink and ClientRuntime exactly
// as fl-sim drives them: learning, upload size, rejection of bad tables, crash recovery
// and downlink by replay.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/param_io.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "examples/linear_trainer.h"
#include "server/coordinator.h"
#include "simulations/in_process_link.h"
#include "store/store.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

bool BitwiseEqual(const ParamSet& a, const ParamSet& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class FerretFederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_ferret_federation_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CoordinatorOptions Options(uint64_t rounds, uint32_t clients) {
    CoordinatorOptions o;
    o.state_dir = dir_.string();
    o.num_rounds = rounds;
    o.min_clients = clients;
    o.seed = 7;
    return o;
  }

  static std::unique_ptr<Strategy> Ferret(std::vector<std::string> overrides = {}) {
    std::vector<std::string> all = {"algorithm.name=ferret", "train.lr=0.05",
                                    "train.batch_size=8", "ferret.seed=3"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", all);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  static std::unique_ptr<examples::LinearTrainer> MakeTrainer(size_t dim, size_t rows,
                                                              uint64_t seed) {
    std::vector<float> x, y;
    examples::MakeLinearData(dim, rows, seed, &x, &y);
    return std::make_unique<examples::LinearTrainer>(dim, std::move(x), std::move(y));
  }

  static ParamSet Zeros(size_t dim) {
    Layout layout;
    layout.Add("weight", {static_cast<int64_t>(dim)});
    layout.Add("bias", {1});
    return ParamSet(layout);
  }

  // A client pushing its own update for the open round.
  struct Client {
    std::unique_ptr<InProcessLink> link;
    std::unique_ptr<ClientRuntime> runtime;
    std::unique_ptr<examples::LinearTrainer> trainer;
  };

  std::vector<Client> MakeClients(Coordinator* c, int n, size_t dim, size_t rows) {
    std::vector<Client> clients;
    for (int i = 0; i < n; ++i) {
      Client cl;
      cl.link = std::make_unique<InProcessLink>(c);
      ClientRuntimeOptions options;
      options.client_name = "client-" + std::to_string(i);
      cl.runtime = std::make_unique<ClientRuntime>(cl.link.get(), options);
      cl.trainer = MakeTrainer(dim, rows, 100 + i);
      EXPECT_TRUE(cl.runtime->Join().ok());
      clients.push_back(std::move(cl));
    }
    return clients;
  }

  // Runs every client's task once per round until the federation is done.
  std::vector<ExecuteReport> RunAll(std::vector<Client>& clients) {
    std::vector<ExecuteReport> reports;
    while (true) {
      bool any = false, done = false;
      for (Client& cl : clients) {
        Result<Task> t = cl.runtime->Pull(std::chrono::milliseconds(0));
        EXPECT_TRUE(t.ok());
        if (!t.ok()) return reports;
        if (t->kind == TaskKind::kDone) done = true;
        if (t->kind != TaskKind::kTrain) continue;
        CancelToken cancel;
        Result<ExecuteReport> r = cl.runtime->Execute(*t, *cl.trainer, cancel);
        EXPECT_TRUE(r.ok()) << r.status().ToString();
        if (!r.ok()) return reports;
        reports.push_back(*r);
        any = true;
      }
      if (done || !any) return reports;
    }
  }

  // Trains one client's update for the open round without pushing it.
  static Payload TrainUpdate(InProcessLink& link, examples::LinearTrainer& trainer) {
    Result<Task> task = link.PullTask(std::chrono::milliseconds(0));
    EXPECT_TRUE(task.ok());
    EXPECT_EQ(task->kind, TaskKind::kTrain);
    Result<ModelSnapshot> model = link.FetchModel(task->model_version);
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    Result<std::unique_ptr<Learner>> learner = CreateLearner(task->algorithm);
    EXPECT_TRUE(learner.ok());
    CancelToken cancel;
    Result<Payload> p = (*learner)->Train(*task, *model->params, trainer, cancel);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return std::move(p).value();
  }

  std::unique_ptr<Store> OpenStore() {
    Result<std::unique_ptr<Store>> store = Store::Open({.path = (dir_ / "state.db").string()});
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return std::move(store).value();
  }

  std::filesystem::path dir_;
};

TEST_F(FerretFederationTest, LearnsThroughTheCoordinator) {
  constexpr size_t kDim = 8;
  constexpr int kRounds = 8;
  auto c = Coordinator::Create(Options(kRounds, 3), Ferret(), Zeros(kDim));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::map<uint64_t, std::shared_ptr<const ParamSet>> versions;
  std::vector<RoundSummary> summaries;
  versions[0] = (*c)->CurrentModel().params;
  (*c)->SetRoundCallback([&](const RoundSummary& s, const ModelSnapshot& m) {
    summaries.push_back(s);
    versions[m.version] = m.params;
  });
  std::vector<Client> clients = MakeClients(c->get(), 3, kDim, 64);
  std::vector<ExecuteReport> reports = RunAll(clients);
  ASSERT_EQ(summaries.size(), static_cast<size_t>(kRounds));
  ASSERT_EQ(reports.size(), static_cast<size_t>(3 * kRounds));

  // Held-out loss of each global version: the model moves toward the solution.
  auto eval = MakeTrainer(kDim, 512, 999);
  std::vector<double> loss;
  for (const auto& [v, params] : versions) {
    ASSERT_TRUE(eval->SetParameters(*params).ok());
    loss.push_back(eval->Evaluate()->loss);
  }
  for (size_t v = 0; v < loss.size(); ++v) std::printf("version %zu held-out loss %.4f\n", v, loss[v]);
  EXPECT_LT(loss[1], loss[0]);
  EXPECT_LT(loss.back(), 0.2 * loss[0]);
  EXPECT_LT(summaries.back().mean_train_loss, 0.2 * summaries.front().mean_train_loss);

  // Every round reports its reconstruction counters and a replay record.
  for (const RoundSummary& s : summaries) {
    EXPECT_EQ(s.num_updates, 3u);
    EXPECT_GT(s.strategy_stats.at("ferret.terms_applied"), 0);
    EXPECT_EQ(s.strategy_stats.count("ferret.terms_clipped"), 1u);
    EXPECT_EQ(s.strategy_stats.at("ferret.terms_skipped_nonfinite"), 0);
    EXPECT_GT(s.replay_bytes, 0u);
  }
  // For a 9-parameter model the replay records outweigh the model: clients download it.
  const uint64_t model_bytes = SerializeParamSet(*versions[0]).size();
  for (const ExecuteReport& r : reports) {
    EXPECT_EQ(r.replayed_versions, 0u);
    EXPECT_EQ(r.bytes_down == 0 || r.bytes_down == model_bytes, true) << r.bytes_down;
  }
}

TEST_F(FerretFederationTest, UploadIsAFractionOfDenseOnALargerModel) {
  constexpr size_t kDim = 100000;
  auto c = Coordinator::Create(Options(1, 2), Ferret({"train.local_steps=2", "train.lr=1e-6"}),
                               Zeros(kDim));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<Client> clients = MakeClients(c->get(), 2, kDim, 16);
  std::vector<ExecuteReport> reports = RunAll(clients);
  ASSERT_EQ(reports.size(), 2u);
  const double dense = static_cast<double>((kDim + 1) * sizeof(float));
  for (const ExecuteReport& r : reports) {
    std::printf("d = %zu, K = 200: ferret upload %llu bytes per client per round, dense f32 %.0f "
                "bytes, ratio %.1fx\n",
                kDim + 1, static_cast<unsigned long long>(r.bytes_up), dense,
                dense / static_cast<double>(r.bytes_up));
    EXPECT_LT(static_cast<double>(r.bytes_up) * 100, dense);
  }
  EXPECT_EQ((*c)->CurrentModel().version, 1u);
}

TEST_F(FerretFederationTest, BadTablesAreRejectedWithPreciseStatusAndTheRoundGoesOn) {
  constexpr size_t kDim = 8;
  auto c = Coordinator::Create(Options(1, 3), Ferret(), Zeros(kDim));
  ASSERT_TRUE(c.ok());
  std::vector<std::unique_ptr<InProcessLink>> links;
  for (int i = 0; i < 3; ++i) {
    links.push_back(std::make_unique<InProcessLink>(c->get()));
    ASSERT_TRUE(links.back()->Join("", "client-" + std::to_string(i)).ok());
  }
  auto trainer = MakeTrainer(kDim, 64, 5);
  const Payload good = TrainUpdate(*links[0], *trainer);
  Result<ferret::CoefficientTable> table = ferret::ParseCoefficientTable(good.bytes);
  ASSERT_TRUE(table.ok());
  const uint64_t plan = table->plan_hash(), basis = table->basis_hash();
  const uint32_t k = table->num_seeds(), l = table->num_blocks();

  auto with = [&](const ferret::CoefficientTable& t) {
    Payload p = good;
    p.bytes = ferret::SerializeCoefficientTable(t);
    p.meta.sha256 = Sha256(p.bytes);
    return p;
  };
  auto expect_code = [&](const Payload& p, StatusCode code, const char* words) {
    Result<PushAck> r = links[0]->PushUpdate(p);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_THAT(r.status().message(), HasSubstr(words));
  };
  ferret::CoefficientTable unknown_block(plan, basis, k, l + 1);
  ASSERT_TRUE(unknown_block.Append(l, 0, 0.5f).ok());
  expect_code(with(unknown_block), StatusCode::kInvalidArgument, "unknown block");
  ferret::CoefficientTable unknown_seed(plan, basis, k + 1, l);
  ASSERT_TRUE(unknown_seed.Append(0, k, 0.5f).ok());
  expect_code(with(unknown_seed), StatusCode::kInvalidArgument, "unknown seed index");
  ferret::CoefficientTable other_plan(plan + 1, basis, k, l);
  ASSERT_TRUE(other_plan.Append(0, 0, 0.5f).ok());
  expect_code(with(other_plan), StatusCode::kFailedPrecondition, "block plan");
  ferret::CoefficientTable nan(plan, basis, k, l);
  for (const ferret::Coefficient& e : table->entries()) {
    ASSERT_TRUE(nan.Append(e.block, e.seed, e.seed == 5 ? std::nanf("") : e.value).ok());
  }
  expect_code(with(nan), StatusCode::kInvalidArgument, "non-finite ferret coefficient at");
  Payload dense = good;
  dense.meta.encoding = Encoding::kDenseF32;
  expect_code(dense, StatusCode::kInvalidArgument, "ferret");

  EXPECT_EQ((*c)->GetStatus().updates_in_round, 0u);
  for (int i = 0; i < 3; ++i) {
    Payload p = i == 0 ? good : TrainUpdate(*links[i], *trainer);
    ASSERT_TRUE(links[i]->PushUpdate(p).ok());
  }
  EXPECT_EQ((*c)->CurrentModel().version, 1u);
  EXPECT_TRUE((*c)->CurrentModel().params->AllFinite());

  std::unique_ptr<Store> store = OpenStore();
  Result<std::vector<LedgerEntry>> ledger = store->LedgerForRound(1);
  ASSERT_TRUE(ledger.ok());
  std::map<int, int> by_code;
  for (const auto& e : *ledger) by_code[e.status_code]++;
  EXPECT_EQ(by_code[0], 3);
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kInvalidArgument)], 4);
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kFailedPrecondition)], 1);
}

TEST_F(FerretFederationTest, ResumesOpenRoundExactlyOnceAndKeepsReplayRecords) {
  // Large enough that two replay records are smaller than the model.
  constexpr size_t kDim = 5000;
  const std::vector<std::string> momentum = {"ferret.server_momentum=0.5", "ferret.clip=0.5",
                                             "train.lr=2e-5"};
  // Reference: two uninterrupted rounds with the same updates.
  std::vector<std::vector<Payload>> payloads(2);
  ParamSet reference;
  {
    auto c = Coordinator::Create(Options(2, 3), Ferret(momentum), Zeros(kDim));
    ASSERT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    for (int i = 0; i < 3; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c->get()));
      ASSERT_TRUE(links.back()->Join("", "client-" + std::to_string(i)).ok());
    }
    for (int r = 0; r < 2; ++r) {
      for (int i = 0; i < 3; ++i) {
        auto trainer = MakeTrainer(kDim, 64, 200 + i);
        payloads[r].push_back(TrainUpdate(*links[i], *trainer));
      }
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[r][i]).ok());
    }
    reference = *(*c)->CurrentModel().params;
    EXPECT_EQ((*c)->CurrentModel().version, 2u);
  }
  std::filesystem::remove_all(dir_);

  std::vector<std::string> tokens;
  {
    auto c = Coordinator::Create(Options(2, 3), Ferret(momentum), Zeros(kDim));
    ASSERT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    for (int i = 0; i < 3; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c->get()));
      Result<JoinReply> j = links.back()->Join("", "client-" + std::to_string(i));
      ASSERT_TRUE(j.ok());
      tokens.push_back(j->session_token);
    }
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[0][i]).ok());
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[1][i]).ok());
    EXPECT_EQ((*c)->GetStatus().updates_in_round, 2u);
    // The coordinator goes away with round 2 open (the process tests do kill -9).
  }
  auto c = Coordinator::Create(Options(2, 3), Ferret(momentum), Zeros(kDim));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->GetStatus().round, 2u);
  EXPECT_EQ((*c)->GetStatus().updates_in_round, 2u);
  Result<Session> s0 = (*c)->Authenticate(tokens[0]);
  Result<Session> s2 = (*c)->Authenticate(tokens[2]);
  ASSERT_TRUE(s0.ok() && s2.ok());
  Result<PushAck> again = (*c)->PushUpdate(*s0, payloads[1][0]);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  ASSERT_TRUE((*c)->PushUpdate(*s2, payloads[1][2]).ok());
  ModelSnapshot model = (*c)->CurrentModel();
  ASSERT_EQ(model.version, 2u);
  EXPECT_TRUE(BitwiseEqual(*model.params, reference)) << "momentum and folds resume exactly";

  // Both rounds' replay records are in SQLite and rebuild version 2 from version 0.
  std::unique_ptr<Store> store = OpenStore();
  Result<std::vector<ReplayRecord>> records = store->GetReplayRecords(1, 2);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 2u);
  ParamSet replayed = Zeros(kDim);
  for (const ReplayRecord& r : *records) ASSERT_TRUE(ApplyReplayRecord("ferret", r.bytes, &replayed).ok());
  EXPECT_TRUE(BitwiseEqual(replayed, reference));
  // The restarted coordinator serves round 1's record from the store (the process that
  // made it is gone) and round 2's from memory.
  Result<ModelSnapshot> fetched = (*c)->FetchModel(*s0, 2, 0);
  ASSERT_TRUE(fetched.ok());
  ASSERT_TRUE(fetched->is_replay());
  ASSERT_EQ(fetched->replay_records.size(), 2u);
  EXPECT_EQ(fetched->replay_base_version, 0u);
  EXPECT_EQ(*fetched->replay_records[0], (*records)[0].bytes);
  EXPECT_EQ(*fetched->replay_records[1], (*records)[1].bytes);
  EXPECT_EQ(fetched->wire_bytes, (*records)[0].bytes.size() + (*records)[1].bytes.size());
  EXPECT_LT(fetched->wire_bytes, model.wire_bytes);
  // Too far behind for the configured window: the full model.
  Result<ModelSnapshot> current = (*c)->FetchModel(*s0, 2, 2);
  ASSERT_TRUE(current.ok());
  EXPECT_FALSE(current->is_replay());
  EXPECT_TRUE(BitwiseEqual(*current->params, reference));
}

TEST_F(FerretFederationTest, CachedClientsCatchUpByReplayBitwise) {
  constexpr size_t kDim = 20000;
  constexpr int kRounds = 4;
  auto c = Coordinator::Create(Options(kRounds, 2),
                               Ferret({"train.local_steps=2", "train.lr=5e-6",
                                       "ferret.server_lr=0.5", "ferret.threads=2"}),
                               Zeros(kDim));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::map<uint64_t, std::shared_ptr<const ParamSet>> versions;
  std::map<uint64_t, uint64_t> replay_bytes;
  versions[0] = (*c)->CurrentModel().params;
  const uint64_t model_bytes = (*c)->CurrentModel().wire_bytes;
  (*c)->SetRoundCallback([&](const RoundSummary& s, const ModelSnapshot& m) {
    versions[m.version] = m.params;
    replay_bytes[m.version] = s.replay_bytes;
  });
  std::vector<Client> clients = MakeClients(c->get(), 2, kDim, 16);
  std::vector<ExecuteReport> reports = RunAll(clients);
  ASSERT_EQ(reports.size(), static_cast<size_t>(2 * kRounds));
  for (size_t i = 0; i < reports.size(); ++i) {
    const ExecuteReport& r = reports[i];
    if (r.round == 1) {
      EXPECT_EQ(r.replayed_versions, 0u);
      EXPECT_EQ(r.bytes_down, model_bytes);
    } else {
      EXPECT_EQ(r.replayed_versions, 1u) << "round " << r.round;
      EXPECT_EQ(r.bytes_down, replay_bytes[r.round - 1]);
      EXPECT_LT(r.bytes_down * 10, model_bytes);
    }
  }
  // Each client's cached model is the last version it trained from, bit for bit.
  for (Client& cl : clients) {
    const ModelSnapshot& cached = cl.runtime->cached_model();
    ASSERT_NE(cached.params, nullptr);
    EXPECT_EQ(cached.version, static_cast<uint64_t>(kRounds - 1));
    EXPECT_TRUE(BitwiseEqual(*cached.params, *versions[cached.version]));
    EXPECT_NE(cached.params, versions[cached.version]) << "replayed, not handed the server's copy";
  }
  std::printf("d = %zu: replay record %llu bytes per round vs full model %llu bytes\n", kDim + 1,
              static_cast<unsigned long long>(replay_bytes[1]),
              static_cast<unsigned long long>(model_bytes));
}

}  // namespace
}  // namespace fl::internal
