// Coordinator on real SQLite files with the real FedAvg strategy and a plain C++
// trainer, driven through InProcessLink exactly as fl-sim drives it.

#include "server/coordinator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "examples/linear_trainer.h"
#include "simulations/in_process_link.h"
#include "tests/testing/manual_clock_env.h"

namespace fl::internal {
namespace {

constexpr size_t kDim = 8;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_coordinator_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CoordinatorOptions Options(uint64_t rounds) {
    CoordinatorOptions o;
    o.state_dir = dir_.string();
    o.num_rounds = rounds;
    o.min_clients = 3;
    o.client_fraction = 1.0;
    o.seed = 7;
    o.env = &env_;
    return o;
  }

  std::unique_ptr<Strategy> FedAvg(const std::vector<std::string>& overrides = {}) {
    std::vector<std::string> all = {"train.lr=0.05", "train.batch_size=8"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", all);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> s = CreateStrategy(*config);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  ParamSet Initial() {
    Layout layout;
    layout.Add("weight", {kDim});
    layout.Add("bias", {1});
    return ParamSet(layout);
  }

  std::unique_ptr<examples::LinearTrainer> MakeTrainer(uint64_t seed) {
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 64, seed, &x, &y);
    return std::make_unique<examples::LinearTrainer>(kDim, std::move(x), std::move(y));
  }

  // Trains one client's update for the open round without pushing it.
  // Links for client-0 .. client-<n-1>, each joined (without an enrollment token).
  std::vector<std::unique_ptr<InProcessLink>> JoinedLinks(Coordinator* c, int n) {
    std::vector<std::unique_ptr<InProcessLink>> links;
    for (int i = 0; i < n; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c));
      Result<JoinReply> joined = links.back()->Join("", "client-" + std::to_string(i));
      EXPECT_TRUE(joined.ok()) << joined.status().ToString();
    }
    return links;
  }

  Payload TrainUpdate(InProcessLink& link, examples::LinearTrainer& trainer) {
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

  ManualClockEnv env_;
  std::filesystem::path dir_;
};

TEST_F(CoordinatorTest, RoundsCompleteAndModelLearns) {
  auto coordinator = Coordinator::Create(Options(5), FedAvg(), Initial());
  ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
  std::vector<std::unique_ptr<InProcessLink>> links;
  std::vector<std::unique_ptr<ClientRuntime>> runtimes;
  std::vector<std::unique_ptr<examples::LinearTrainer>> trainers;
  for (int i = 0; i < 3; ++i) {
    links.push_back(std::make_unique<InProcessLink>(coordinator->get()));
    ClientRuntimeOptions options;
    options.client_name = "client-" + std::to_string(i);
    runtimes.push_back(std::make_unique<ClientRuntime>(links.back().get(), options));
    trainers.push_back(MakeTrainer(100 + i));
    ASSERT_TRUE(runtimes.back()->Join().ok());
  }
  double first_loss = -1, last_loss = -1;
  int rounds = 0;
  std::vector<RoundSummary> summaries;
  (*coordinator)->SetRoundCallback(
      [&](const RoundSummary& s, const ModelSnapshot&) { summaries.push_back(s); });
  while (true) {
    bool any = false, done = false;
    for (int i = 0; i < 3; ++i) {
      Result<Task> t = runtimes[i]->Pull(std::chrono::milliseconds(0));
      ASSERT_TRUE(t.ok());
      if (t->kind == TaskKind::kDone) done = true;
      if (t->kind != TaskKind::kTrain) continue;
      CancelToken cancel;
      Result<ExecuteReport> r = runtimes[i]->Execute(*t, *trainers[i], cancel);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      if (first_loss < 0) first_loss = r->train.mean_loss;
      last_loss = r->train.mean_loss;
      any = true;
    }
    if (done) break;
    ASSERT_TRUE(any) << "no client got a task";
    ++rounds;
  }
  EXPECT_EQ(rounds, 5);
  ASSERT_EQ(summaries.size(), 5u);
  EXPECT_EQ(summaries.back().new_version, 5u);
  EXPECT_EQ(summaries[0].num_updates, 3u);
  EXPECT_LT(last_loss, 0.25 * first_loss) << "FedAvg on linear regression should converge";
  EXPECT_EQ((*coordinator)->GetStatus().model_version, 5u);
  EXPECT_TRUE((*coordinator)->WaitUntilFinished(std::chrono::milliseconds(10)));
}

TEST_F(CoordinatorTest, SelectionDoesNotDependOnJoinOrder) {
  auto selected_names = [&](const std::vector<std::string>& order) {
    std::filesystem::remove_all(dir_);
    CoordinatorOptions o = Options(1);
    o.min_clients = 5;
    o.clients_per_round = 2;
    auto c = Coordinator::Create(o, FedAvg(), Initial());
    EXPECT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    std::set<std::string> names;
    for (const auto& name : order) {
      links.push_back(std::make_unique<InProcessLink>(c->get()));
      EXPECT_TRUE(links.back()->Join("", name).ok());
    }
    for (size_t i = 0; i < order.size(); ++i) {
      Result<Task> t = links[i]->PullTask(std::chrono::milliseconds(0));
      if (t.ok() && t->kind == TaskKind::kTrain) names.insert(order[i]);
    }
    return names;
  };
  auto a = selected_names({"a", "b", "c", "d", "e"});
  auto b = selected_names({"e", "c", "a", "d", "b"});
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
}

TEST_F(CoordinatorTest, ResumesOpenRoundAndFoldsAcknowledgedUpdatesExactlyOnce) {
  // Reference: an uninterrupted round with the same three updates.
  std::vector<Payload> payloads;
  ParamSet reference;
  {
    auto c = Coordinator::Create(Options(1), FedAvg(), Initial());
    ASSERT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
    for (int i = 0; i < 3; ++i) {
      auto trainer = MakeTrainer(200 + i);
      payloads.push_back(TrainUpdate(*links[i], *trainer));
    }
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[i]).ok());
    reference = *(*c)->CurrentModel().params;
    EXPECT_EQ((*c)->CurrentModel().version, 1u);
  }
  std::filesystem::remove_all(dir_);

  std::vector<std::string> tokens;
  {
    auto c = Coordinator::Create(Options(1), FedAvg(), Initial());
    ASSERT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    for (int i = 0; i < 3; ++i) {
      links.push_back(std::make_unique<InProcessLink>(c->get()));
      Result<JoinReply> j = links.back()->Join("", "client-" + std::to_string(i));
      ASSERT_TRUE(j.ok());
      tokens.push_back(j->session_token);
    }
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(links[i]->PushUpdate(payloads[i]).ok());
    EXPECT_EQ((*c)->GetStatus().updates_in_round, 2u);
    // The coordinator goes away with the round open (the process test does kill -9).
  }
  auto c = Coordinator::Create(Options(1), FedAvg(), Initial());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ServerStatusInfo status = (*c)->GetStatus();
  EXPECT_EQ(status.round, 1u);
  EXPECT_EQ(status.updates_in_round, 2u);
  // Sessions survive the restart.
  Result<Session> s0 = (*c)->Authenticate(tokens[0]);
  Result<Session> s2 = (*c)->Authenticate(tokens[2]);
  ASSERT_TRUE(s0.ok() && s2.ok());
  // A client that never saw its acknowledgement retries: acknowledged, not refolded.
  Result<PushAck> again = (*c)->PushUpdate(*s0, payloads[0]);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  Result<PushAck> last = (*c)->PushUpdate(*s2, payloads[2]);
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  ModelSnapshot model = (*c)->CurrentModel();
  EXPECT_EQ(model.version, 1u);
  ASSERT_EQ(model.params->size(), reference.size());
  for (size_t i = 0; i < reference.size(); ++i) {
    EXPECT_EQ(model.params->data()[i], reference.data()[i]) << "parameter " << i;
  }
}

TEST_F(CoordinatorTest, BadUpdatesAreRejectedAndRecordedAndTheRoundGoesOn) {
  auto c = Coordinator::Create(Options(1), FedAvg(), Initial());
  ASSERT_TRUE(c.ok());
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  auto trainer = MakeTrainer(5);
  Payload good = TrainUpdate(*links[0], *trainer);

  auto expect_code = [&](Payload p, StatusCode code) {
    Result<PushAck> r = links[0]->PushUpdate(p);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  };
  Payload wrong_round = good;
  wrong_round.meta.round = 9;
  expect_code(wrong_round, StatusCode::kFailedPrecondition);
  Payload wrong_version = good;
  wrong_version.meta.base_version = 3;
  expect_code(wrong_version, StatusCode::kFailedPrecondition);
  Payload bad_sha = good;
  bad_sha.bytes[0] ^= 1;
  expect_code(bad_sha, StatusCode::kDataLoss);
  Payload nan = good;
  float v = std::nanf("");
  std::memcpy(nan.bytes.data(), &v, sizeof(v));
  nan.meta.sha256 = Sha256(nan.bytes);
  expect_code(nan, StatusCode::kInvalidArgument);
  Payload wrong_layout = good;
  wrong_layout.meta.layout_hash ^= 1;
  expect_code(wrong_layout, StatusCode::kInvalidArgument);
  Payload truncated = good;
  truncated.bytes.resize(truncated.bytes.size() - 4);
  truncated.meta.sha256 = Sha256(truncated.bytes);
  expect_code(truncated, StatusCode::kInvalidArgument);
  Payload other_client = good;
  other_client.meta.client_id = 12345;
  expect_code(other_client, StatusCode::kPermissionDenied);

  EXPECT_EQ((*c)->GetStatus().updates_in_round, 0u);
  for (int i = 0; i < 3; ++i) {
    Payload p = i == 0 ? good : TrainUpdate(*links[i], *trainer);
    ASSERT_TRUE(links[i]->PushUpdate(p).ok());
  }
  EXPECT_EQ((*c)->CurrentModel().version, 1u);
  EXPECT_TRUE((*c)->CurrentModel().params->AllFinite());

  Result<std::unique_ptr<Store>> store = Store::Open({.path = (dir_ / "state.db").string()});
  ASSERT_TRUE(store.ok());
  Result<std::vector<LedgerEntry>> ledger = (*store)->LedgerForRound(1);
  ASSERT_TRUE(ledger.ok());
  std::map<int, int> by_code;
  for (const auto& e : *ledger) by_code[e.status_code]++;
  EXPECT_EQ(by_code[0], 3);
  // The wrong-round update is recorded under the round it claimed.
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kFailedPrecondition)], 1);
  Result<std::vector<LedgerEntry>> claimed = (*store)->LedgerForRound(9);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].status_code, static_cast<int>(StatusCode::kFailedPrecondition));
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kDataLoss)], 1);
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kInvalidArgument)], 3);
  EXPECT_EQ(by_code[static_cast<int>(StatusCode::kPermissionDenied)], 1);
}

// The codes fl/server_link.h documents for InProcessLink (GrpcTransportTest checks the
// same ones over gRPC).
TEST_F(CoordinatorTest, InProcessLinkReturnsTheDocumentedCodes) {
  CoordinatorOptions o = Options(1);
  o.enrollment_token = "s3cret";
  auto c = Coordinator::Create(o, FedAvg(), Initial());
  ASSERT_TRUE(c.ok());
  InProcessLink link(c->get());
  // Every call but Join needs a session.
  EXPECT_EQ(link.PullTask(std::chrono::milliseconds(0)).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(link.FetchModel(0).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.FetchModelOrReplay(1, 0).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.PushUpdate(Payload()).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.Heartbeat().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.GetStatus().status().code(), StatusCode::kUnauthenticated);
  // Join: a wrong token is Unauthenticated, a bad name InvalidArgument.
  EXPECT_EQ(link.Join("wrong", "client-0").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.GetStatus().status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(link.Join("s3cret", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(link.Join("s3cret", std::string(129, 'x')).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(link.Join("s3cret", "tab\tname").status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(link.Join("s3cret", "client-0").ok());
  EXPECT_TRUE(link.Heartbeat().ok());
  EXPECT_TRUE(link.GetStatus().ok());
  // Only the current version is served.
  EXPECT_EQ(link.FetchModel(3).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(link.FetchModel(0).ok());
}

// The SHA-256 rule of crypto/update_digest.h, in process: the link fills a missing digest,
// the coordinator refuses a wrong one (or one bypassing the link) with DataLoss.
TEST_F(CoordinatorTest, InProcessSha256RuleMatchesGrpc) {
  auto c = Coordinator::Create(Options(1), FedAvg(), Initial());
  ASSERT_TRUE(c.ok());
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  auto trainer = MakeTrainer(5);
  Payload good = TrainUpdate(*links[0], *trainer);
  ASSERT_EQ(good.meta.sha256, Sha256(good.bytes)) << "learners seal their payloads";

  Payload wrong = good;
  wrong.meta.sha256 = Sha256("something else");
  Result<PushAck> r = links[0]->PushUpdate(wrong);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();

  Payload short_digest = good;
  short_digest.meta.sha256 = "abc";
  r = links[0]->PushUpdate(short_digest);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();

  // Straight to the coordinator, nobody fills the digest: refused.
  Payload unsealed = good;
  unsealed.meta.sha256.clear();
  Result<Session> session = (*c)->Authenticate(links[0]->Join("", "client-0")->session_token);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  r = (*c)->PushUpdate(*session, unsealed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();

  // Through the link, the sender fills it: accepted.
  r = links[0]->PushUpdate(unsealed);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->duplicate);
  EXPECT_EQ((*c)->GetStatus().updates_in_round, 1u);
}

TEST_F(CoordinatorTest, DeadlineClosesWithEnoughUpdatesOrWidensSelection) {
  CoordinatorOptions o = Options(2);
  o.min_clients = 3;
  o.clients_per_round = 2;
  o.min_updates = 1;
  o.round_deadline = std::chrono::seconds(30);
  auto c = Coordinator::Create(o, FedAvg(), Initial());
  ASSERT_TRUE(c.ok());
  std::vector<std::unique_ptr<InProcessLink>> links = JoinedLinks(c->get(), 3);
  auto trainer = MakeTrainer(9);
  int pushed = 0;
  for (int i = 0; i < 3 && pushed == 0; ++i) {
    Result<Task> t = links[i]->PullTask(std::chrono::milliseconds(0));
    if (t->kind != TaskKind::kTrain) continue;
    ASSERT_TRUE(links[i]->PushUpdate(TrainUpdate(*links[i], *trainer)).ok());
    ++pushed;
  }
  (*c)->Poll();
  EXPECT_EQ((*c)->CurrentModel().version, 0u) << "closed before the deadline";
  env_.Advance(std::chrono::seconds(31));
  (*c)->Poll();
  EXPECT_EQ((*c)->CurrentModel().version, 1u) << "one update meets min_updates at the deadline";

  // Round 2 with min_updates 3 and only 2 selected: at the deadline the third client is added.
  std::filesystem::remove_all(dir_);
  o.min_updates = 3;
  o.num_rounds = 1;
  auto c2 = Coordinator::Create(o, FedAvg(), Initial());
  ASSERT_TRUE(c2.ok());
  std::vector<std::unique_ptr<InProcessLink>> links2;
  for (int i = 0; i < 3; ++i) {
    links2.push_back(std::make_unique<InProcessLink>(c2->get()));
    ASSERT_TRUE(links2.back()->Join("", "client-" + std::to_string(i)).ok());
  }
  EXPECT_EQ((*c2)->GetStatus().clients_selected, 2u);
  env_.Advance(std::chrono::seconds(31));
  (*c2)->Poll();
  EXPECT_EQ((*c2)->GetStatus().clients_selected, 3u);
  EXPECT_EQ((*c2)->CurrentModel().version, 0u);
}

TEST_F(CoordinatorTest, JoinChecksTheEnrollmentToken) {
  CoordinatorOptions o = Options(1);
  o.enrollment_token = "secret";
  auto c = Coordinator::Create(o, FedAvg(), Initial());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Join("wrong", "a").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ((*c)->Join("secret", "").status().code(), StatusCode::kInvalidArgument);
  Result<JoinReply> ok = (*c)->Join("secret", "a");
  ASSERT_TRUE(ok.ok());
  Result<JoinReply> again = (*c)->Join("secret", "a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ok->client_id, again->client_id);
  EXPECT_EQ((*c)->Authenticate("nonsense").status().code(), StatusCode::kUnauthenticated);
  // A re-join revokes the name's earlier session.
  EXPECT_EQ((*c)->Authenticate(ok->session_token).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE((*c)->Authenticate(again->session_token).ok());
}

std::vector<std::string> ClientNames(size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back("client-" + std::to_string(i));
  return names;
}

TEST_F(CoordinatorTest, RegisteringManyClientsIsOneStoreTransaction) {
  CoordinatorOptions o = Options(1);
  constexpr size_t kClients = 20000;
  o.min_clients = kClients + 1;  // no round opens, so only the registration writes
  auto c = Coordinator::Create(o, FedAvg(), Initial());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // The counter sees every commit: joining costs a transaction per statement.
  const uint64_t before_joins = (*c)->StoreTransactions();
  JoinedLinks(c->get(), 10);
  EXPECT_GE((*c)->StoreTransactions() - before_joins, 10u);

  const uint64_t before = (*c)->StoreTransactions();
  Result<std::vector<uint64_t>> ids = (*c)->RegisterClients(ClientNames(kClients));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ((*c)->StoreTransactions() - before, 1u);
  ASSERT_EQ(ids->size(), kClients);
  EXPECT_EQ((*c)->GetStatus().clients_known, kClients);

  // The store holds every client under its returned id; the ten that joined first
  // keep theirs.
  StoreOptions so;
  so.path = (dir_ / "state.db").string();
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::vector<ClientRecord>> rows = (*store)->ListClients();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), kClients);
  std::map<std::string, uint64_t> stored;
  for (const ClientRecord& r : *rows) stored[r.name] = r.id;
  for (size_t i = 0; i < kClients; ++i) {
    ASSERT_EQ(stored.at("client-" + std::to_string(i)), (*ids)[i]) << i;
  }
  // A network Join of a registered name is the same client.
  Result<JoinReply> joined = (*c)->Join("", "client-12345");
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined->client_id, (*ids)[12345]);
  // One bad name registers nothing.
  std::vector<std::string> bad = {"fine-1", "not fine"};
  EXPECT_EQ((*c)->RegisterClients(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->GetStatus().clients_known, kClients);
}

TEST_F(CoordinatorTest, RegisteredClientsAreSelectedAndTrainLikeJoinedOnes) {
  constexpr size_t kClients = 300;
  auto selected_names = [&](bool registered) {
    std::filesystem::remove_all(dir_);
    CoordinatorOptions o = Options(1);
    o.min_clients = kClients;
    o.clients_per_round = 7;
    auto c = Coordinator::Create(o, FedAvg(), Initial());
    EXPECT_TRUE(c.ok());
    std::vector<std::unique_ptr<InProcessLink>> links;
    if (registered) {
      EXPECT_TRUE((*c)->RegisterClients(ClientNames(kClients)).ok());
    } else {
      links = JoinedLinks(c->get(), static_cast<int>(kClients));
    }
    std::vector<uint64_t> ids = (*c)->SelectedClients();
    EXPECT_EQ(ids.size(), 7u);
    std::set<std::string> names;
    for (uint64_t id : ids) names.insert("client-" + std::to_string(id - 1));
    if (registered) {
      // A registered client's link needs no token: it pulls, trains and pushes.
      InProcessLink link(c->get(), nullptr, Session{ids.front()});
      Result<JoinReply> join = link.Join("", "ignored");
      EXPECT_TRUE(join.ok());
      EXPECT_EQ(join->client_id, ids.front());
      std::unique_ptr<examples::LinearTrainer> trainer = MakeTrainer(1);
      Payload update = TrainUpdate(link, *trainer);
      update.meta.client_id = ids.front();
      EXPECT_TRUE(link.PushUpdate(update).ok());
      EXPECT_EQ((*c)->GetStatus().updates_in_round, 1u);
      // Not selected: told to wait, as a joined client would be.
      uint64_t other = 1;
      while (std::count(ids.begin(), ids.end(), other) > 0) ++other;
      InProcessLink idle(c->get(), nullptr, Session{other});
      Result<Task> wait = idle.PullTask(std::chrono::milliseconds(0));
      EXPECT_TRUE(wait.ok());
      EXPECT_EQ(wait->kind, TaskKind::kWait);
    }
    return names;
  };
  const std::set<std::string> joined = selected_names(false);
  const std::set<std::string> registered = selected_names(true);
  EXPECT_EQ(joined.size(), 7u);
  EXPECT_EQ(joined, registered);
}

// fl-sim under mpirun: updates folded into a partial aggregate elsewhere, merged into the
// open round, give the round every client pushing would; a bad merge changes nothing.
TEST_F(CoordinatorTest, RemotePartialMergesLikePushedUpdates) {
  CoordinatorOptions pushed_options = Options(1);
  pushed_options.durable = false;
  pushed_options.state_dir = (dir_ / "pushed").string();
  CoordinatorOptions merged_options = pushed_options;
  merged_options.state_dir = (dir_ / "merged").string();
  auto pushed = Coordinator::Create(pushed_options, FedAvg(), Initial());
  auto merged = Coordinator::Create(merged_options, FedAvg(), Initial());
  ASSERT_TRUE(pushed.ok() && merged.ok());
  auto pushed_links = JoinedLinks(pushed->get(), 3);
  auto merged_links = JoinedLinks(merged->get(), 3);
  std::vector<Payload> updates;
  for (int i = 0; i < 3; ++i)
    updates.push_back(TrainUpdate(*pushed_links[i], *MakeTrainer(50 + i)));
  std::vector<RoundSummary> summaries;
  for (Coordinator* c : {pushed->get(), merged->get()}) {
    c->SetRoundCallback(
        [&](const RoundSummary& s, const ModelSnapshot&) { summaries.push_back(s); });
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pushed_links[i]->PushUpdate(updates[i]).ok());

  // Clients 1 and 2 fold on "another rank"; client 0 pushes as usual.
  ASSERT_TRUE(merged_links[0]->PushUpdate(updates[0]).ok());
  std::unique_ptr<RoundAggregator> rank = FedAvg()->NewRoundAggregator(Initial(), 1);
  std::vector<Coordinator::RemoteUpdate> remote;
  for (int i = 1; i < 3; ++i) {
    ASSERT_TRUE(rank->Accumulate(updates[i]).ok());
    Coordinator::RemoteUpdate u;
    u.client_name = "client-" + std::to_string(i);
    u.bytes = updates[i].bytes.size();
    u.weight = updates[i].meta.weight;
    u.sha256 = updates[i].meta.sha256;
    remote.push_back(u);
  }
  Result<std::string> partial = rank->SerializePartial();
  ASSERT_TRUE(partial.ok());
  Coordinator& c = **merged;
  EXPECT_EQ(c.MergeRemotePartial(2, remote, *partial).code(), StatusCode::kFailedPrecondition);
  std::vector<Coordinator::RemoteUpdate> twice = {remote[0], remote[0]};
  EXPECT_EQ(c.MergeRemotePartial(1, twice, *partial).code(), StatusCode::kFailedPrecondition);
  std::vector<Coordinator::RemoteUpdate> again = {remote[0]};
  again[0].client_name = "client-0";  // already pushed
  EXPECT_EQ(c.MergeRemotePartial(1, again, *partial).code(), StatusCode::kFailedPrecondition);
  again[0].client_name = "client-9";  // never joined
  EXPECT_EQ(c.MergeRemotePartial(1, again, *partial).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.MergeRemotePartial(1, remote, partial->substr(1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(c.GetStatus().updates_in_round, 1u);
  EXPECT_TRUE(summaries.size() == 1) << "only the pushed coordinator closed its round";

  ASSERT_TRUE(c.MergeRemotePartial(1, remote, *partial).ok());
  ASSERT_EQ(summaries.size(), 2u);
  EXPECT_EQ(summaries[1].num_updates, summaries[0].num_updates);
  EXPECT_EQ(summaries[1].bytes_up, summaries[0].bytes_up);
  EXPECT_EQ(summaries[1].total_weight, summaries[0].total_weight);
  const ModelSnapshot a = (*pushed)->CurrentModel(), b = c.CurrentModel();
  ASSERT_EQ(a.version, 1u);
  ASSERT_EQ(b.version, 1u);
  EXPECT_EQ(std::memcmp(a.params->data(), b.params->data(), a.params->size() * sizeof(float)), 0);
}

TEST_F(CoordinatorTest, RemotePartialNeedsANonDurableCoordinator) {
  auto c = Coordinator::Create(Options(1), FedAvg(), Initial());  // durable
  ASSERT_TRUE(c.ok());
  auto links = JoinedLinks(c->get(), 3);
  Result<std::string> partial = FedAvg()->NewRoundAggregator(Initial(), 1)->SerializePartial();
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ((*c)->MergeRemotePartial(1, {}, *partial).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fl::internal
