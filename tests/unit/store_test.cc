#include "store/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace fl::internal {
namespace {

#define ASSERT_OK(expr)                                      \
  do {                                                       \
    const ::fl::Status fl_test_status_ = (expr);             \
    ASSERT_TRUE(fl_test_status_.ok()) << fl_test_status_.ToString(); \
  } while (0)

constexpr uint64_t kBig = std::numeric_limits<uint64_t>::max() - 7;  // above INT64_MAX

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fl_store_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state.db";
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Opens (or reopens) the store at path_, closing the previous handle first.
  void Open(bool durable = true) {
    store_.reset();
    StoreOptions options;
    options.path = path_;
    options.durable = durable;
    Result<std::unique_ptr<Store>> opened = Store::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }

  static RoundRecord OpenRound(uint64_t round, std::vector<uint64_t> selected) {
    RoundRecord r;
    r.round = round;
    r.base_version = round - 1;
    r.state = RoundState::kOpen;
    r.selected = std::move(selected);
    r.opened_at = 1000 + static_cast<int64_t>(round);
    return r;
  }

  static LedgerEntry Accepted(uint64_t round, uint64_t client, double weight) {
    LedgerEntry e;
    e.round = round;
    e.client_id = client;
    e.base_version = round - 1;
    e.bytes = 4096;
    e.weight = weight;
    e.sha256_hex = std::string(64, 'a');
    e.spool_path = "/spool/r" + std::to_string(round) + "_c" + std::to_string(client);
    e.created_at = 2000;
    return e;
  }

  static ModelRecord Model(uint64_t version, uint64_t round) {
    ModelRecord m;
    m.version = version;
    m.round = round;
    m.path = "/models/v" + std::to_string(version) + ".bin";
    m.sha256_hex = std::string(64, 'b');
    m.num_params = 101770;
    m.layout_hash = kBig - version;
    m.strategy_state = std::string("state\0with\xffnul", 14);
    m.created_at = 3000 + static_cast<int64_t>(version);
    return m;
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, CreatesVersionedSchemaAndDataSurvivesReopen) {
  Open();
  ASSERT_OK(store_->PutMeta("seed", "42"));
  Result<ClientRecord> alice = store_->UpsertClient("alice", 10);
  ASSERT_TRUE(alice.ok()) << alice.status().ToString();
  ASSERT_OK(store_->InsertRound(OpenRound(1, {alice->id})));
  ASSERT_OK(store_->InsertModel(Model(0, 0)));
  store_.reset();

  // The file is a WAL-mode SQLite database with our schema version, seen by a plain reader.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  auto pragma = [db](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr), SQLITE_OK) << sql;
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW) << sql;
    std::string value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    return value;
  };
  EXPECT_EQ(pragma("PRAGMA user_version"), "3");
  EXPECT_EQ(pragma("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(pragma("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                   "('clients','sessions','rounds','ledger','models','meta','round_metrics',"
                   "'replay_records')"),
            "8");
  sqlite3_close(db);

  Open();
  Result<std::optional<std::string>> seed = store_->GetMeta("seed");
  ASSERT_TRUE(seed.ok());
  ASSERT_TRUE(seed->has_value());
  EXPECT_EQ(**seed, "42");
  Result<std::optional<ClientRecord>> client = store_->GetClient(alice->id);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->has_value());
  EXPECT_EQ((*client)->name, "alice");
  Result<std::optional<RoundRecord>> round = store_->GetOpenRound();
  ASSERT_TRUE(round.ok());
  ASSERT_TRUE(round->has_value());
  EXPECT_EQ((*round)->round, 1u);
  EXPECT_EQ((*round)->selected, std::vector<uint64_t>{alice->id});
  Result<std::optional<ModelRecord>> model = store_->GetModel(0);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE(model->has_value());
}

TEST_F(StoreTest, InMemoryStoreWorks) {
  StoreOptions options;
  options.path = ":memory:";
  options.durable = false;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_OK((*store)->PutMeta("k", "v"));
  EXPECT_EQ(*(*store)->GetMeta("k").value(), "v");
}

TEST_F(StoreTest, UpsertClientsIsOneTransactionAndKeepsKnownIds) {
  Open();
  Result<ClientRecord> bob = store_->UpsertClient("bob", 100);
  ASSERT_TRUE(bob.ok());
  const uint64_t before = store_->committed_transactions();
  Result<std::vector<ClientRecord>> batch =
      store_->UpsertClients({"alice", "bob", "carol"}, 200);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(store_->committed_transactions() - before, 1u);
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_EQ((*batch)[0].name, "alice");
  EXPECT_EQ((*batch)[0].joined_at, 200);
  EXPECT_EQ((*batch)[1].id, bob->id);  // known: same id, first join kept
  EXPECT_EQ((*batch)[1].joined_at, 100);
  EXPECT_EQ((*batch)[1].last_seen, 200);
  EXPECT_NE((*batch)[2].id, (*batch)[0].id);
  for (const ClientRecord& r : *batch) {
    Result<std::optional<ClientRecord>> found = store_->FindClient(r.name);
    ASSERT_TRUE(found.ok() && found->has_value()) << r.name;
    EXPECT_EQ((*found)->id, r.id);
  }
  EXPECT_FALSE(store_->FindClient("dave").value().has_value());
  // All or none: an empty name rolls the whole batch back.
  EXPECT_EQ(store_->UpsertClients({"erin", ""}, 300).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(store_->FindClient("erin").value().has_value());
}

TEST_F(StoreTest, UpsertClientKeepsIdsStableByName) {
  Open();
  Result<ClientRecord> a = store_->UpsertClient("alice", 100);
  Result<ClientRecord> b = store_->UpsertClient("bob", 101);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->id, 0u);  // 0 means "unidentified" in the ledger
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(a->joined_at, 100);

  Result<ClientRecord> again = store_->UpsertClient("alice", 200);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, a->id);
  EXPECT_EQ(again->joined_at, 100);
  EXPECT_EQ(again->last_seen, 200);

  ASSERT_OK(store_->TouchClient(b->id, 300));
  EXPECT_EQ(store_->TouchClient(9999, 300).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->UpsertClient("", 1).status().code(), StatusCode::kInvalidArgument);

  Open();
  Result<ClientRecord> after = store_->UpsertClient("alice", 400);
  Result<ClientRecord> carol = store_->UpsertClient("carol", 401);
  ASSERT_TRUE(after.ok() && carol.ok());
  EXPECT_EQ(after->id, a->id);
  EXPECT_NE(carol->id, a->id);
  EXPECT_NE(carol->id, b->id);

  Result<std::vector<ClientRecord>> all = store_->ListClients();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].name, "alice");
  EXPECT_EQ((*all)[1].name, "bob");
  EXPECT_EQ((*all)[1].last_seen, 300);
  EXPECT_EQ((*all)[2].name, "carol");
  EXPECT_FALSE(store_->GetClient(9999).value().has_value());
}

TEST_F(StoreTest, SessionsMapTokenHashToClient) {
  Open();
  Result<ClientRecord> a = store_->UpsertClient("alice", 1);
  ASSERT_TRUE(a.ok());
  const std::string hash(64, 'c');
  ASSERT_OK(store_->SaveSession(hash, a->id, 5));
  Result<std::optional<uint64_t>> found = store_->LookupSession(hash);
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, a->id);
  EXPECT_FALSE(store_->LookupSession(std::string(64, 'd')).value().has_value());
  EXPECT_EQ(store_->SaveSession(hash, a->id, 6).code(), StatusCode::kAlreadyExists);
  // Foreign keys are on: a session for a client that does not exist is refused.
  Status orphan = store_->SaveSession(std::string(64, 'e'), 12345, 7);
  EXPECT_EQ(orphan.code(), StatusCode::kFailedPrecondition) << orphan.ToString();
  EXPECT_NE(orphan.message().find("Store::SaveSession"), std::string::npos);

  Open();
  EXPECT_EQ(store_->LookupSession(hash).value().value_or(0), a->id);
}

TEST_F(StoreTest, SessionsKeepTheirCreationTimeAndAreRevokedPerClient) {
  Open();
  Result<ClientRecord> a = store_->UpsertClient("alice", 1);
  Result<ClientRecord> b = store_->UpsertClient("bob", 1);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_OK(store_->SaveSession(std::string(64, '1'), a->id, 10));
  ASSERT_OK(store_->SaveSession(std::string(64, '2'), a->id, 20));
  ASSERT_OK(store_->SaveSession(std::string(64, '3'), b->id, 30));
  Result<std::optional<SessionRecord>> s = store_->GetSession(std::string(64, '2'));
  ASSERT_TRUE(s.ok() && s->has_value());
  EXPECT_EQ((*s)->client_id, a->id);
  EXPECT_EQ((*s)->created_at, 20);
  EXPECT_EQ(store_->RevokeSessions(a->id).value(), 2u);
  EXPECT_FALSE(store_->GetSession(std::string(64, '1')).value().has_value());
  EXPECT_FALSE(store_->GetSession(std::string(64, '2')).value().has_value());
  EXPECT_TRUE(store_->GetSession(std::string(64, '3')).value().has_value());
  EXPECT_EQ(store_->RevokeSessions(a->id).value(), 0u);
  ASSERT_OK(store_->DeleteSession(std::string(64, '3')));
  ASSERT_OK(store_->DeleteSession(std::string(64, '3')));  // already gone: still OK
  EXPECT_FALSE(store_->GetSession(std::string(64, '3')).value().has_value());
}

TEST_F(StoreTest, RoundsInsertDuplicateAndOpenLookup) {
  Open();
  EXPECT_FALSE(store_->GetOpenRound().value().has_value());
  ASSERT_OK(store_->InsertRound(OpenRound(1, {3, 1, kBig})));
  Status dup = store_->InsertRound(OpenRound(1, {}));
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists) << dup.ToString();
  ASSERT_OK(store_->InsertRound(OpenRound(2, {})));

  Result<std::optional<RoundRecord>> open = store_->GetOpenRound();
  ASSERT_TRUE(open.ok());
  ASSERT_TRUE(open->has_value());
  EXPECT_EQ((*open)->round, 2u);
  EXPECT_TRUE((*open)->selected.empty());

  ASSERT_OK(store_->UpdateRoundSelection(2, {7, 8}));
  EXPECT_EQ(store_->UpdateRoundSelection(99, {1}).code(), StatusCode::kNotFound);

  Result<std::vector<RoundRecord>> rounds = store_->ListRounds();
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 2u);
  EXPECT_EQ((*rounds)[0].selected, (std::vector<uint64_t>{3, 1, kBig}));
  EXPECT_EQ((*rounds)[0].base_version, 0u);
  EXPECT_EQ((*rounds)[0].opened_at, 1001);
  EXPECT_EQ((*rounds)[0].state, RoundState::kOpen);
  EXPECT_EQ((*rounds)[1].selected, (std::vector<uint64_t>{7, 8}));
}

TEST_F(StoreTest, CloseRoundWritesModelAndClosesInOneTransaction) {
  Open();
  ASSERT_OK(store_->InsertModel(Model(0, 0)));
  ASSERT_OK(store_->InsertRound(OpenRound(1, {1, 2})));

  RoundRecord closed = OpenRound(1, {1, 2});
  closed.closed_at = 5000;
  closed.num_updates = 2;
  closed.total_weight = 123.5;
  closed.train_loss = std::numeric_limits<double>::quiet_NaN();

  // The model version exists: nothing changes, the round stays open.
  Status clash = store_->CloseRound(closed, Model(0, 1));
  EXPECT_EQ(clash.code(), StatusCode::kAlreadyExists) << clash.ToString();
  EXPECT_NE(clash.message().find("Store::CloseRound"), std::string::npos);
  ASSERT_TRUE(store_->GetOpenRound().value().has_value());
  EXPECT_EQ(store_->GetModel(0).value()->round, 0u);

  // The round is unknown: the model inserted inside the transaction is rolled back.
  RoundRecord unknown = closed;
  unknown.round = 77;
  EXPECT_EQ(store_->CloseRound(unknown, Model(5, 77)).code(), StatusCode::kNotFound);
  EXPECT_FALSE(store_->GetModel(5).value().has_value());

  ASSERT_OK(store_->CloseRound(closed, Model(1, 1)));
  EXPECT_FALSE(store_->GetOpenRound().value().has_value());
  // Closing twice is refused and leaves no second model behind.
  EXPECT_EQ(store_->CloseRound(closed, Model(2, 1)).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(store_->GetModel(2).value().has_value());

  Open();
  Result<std::vector<RoundRecord>> rounds = store_->ListRounds();
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 1u);
  const RoundRecord& r = (*rounds)[0];
  EXPECT_EQ(r.state, RoundState::kClosed);
  EXPECT_EQ(r.closed_at, 5000);
  EXPECT_EQ(r.num_updates, 2u);
  EXPECT_DOUBLE_EQ(r.total_weight, 123.5);
  EXPECT_TRUE(std::isnan(r.train_loss));
  EXPECT_EQ(r.selected, (std::vector<uint64_t>{1, 2}));
  Result<std::optional<ModelRecord>> latest = store_->LatestModel();
  ASSERT_TRUE(latest.ok());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->version, 1u);
  EXPECT_EQ((*latest)->round, 1u);
}

TEST_F(StoreTest, LedgerRejectsSecondAcceptedUpdateButKeepsRejections) {
  Open();
  Result<int64_t> first = store_->AppendLedger(Accepted(1, 4, 32));
  ASSERT_TRUE(first.ok()) << first.status().ToString();

  LedgerEntry second = Accepted(1, 4, 64);
  Result<int64_t> dup = store_->AppendLedger(second);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);

  LedgerEntry rejected = Accepted(1, 4, std::numeric_limits<double>::quiet_NaN());
  rejected.status_code = static_cast<int>(StatusCode::kInvalidArgument);
  rejected.reason = "non-finite weight";
  rejected.spool_path.clear();
  Result<int64_t> r1 = store_->AppendLedger(rejected);
  Result<int64_t> r2 = store_->AppendLedger(rejected);
  ASSERT_TRUE(r1.ok() && r2.ok()) << r1.status().ToString() << r2.status().ToString();
  EXPECT_LT(*first, *r1);
  EXPECT_LT(*r1, *r2);
  // The same client may be accepted in another round, and another client in this one.
  ASSERT_TRUE(store_->AppendLedger(Accepted(2, 4, 8)).ok());
  ASSERT_TRUE(store_->AppendLedger(Accepted(1, 5, 16)).ok());

  Result<std::vector<LedgerEntry>> accepted = store_->AcceptedUpdates(1);
  ASSERT_TRUE(accepted.ok());
  ASSERT_EQ(accepted->size(), 2u);
  EXPECT_EQ((*accepted)[0].id, *first);
  EXPECT_EQ((*accepted)[0].client_id, 4u);
  EXPECT_DOUBLE_EQ((*accepted)[0].weight, 32);  // the duplicate changed nothing
  EXPECT_EQ((*accepted)[0].spool_path, "/spool/r1_c4");
  EXPECT_EQ((*accepted)[1].client_id, 5u);

  Result<std::vector<LedgerEntry>> all = store_->LedgerForRound(1);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[1].status_code, static_cast<int>(StatusCode::kInvalidArgument));
  EXPECT_EQ((*all)[1].reason, "non-finite weight");
  EXPECT_TRUE(std::isnan((*all)[1].weight));
  EXPECT_EQ((*all)[1].bytes, 4096u);
  EXPECT_EQ((*all)[1].sha256_hex, std::string(64, 'a'));
  EXPECT_EQ(store_->LedgerForRound(3).value().size(), 0u);
}

TEST_F(StoreTest, ModelsLatestAndGetRoundTripAllFields) {
  Open();
  EXPECT_FALSE(store_->LatestModel().value().has_value());
  ASSERT_OK(store_->InsertModel(Model(0, 0)));
  ASSERT_OK(store_->InsertModel(Model(2, 2)));
  ASSERT_OK(store_->InsertModel(Model(1, 1)));
  EXPECT_EQ(store_->InsertModel(Model(1, 9)).code(), StatusCode::kAlreadyExists);

  Result<std::optional<ModelRecord>> latest = store_->LatestModel();
  ASSERT_TRUE(latest.ok());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->version, 2u);

  Result<std::optional<ModelRecord>> got = store_->GetModel(1);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  const ModelRecord want = Model(1, 1);
  EXPECT_EQ((*got)->round, want.round);
  EXPECT_EQ((*got)->path, want.path);
  EXPECT_EQ((*got)->sha256_hex, want.sha256_hex);
  EXPECT_EQ((*got)->num_params, want.num_params);
  EXPECT_EQ((*got)->layout_hash, want.layout_hash);  // above INT64_MAX
  EXPECT_EQ((*got)->strategy_state, want.strategy_state);  // binary, embedded NUL
  EXPECT_EQ((*got)->created_at, want.created_at);
  EXPECT_FALSE(store_->GetModel(7).value().has_value());
}

TEST_F(StoreTest, ReplayRecordsStoreWithTheirModelAndListByVersionRange) {
  Open();
  ASSERT_OK(store_->InsertModel(Model(0, 0)));
  const std::string binary("rec\0one\xff", 8);
  ASSERT_OK(store_->PutReplayRecord(1, binary));
  EXPECT_EQ(store_->PutReplayRecord(1, "again").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->PutReplayRecord(9, "").code(), StatusCode::kInvalidArgument);

  // CloseRound stores the model's record in the same transaction.
  ASSERT_OK(store_->InsertRound(OpenRound(2, {1})));
  ModelRecord v2 = Model(2, 2);
  v2.replay_record = "record-of-2";
  RoundRecord closed = OpenRound(2, {1});
  closed.state = RoundState::kClosed;
  ASSERT_OK(store_->CloseRound(closed, v2));
  // A failing CloseRound (round 3 is unknown) leaves neither the model nor the record.
  ModelRecord v3 = Model(3, 3);
  v3.replay_record = "record-of-3";
  RoundRecord unknown = OpenRound(3, {1});
  EXPECT_EQ(store_->CloseRound(unknown, v3).code(), StatusCode::kNotFound);
  // The record of a version that already has one makes the whole close fail.
  ASSERT_OK(store_->InsertRound(OpenRound(4, {1})));
  ModelRecord v4 = Model(4, 4);
  v4.replay_record = "record-of-4";
  ASSERT_OK(store_->PutReplayRecord(4, "first"));
  RoundRecord closed4 = OpenRound(4, {1});
  EXPECT_EQ(store_->CloseRound(closed4, v4).code(), StatusCode::kAlreadyExists);
  EXPECT_FALSE(store_->GetModel(4).value().has_value());
  store_.reset();
  Open();

  Result<std::vector<ReplayRecord>> all = store_->GetReplayRecords(0, 100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].version, 1u);
  EXPECT_EQ((*all)[0].bytes, binary);
  EXPECT_EQ((*all)[1].version, 2u);
  EXPECT_EQ((*all)[1].bytes, "record-of-2");
  EXPECT_EQ((*all)[2].version, 4u);
  EXPECT_EQ((*all)[2].bytes, "first");
  EXPECT_EQ(store_->GetReplayRecords(2, 3).value().size(), 1u);
  EXPECT_TRUE(store_->GetReplayRecords(3, 2).value().empty());
  EXPECT_TRUE(store_->GetModel(2).value().has_value());
  EXPECT_FALSE(store_->GetModel(3).value().has_value());
}

TEST_F(StoreTest, SchemaOneFilesAreMigratedAndKeepTheirData) {
  Open();
  ASSERT_OK(store_->PutMeta("seed", "5"));
  ASSERT_OK(store_->InsertModel(Model(0, 0)));
  store_.reset();
  // Turn the file back into what a schema-1 build wrote.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE flushes; DROP TABLE async_tasks; DROP INDEX ledger_by_buffer; "
                         "ALTER TABLE ledger DROP COLUMN buffer; "
                         "ALTER TABLE ledger DROP COLUMN staleness; "
                         "DROP TABLE replay_records; PRAGMA user_version = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);

  Open();
  ASSERT_OK(store_->PutReplayRecord(1, "r1"));
  EXPECT_EQ(store_->GetReplayRecords(1, 1).value().size(), 1u);
  EXPECT_EQ(store_->GetMeta("seed").value().value_or(""), "5");
  EXPECT_TRUE(store_->GetModel(0).value().has_value());
}

TEST_F(StoreTest, MetaOverwritesAndMetricsListInRoundOrder) {
  Open(/*durable=*/false);
  EXPECT_FALSE(store_->GetMeta("config").value().has_value());
  ASSERT_OK(store_->PutMeta("config", "rounds: 3"));
  ASSERT_OK(store_->PutMeta("config", "rounds: 5"));
  ASSERT_OK(store_->PutMeta("empty", ""));
  EXPECT_EQ(store_->GetMeta("config").value().value_or(""), "rounds: 5");
  Result<std::optional<std::string>> empty = store_->GetMeta("empty");
  ASSERT_TRUE(empty.ok());
  ASSERT_TRUE(empty->has_value());
  EXPECT_EQ(**empty, "");

  for (uint64_t round : {2u, 1u}) {
    RoundMetrics m;
    m.round = round;
    m.accuracy = 0.5 + 0.1 * static_cast<double>(round);
    m.test_loss = 1.0 / static_cast<double>(round);
    m.train_loss = 2.0;
    m.bytes_up = kBig;
    m.bytes_down = 1000 * round;
    m.clients = 10;
    m.wall_seconds = 0.25;
    ASSERT_OK(store_->AppendRoundMetrics(m));
  }
  RoundMetrics again;
  again.round = 1;
  EXPECT_EQ(store_->AppendRoundMetrics(again).code(), StatusCode::kAlreadyExists);

  Open(/*durable=*/false);
  Result<std::vector<RoundMetrics>> metrics = store_->ListRoundMetrics();
  ASSERT_TRUE(metrics.ok());
  ASSERT_EQ(metrics->size(), 2u);
  EXPECT_EQ((*metrics)[0].round, 1u);
  EXPECT_DOUBLE_EQ((*metrics)[0].accuracy, 0.6);
  EXPECT_DOUBLE_EQ((*metrics)[1].test_loss, 0.5);
  EXPECT_EQ((*metrics)[1].bytes_up, kBig);
  EXPECT_EQ((*metrics)[1].bytes_down, 2000u);
  EXPECT_EQ((*metrics)[1].clients, 10u);
  EXPECT_DOUBLE_EQ((*metrics)[1].wall_seconds, 0.25);
}

TEST_F(StoreTest, GarbageFileIsDataLoss) {
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 512; ++i) out << "this is not a database; ";
  }
  StoreOptions options;
  options.path = path_;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
  EXPECT_NE(store.status().message().find(path_), std::string::npos);
  EXPECT_NE(store.status().message().find("not a database"), std::string::npos);
}

TEST_F(StoreTest, ForeignSqliteDatabaseIsDataLoss) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE photos (id INTEGER)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  StoreOptions options;
  options.path = path_;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  Open();
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  StoreOptions options;
  options.path = path_;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition) << store.status().ToString();
}

TEST_F(StoreTest, UnopenablePathIsUnavailable) {
  StoreOptions options;
  options.path = dir_ + "/no/such/dir/state.db";
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status().ToString();
  EXPECT_NE(store.status().message().find("Store::Open"), std::string::npos);

  options.path = dir_;  // a directory
  store = Store::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status().ToString();
}

TEST_F(StoreTest, LockedDatabaseIsUnavailableAfterBusyTimeout) {
  StoreOptions options;
  options.path = path_;
  options.busy_timeout_ms = 50;
  Result<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  // Another writer holds the write lock for longer than the busy timeout.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  Result<int64_t> appended = (*store)->AppendLedger(Accepted(1, 1, 1));
  EXPECT_EQ(appended.status().code(), StatusCode::kUnavailable) << appended.status().ToString();
  EXPECT_NE(appended.status().message().find("Store::AppendLedger"), std::string::npos);
  Status closed = (*store)->CloseRound(OpenRound(1, {}), Model(1, 1));
  EXPECT_EQ(closed.code(), StatusCode::kUnavailable) << closed.ToString();
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);

  // Once the lock is released the store works again: nothing was left half-done.
  ASSERT_TRUE((*store)->AppendLedger(Accepted(1, 1, 1)).ok());
  EXPECT_EQ((*store)->LedgerForRound(1).value().size(), 1u);
}

// A committed ledger row survives the process dying without closing the database: the
// row sits in the WAL, not yet checkpointed, and the next open recovers it.
TEST_F(StoreTest, CommittedLedgerRowSurvivesSigkill) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    StoreOptions options;
    options.path = path_;
    options.durable = true;
    Result<std::unique_ptr<Store>> store = Store::Open(options);
    if (!store.ok()) _exit(2);
    if (!(*store)->AppendLedger(Accepted(3, 9, 1.5)).ok()) _exit(3);
    raise(SIGKILL);
    _exit(4);
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited with " << WEXITSTATUS(wstatus);
  ASSERT_EQ(WTERMSIG(wstatus), SIGKILL);
  const std::string wal = path_ + "-wal";
  ASSERT_TRUE(std::filesystem::exists(wal));
  EXPECT_GT(std::filesystem::file_size(wal), 0u);

  Open();
  Result<std::vector<LedgerEntry>> rows = store_->AcceptedUpdates(3);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].client_id, 9u);
  EXPECT_DOUBLE_EQ((*rows)[0].weight, 1.5);
  // Recovery keeps the uniqueness rule: the acknowledged update cannot be folded twice.
  EXPECT_EQ(store_->AppendLedger(Accepted(3, 9, 1.5)).status().code(),
            StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace fl::internal

namespace fl::internal {
namespace {

TEST_F(StoreTest, AsyncTasksBuffersAndFlushesRoundTrip) {
  Open();
  EXPECT_EQ(store_->LastTaskNumber().value(), 0u);
  for (uint64_t t = 1; t <= 3; ++t) {
    TaskRecord task;
    task.task = t;
    task.client_id = 10 + t;
    task.base_version = t / 2;
    task.issued_at = 5;
    ASSERT_OK(store_->InsertTask(task));
  }
  TaskRecord again;
  again.task = 2;
  EXPECT_EQ(store_->InsertTask(again).code(), StatusCode::kAlreadyExists);
  ASSERT_OK(store_->CloseTask(2));
  EXPECT_EQ(store_->LastTaskNumber().value(), 3u);
  std::vector<TaskRecord> open = store_->ListOpenTasks().value();
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].task, 1u);
  EXPECT_EQ(open[1].task, 3u);
  EXPECT_EQ(open[1].base_version, 1u);
  EXPECT_TRUE(store_->GetTask(2).value()->closed);

  // Buffer 1 holds the updates of tasks 3 and 1, in acknowledgement order.
  ASSERT_OK(store_->InsertRound(OpenRound(1, {})));
  for (uint64_t t : {3u, 1u}) {
    LedgerEntry e = Accepted(t, 10 + t, 1.0);
    e.buffer = 1;
    e.staleness = t;
    ASSERT_TRUE(store_->AppendLedger(e).ok());
  }
  std::vector<LedgerEntry> folded = store_->AcceptedUpdatesInBuffer(1).value();
  ASSERT_EQ(folded.size(), 2u);
  EXPECT_EQ(folded[0].round, 3u);
  EXPECT_EQ(folded[0].staleness, 3u);
  EXPECT_EQ(folded[1].round, 1u);
  EXPECT_TRUE(store_->AcceptedUpdatesInBuffer(0).value().empty());

  FlushRecord flush;
  flush.flush = 1;
  flush.version = 1;
  flush.num_updates = 2;
  flush.total_weight = 1.5;
  flush.staleness_histogram = R"({"1":1,"3":1})";
  flush.step_norms = {0.25, 1e-300, 3.0};
  RoundRecord closed = OpenRound(1, {});
  closed.state = RoundState::kClosed;
  ASSERT_OK(store_->CloseBuffer(closed, Model(1, 1), flush, OpenRound(2, {})));
  // The model, flush and next buffer rows commit together: a second close changes nothing.
  EXPECT_FALSE(store_->CloseBuffer(closed, Model(2, 1), flush, std::nullopt).ok());
  EXPECT_FALSE(store_->GetModel(2).value().has_value());
  EXPECT_EQ(store_->GetOpenRound().value()->round, 2u);

  Open();
  std::vector<FlushRecord> flushes = store_->ListFlushes(0).value();
  ASSERT_EQ(flushes.size(), 1u);
  EXPECT_EQ(flushes[0].version, 1u);
  EXPECT_EQ(flushes[0].num_updates, 2u);
  EXPECT_EQ(flushes[0].staleness_histogram, flush.staleness_histogram);
  EXPECT_EQ(flushes[0].step_norms, flush.step_norms);  // bit for bit
  EXPECT_TRUE(store_->ListFlushes(2).value().empty());
}

}  // namespace
}  // namespace fl::internal
