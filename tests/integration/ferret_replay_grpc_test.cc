// Ferret's downlink by replay over real gRPC with TLS: a real Coordinator running the
// Ferret strategy (SQLite files) behind fl-server's service, and ClientRuntime clients
// with the plain C++ linear trainer behind GrpcLink.
//
// Who is selected when is driven by events, never by the machine's speed: the
// coordinator's clock is a ManualClockEnv the test advances, the server's deadline ticker
// is off, and the test calls Coordinator::Poll() at the moment a deadline is meant to
// have passed.

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "client/client_runtime.h"
#include "examples/linear_trainer.h"
#include "grpc_fixture.h"
#include "tests/testing/manual_clock_env.h"

namespace fl::internal {
namespace {

constexpr size_t kDim = 50000;

// Round deadline and client timeout on the manual clock, and a step past both.
constexpr std::chrono::seconds kRoundDeadline(60);
constexpr std::chrono::seconds kClientTimeout(30);
constexpr std::chrono::seconds kPastDeadline(61);
// Only keeps a broken run from hanging: every wait below ends on an event long before.
constexpr std::chrono::seconds kSafetyCap(120);

bool BitwiseEqual(const ParamSet& a, const ParamSet& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class FerretReplayGrpcTest : public GrpcFixture {
 protected:
  // The algorithm config; a test may add keys to extra_overrides_ before starting.
  std::vector<std::string> Overrides() const {
    std::vector<std::string> o = {"algorithm.name=ferret", "train.local_steps=2",
                                  "train.batch_size=8",    "train.lr=2e-6",
                                  "ferret.server_lr=0.5",  "ferret.threads=3"};
    o.insert(o.end(), extra_overrides_.begin(), extra_overrides_.end());
    return o;
  }

  // `saving` is how many times smaller than a full model the replayed records must be.
  void MissFiveRoundsAndCatchUpByReplay(uint64_t saving);

  std::vector<std::string> extra_overrides_;

  void StartFerret(const CoordinatorOptions& o) {
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", Overrides());
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(*config);
    ASSERT_TRUE(strategy.ok()) << strategy.status().ToString();
    Layout layout;
    layout.Add("weight", {static_cast<int64_t>(kDim)});
    layout.Add("bias", {1});
    auto coordinator = Coordinator::Create(o, std::move(strategy).value(), ParamSet(layout));
    ASSERT_TRUE(coordinator.ok()) << coordinator.status().ToString();
    coordinator_ = std::move(coordinator).value();
    coordinator_->SetRoundCallback([this](const RoundSummary& s, const ModelSnapshot& m) {
      std::lock_guard<std::mutex> lock(mu_);
      versions_[m.version] = m.params;
      replay_bytes_[m.version] = s.replay_bytes;
    });
    versions_[0] = coordinator_->CurrentModel().params;
    full_model_bytes_ = coordinator_->CurrentModel().wire_bytes;
    GrpcServerOptions s = TlsServerOptions(o);
    // No ticker: the test calls coordinator_->Poll() itself, after moving the clock.
    s.poll_interval = std::chrono::hours(1);
    auto server = StartGrpcServer(s, coordinator_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }

  static std::unique_ptr<examples::LinearTrainer> MakeTrainer(uint64_t seed) {
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 16, seed, &x, &y);
    return std::make_unique<examples::LinearTrainer>(kDim, std::move(x), std::move(y));
  }

  // Long-polls until the server hands out a task (the server answers "wait" every
  // max_poll_wait while none is ready).
  static Result<Task> PullUntilTask(ClientRuntime& runtime) {
    const auto give_up = std::chrono::steady_clock::now() + kSafetyCap;
    while (true) {
      FL_ASSIGN_OR_RETURN(Task task, runtime.Pull(milliseconds(2000)));
      if (task.kind != TaskKind::kWait) return task;
      if (std::chrono::steady_clock::now() >= give_up) {
        return Status::DeadlineExceeded("no task after the " + std::to_string(kSafetyCap.count()) +
                                        " s safety cap: the expected selection never happened");
      }
    }
  }

  // Pulls and runs one training task, which must be for `round`.
  ExecuteReport RunRound(ClientRuntime& runtime, Trainer& trainer, uint64_t round) {
    Result<Task> task = PullUntilTask(runtime);
    if (!task.ok()) {
      ADD_FAILURE() << "round " << round << ": " << task.status().ToString();
      return ExecuteReport{};
    }
    EXPECT_EQ(task->kind, TaskKind::kTrain);
    EXPECT_EQ(task->round, round);
    EXPECT_EQ(task->algorithm, "ferret");
    CancelToken cancel;
    Result<ExecuteReport> report = runtime.Execute(*task, trainer, cancel);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : ExecuteReport{};
  }

  ManualClockEnv clock_;
  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<const ParamSet>> versions_;
  std::map<uint64_t, uint64_t> replay_bytes_;
  uint64_t full_model_bytes_ = 0;
};

// Client b trains round 1, misses rounds 2 to 6 (client a runs them, replaying one
// record per round), and at round 7 catches up from version 0 to 6 by replay.
void FerretReplayGrpcTest::MissFiveRoundsAndCatchUpByReplay(uint64_t saving) {
  CoordinatorOptions o = Options();
  o.num_rounds = 7;
  o.min_clients = 1;
  o.min_updates = 1;
  // A client silent for kClientTimeout drops out of selection; a round short of updates
  // at its deadline widens its selection to the clients that are around.
  o.env = &clock_;
  o.round_deadline = kRoundDeadline;
  o.client_timeout = kClientTimeout;
  o.max_update_bytes = 1 << 20;
  StartFerret(o);

  std::unique_ptr<GrpcLink> link_a = Link();
  std::unique_ptr<GrpcLink> link_b = Link();
  ClientRuntime a(link_a.get(), {.enrollment_token = kEnrollment, .client_name = "client-a"});
  ClientRuntime b(link_b.get(), {.enrollment_token = kEnrollment, .client_name = "client-b"});
  auto trainer_a = MakeTrainer(1);
  auto trainer_b = MakeTrainer(2);

  // Round 1: b alone, from the full initial model. Its update closes the round, and
  // round 2 opens at once for b, the only client.
  ASSERT_TRUE(b.Join().ok());
  ExecuteReport b1 = RunRound(b, *trainer_b, 1);
  EXPECT_EQ(b1.replayed_versions, 0u);
  EXPECT_EQ(b1.bytes_down, full_model_bytes_);

  // Then b goes quiet past its timeout and round 2's deadline. a joins; at the deadline
  // round 2 widens to a, the one client around.
  clock_.Advance(kPastDeadline);
  ASSERT_TRUE(a.Join().ok());
  coordinator_->Poll();
  // a runs round 2, which closes at its next deadline (b never reports), then alone
  // rounds 3 to 6, each time replaying the one record it lacks.
  for (uint64_t round = 2; round <= 6; ++round) {
    ExecuteReport r = RunRound(a, *trainer_a, round);
    if (round == 2) {
      EXPECT_EQ(r.replayed_versions, 0u);
      EXPECT_EQ(r.bytes_down, full_model_bytes_);
      clock_.Advance(kPastDeadline);
      coordinator_->Poll();
      ASSERT_EQ(coordinator_->CurrentModel().version, 2u) << "round 2 did not close";
    } else {
      EXPECT_EQ(r.replayed_versions, 1u) << "round " << round;
      std::lock_guard<std::mutex> lock(mu_);
      EXPECT_EQ(r.bytes_down, replay_bytes_[round - 1]);
    }
  }

  // Round 7 is a's, but a stays away; b comes back (a heartbeat), and at the deadline
  // round 7 widens to b. b missed rounds 2 to 6 and still holds version 0, the model it
  // trained round 1 from; it needs version 6, so it downloads the six records of
  // versions 1 to 6 and replays them.
  clock_.Advance(kPastDeadline);
  ASSERT_TRUE(link_b->Heartbeat().ok());
  coordinator_->Poll();
  ExecuteReport b7 = RunRound(b, *trainer_b, 7);
  EXPECT_EQ(b7.replayed_versions, 6u);
  uint64_t six_records = 0;
  std::shared_ptr<const ParamSet> server_v6;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t v = 1; v <= 6; ++v) six_records += replay_bytes_.at(v);
    server_v6 = versions_.at(6);
  }
  EXPECT_EQ(b7.bytes_down, six_records);
  EXPECT_LT(b7.bytes_down * saving, full_model_bytes_);
  const ModelSnapshot& cached = b.cached_model();
  ASSERT_NE(cached.params, nullptr);
  EXPECT_EQ(cached.version, 6u);
  EXPECT_TRUE(BitwiseEqual(*cached.params, *server_v6))
      << "the replayed model differs from the server's version 6";
  std::printf(
      "d = %zu: catching up 6 versions (5 rounds missed) by replay took %llu bytes, a full model "
      "download %llu bytes (%.1fx less)\n",
      kDim + 1, static_cast<unsigned long long>(b7.bytes_down),
      static_cast<unsigned long long>(full_model_bytes_),
      static_cast<double>(full_model_bytes_) / static_cast<double>(b7.bytes_down));

  // a never reports: round 7 closes with b's update at its deadline, the last round.
  clock_.Advance(kPastDeadline);
  coordinator_->Poll();
  ASSERT_TRUE(coordinator_->WaitUntilFinished(kSafetyCap)) << "the federation did not finish";
  EXPECT_EQ(coordinator_->CurrentModel().version, 7u);
  // The records are in the server's SQLite file for every round.
  StoreOptions so;
  so.path = (dir_ / "state" / "state.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  ASSERT_TRUE(store.ok());
  Result<std::vector<ReplayRecord>> records = (*store)->GetReplayRecords(1, 7);
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(records->size(), 7u);
}

TEST_F(FerretReplayGrpcTest, ClientThatMissedFiveRoundsCatchesUpByReplayBitwise) {
  MissFiveRoundsAndCatchUpByReplay(10);  // K = 200, float32 uploads
}

TEST_F(FerretReplayGrpcTest, Int4UploadsFromALargePoolAggregateAndReplayBitwise) {
  // Each client draws 300 of 2^16 bases per block and sends 4-bit codes with its
  // selection seed; uploads are validated and aggregated as float32 tables are.
  extra_overrides_ = {"ferret.num_bases=65536", "ferret.bases_per_block=300",
                      "ferret.upload_format=int4", "ferret.seed_policy=fresh"};
  // Replay records are float32 tables with a K-bit map per block: 16 KiB of maps per
  // round at K = 2^16, so replay saves less here than with a small pool.
  MissFiveRoundsAndCatchUpByReplay(1);
  StoreOptions so;
  so.path = (dir_ / "state" / "state.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  ASSERT_TRUE(store.ok());
  size_t uploads = 0;
  for (uint64_t round = 1; round <= 7; ++round) {
    Result<std::vector<LedgerEntry>> ledger = (*store)->LedgerForRound(round);
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    for (const LedgerEntry& e : *ledger) {
      EXPECT_EQ(e.status_code, 0) << "round " << round << ": " << e.reason;
      // A 44-byte header, then per block (2 here) 9 bytes and 150 bytes of codes.
      EXPECT_LE(e.bytes, 44u + 2 * (9 + 150)) << "round " << round;
      ++uploads;
    }
  }
  EXPECT_EQ(uploads, 7u);
}

// Serves FetchModel with replay records whose framing is broken in one chosen way.
class BrokenReplayService final : public v1::FederatedLearning::Service {
 public:
  enum class Mode { kIntact, kSizesTooLong, kTooFewRecords, kWrongBase, kEmptyRecord };
  // Set by the test while the server's threads serve calls.
  void set_mode(Mode mode) { mode_.store(mode); }

  grpc::Status FetchModel(grpc::ServerContext*, const v1::FetchModelRequest* request,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override {
    const Mode mode = mode_.load();
    const std::string records = "first-record" + std::string("second");
    v1::ModelChunk chunk;
    v1::ModelHeader* h = chunk.mutable_header();
    h->set_version(request->version());
    h->set_format(v1::MODEL_FORMAT_REPLAY);
    h->set_total_bytes(records.size());
    h->set_sha256(Sha256(records));
    h->set_replay_base_version(mode == Mode::kWrongBase ? 0 : request->have_version());
    h->add_replay_record_bytes(mode == Mode::kEmptyRecord ? 0 : 12);
    if (mode != Mode::kTooFewRecords) {
      h->add_replay_record_bytes(mode == Mode::kSizesTooLong ? 7 : 6);
    }
    writer->Write(chunk);
    chunk.set_data(records);
    writer->Write(chunk);
    return grpc::Status::OK;
  }

 private:
  std::atomic<Mode> mode_{Mode::kIntact};
};

TEST_F(FerretReplayGrpcTest, LinkChecksReplayFraming) {
  BrokenReplayService service;
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*Env::Default()->ReadFile(certs_.server_key),
                                    *Env::Default()->ReadFile(certs_.server_cert)});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  GrpcLinkOptions o = LinkOptions();
  o.target = "localhost:" + std::to_string(port);
  auto link = GrpcLink::Create(o);
  ASSERT_TRUE(link.ok());

  using Mode = BrokenReplayService::Mode;
  Result<ModelSnapshot> intact = (*link)->FetchModelOrReplay(5, 3);
  ASSERT_TRUE(intact.ok()) << intact.status().ToString();
  ASSERT_TRUE(intact->is_replay());
  EXPECT_EQ(intact->replay_base_version, 3u);
  ASSERT_EQ(intact->replay_records.size(), 2u);
  EXPECT_EQ(*intact->replay_records[0], "first-record");
  EXPECT_EQ(*intact->replay_records[1], "second");
  EXPECT_EQ(intact->wire_bytes, 18u);
  // A replay answer to a request that named no version held is refused too.
  EXPECT_EQ((*link)->FetchModel(5).status().code(), StatusCode::kDataLoss);
  for (Mode mode :
       {Mode::kSizesTooLong, Mode::kTooFewRecords, Mode::kWrongBase, Mode::kEmptyRecord}) {
    service.set_mode(mode);
    Result<ModelSnapshot> bad = (*link)->FetchModelOrReplay(5, 3);
    ASSERT_FALSE(bad.ok()) << "mode " << static_cast<int>(mode);
    EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
  }
  server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace fl::internal
