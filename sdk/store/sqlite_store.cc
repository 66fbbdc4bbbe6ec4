// SQLite implementation of Store: the only translation unit that speaks SQL.
//
// Every value travels as a bound parameter of a prepared statement. uint64 values are
// stored as INTEGER through a two's-complement int64 cast, so they round-trip exactly;
// only ORDER BY on values above INT64_MAX would see them as negative, which no round
// number or model version reaches.

#include <sqlite3.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/logging.h"
#include "fl/status.h"
#include "store/store.h"

namespace fl::internal {
namespace {

// PRAGMA application_id of our files ("FLst"), so that Open refuses someone else's
// SQLite database instead of adding tables to it.
constexpr int32_t kApplicationId = 0x464C5374;

// Schema migrations: kMigrations[i] upgrades a file from version i to i + 1, and
// PRAGMA user_version holds the version a file is at. Append new entries (Ferret
// coefficient tables, async buffers); never edit one that has shipped, because files
// written by older builds are upgraded by replaying the steps they lack.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the initial schema.
    R"sql(
CREATE TABLE clients (
  id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: 0 means "unidentified"
  name TEXT NOT NULL UNIQUE,
  joined_at INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);

CREATE TABLE sessions (
  token_hash TEXT PRIMARY KEY NOT NULL,  -- SHA-256 (hex) of the token, never the token
  client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_client ON sessions(client_id);

-- REAL columns are nullable: SQLite stores NaN as NULL, and a NaN loss or weight must
-- still be recordable (a rejected update's ledger row, a diverged round).
CREATE TABLE rounds (
  round INTEGER PRIMARY KEY,
  base_version INTEGER NOT NULL,
  state INTEGER NOT NULL,
  selected TEXT NOT NULL,  -- client ids, comma-separated decimal
  opened_at INTEGER NOT NULL,
  closed_at INTEGER NOT NULL,
  num_updates INTEGER NOT NULL,
  total_weight REAL,
  train_loss REAL
);
CREATE INDEX rounds_open ON rounds(round) WHERE state = 1;

CREATE TABLE ledger (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  round INTEGER NOT NULL,
  client_id INTEGER NOT NULL,
  base_version INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  reason TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  weight REAL,
  sha256_hex TEXT NOT NULL,
  spool_path TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
-- An update is folded at most once: one accepted row per client per round. Rejected
-- rows may repeat.
CREATE UNIQUE INDEX ledger_accepted_once ON ledger(round, client_id) WHERE status_code = 0;
CREATE INDEX ledger_by_round ON ledger(round);

CREATE TABLE models (
  version INTEGER PRIMARY KEY,
  round INTEGER NOT NULL,
  path TEXT NOT NULL,
  sha256_hex TEXT NOT NULL,
  num_params INTEGER NOT NULL,
  layout_hash INTEGER NOT NULL,
  strategy_state BLOB NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE round_metrics (
  round INTEGER PRIMARY KEY,
  accuracy REAL,
  test_loss REAL,
  train_loss REAL,
  bytes_up INTEGER NOT NULL,
  bytes_down INTEGER NOT NULL,
  clients INTEGER NOT NULL,
  wall_seconds REAL
);
)sql",
    // 1 -> 2: downlink by replay. Per model version, the record from which a client
    // holding the previous version rebuilds it (a Ferret coefficient table and what its
    // reconstruction needs); kept for every round, a few hundred KB each.
    R"sql(
CREATE TABLE replay_records (
  version INTEGER PRIMARY KEY,
  record BLOB NOT NULL
);
)sql",
    // 2 -> 3: asynchronous mode (coordinator.mode = async). Buffers are rounds rows;
    // a ledger row's round is its task number, so an accepted row stays unique per task.
    R"sql(
ALTER TABLE ledger ADD COLUMN buffer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN staleness INTEGER NOT NULL DEFAULT 0;
CREATE INDEX ledger_by_buffer ON ledger(buffer) WHERE buffer > 0;

CREATE TABLE async_tasks (
  task INTEGER PRIMARY KEY,
  client_id INTEGER NOT NULL,
  base_version INTEGER NOT NULL,
  issued_at INTEGER NOT NULL,
  closed INTEGER NOT NULL
);
CREATE INDEX async_tasks_open ON async_tasks(task) WHERE closed = 0;

CREATE TABLE flushes (
  flush INTEGER PRIMARY KEY,
  version INTEGER NOT NULL UNIQUE,
  num_updates INTEGER NOT NULL,
  total_weight REAL,
  staleness_histogram TEXT NOT NULL,  -- JSON object: staleness -> updates
  step_norms BLOB NOT NULL,           -- little-endian float64 per tensor
  created_at INTEGER NOT NULL
);
)sql",
};
constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

StatusCode CodeForSqlite(int extended_code) {
  switch (extended_code) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return StatusCode::kAlreadyExists;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return StatusCode::kFailedPrecondition;
    default:
      break;
  }
  switch (extended_code & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return StatusCode::kDataLoss;
    case SQLITE_CANTOPEN:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_PROTOCOL:
      return StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return StatusCode::kResourceExhausted;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return StatusCode::kPermissionDenied;
    case SQLITE_INTERRUPT:
      return StatusCode::kCancelled;
    case SQLITE_ABORT:
      return StatusCode::kAborted;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      return StatusCode::kInvalidArgument;
    default:
      return StatusCode::kInternal;
  }
}

// "op: sqlite's message (sqlite error N)".
Status SqliteError(int extended_code, std::string_view message, std::string_view op) {
  std::string text(op);
  text += ": ";
  text += message;
  text += " (sqlite error ";
  text += std::to_string(extended_code);
  text += ")";
  return Status(CodeForSqlite(extended_code), text);
}

Status LastError(sqlite3* db, std::string_view op) {
  return SqliteError(sqlite3_extended_errcode(db), sqlite3_errmsg(db), op);
}

// For DDL, pragmas and transaction control: statements that carry no values.
Status Exec(sqlite3* db, const char* sql, std::string_view op) {
  char* message = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return Status::Ok();
  Status status = SqliteError(sqlite3_extended_errcode(db),
                              message ? message : sqlite3_errstr(rc), op);
  sqlite3_free(message);
  return status;
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// One execution of a cached prepared statement. Resets the statement and clears its
// bindings when it goes out of scope, which also ends a statement's implicit
// transaction. A bind failure is remembered and reported by the next Step().
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* stmt, std::string_view op) : db_(db), stmt_(stmt), op_(op) {}
  Query(Query&& other) noexcept
      : db_(other.db_),
        stmt_(std::exchange(other.stmt_, nullptr)),
        op_(other.op_),
        bind_rc_(other.bind_rc_) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  Query& operator=(Query&&) = delete;
  ~Query() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  void BindInt(int index, int64_t value) { Check(sqlite3_bind_int64(stmt_, index, value)); }
  void BindU64(int index, uint64_t value) { BindInt(index, static_cast<int64_t>(value)); }
  // NaN binds as NULL (SQLite's own behaviour), and Double() reads NULL back as NaN.
  void BindDouble(int index, double value) { Check(sqlite3_bind_double(stmt_, index, value)); }
  void BindText(int index, std::string_view value) {
    // A null data pointer would bind SQL NULL instead of the empty string.
    const char* data = value.data() != nullptr ? value.data() : "";
    Check(sqlite3_bind_text64(stmt_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void BindBlob(int index, std::string_view value) {
    const char* data = value.data() != nullptr ? value.data() : "";
    Check(sqlite3_bind_blob64(stmt_, index, data, value.size(), SQLITE_TRANSIENT));
  }

  // true: a row is available through the column getters; false: the statement is done.
  Result<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqliteError(bind_rc_, sqlite3_errstr(bind_rc_), op_);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return LastError(db_, op_);
  }

  // Steps until done, ignoring rows: a write is complete (and, outside an explicit
  // transaction, committed) only once the statement reports SQLITE_DONE.
  Status Run() {
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return Status::Ok();
    }
  }

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  uint64_t U64(int col) const { return static_cast<uint64_t>(Int(col)); }
  double Double(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) {
      return std::numeric_limits<double>::quiet_NaN();
    }
    return sqlite3_column_double(stmt_, col);
  }
  std::string Text(int col) const {
    const unsigned char* data = sqlite3_column_text(stmt_, col);
    int size = sqlite3_column_bytes(stmt_, col);
    if (data == nullptr) return std::string();
    return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(size));
  }
  std::string Blob(int col) const {
    const void* data = sqlite3_column_blob(stmt_, col);
    int size = sqlite3_column_bytes(stmt_, col);
    if (data == nullptr) return std::string();
    return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string_view op_;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails halfway
// on a lock upgrade. Rolls back on destruction unless committed. Declare it before the
// Query objects of its scope, so that they are reset before the rollback.
class Transaction {
 public:
  Transaction(sqlite3* db, std::string_view op) : db_(db), op_(op) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    // An error such as SQLITE_FULL may already have rolled the transaction back.
    if (begun_ && sqlite3_get_autocommit(db_) == 0) {
      Status status = Exec(db_, "ROLLBACK", op_);
      if (!status.ok()) {
        FL_LOG(ERROR) << "store rollback failed: " << status.ToString();
      }
    }
  }

  Status Begin() {
    FL_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", op_));
    begun_ = true;
    return Status::Ok();
  }
  Status Commit() {
    FL_RETURN_IF_ERROR(Exec(db_, "COMMIT", op_));
    begun_ = false;
    return Status::Ok();
  }

 private:
  sqlite3* db_;
  std::string_view op_;
  bool begun_ = false;
};

std::string EncodeIds(const std::vector<uint64_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  return out;
}

Result<std::vector<uint64_t>> DecodeIds(std::string_view text, std::string_view op) {
  std::vector<uint64_t> ids;
  if (text.empty()) return ids;
  const char* p = text.data();
  const char* end = p + text.size();
  while (true) {
    uint64_t id = 0;
    auto [next, ec] = std::from_chars(p, end, id);
    if (ec != std::errc() || next == p) {
      return Status::DataLoss(std::string(op) + ": malformed client id list in rounds.selected: '" +
                              std::string(text) + "'");
    }
    ids.push_back(id);
    if (next == end) return ids;
    if (*next != ',') {
      return Status::DataLoss(std::string(op) + ": malformed client id list in rounds.selected: '" +
                              std::string(text) + "'");
    }
    p = next + 1;
  }
}

// Column lists shared by the SELECTs and the row readers below; keep them in step.
#define FL_CLIENT_COLUMNS "id, name, joined_at, last_seen"
#define FL_ROUND_COLUMNS \
  "round, base_version, state, selected, opened_at, closed_at, num_updates, total_weight, train_loss"
#define FL_LEDGER_COLUMNS                                                                     \
  "id, round, client_id, base_version, status_code, reason, bytes, weight, sha256_hex, " \
  "spool_path, created_at, buffer, staleness"
#define FL_MODEL_COLUMNS \
  "version, round, path, sha256_hex, num_params, layout_hash, strategy_state, created_at"
#define FL_METRICS_COLUMNS \
  "round, accuracy, test_loss, train_loss, bytes_up, bytes_down, clients, wall_seconds"

ClientRecord ReadClient(const Query& q) {
  ClientRecord c;
  c.id = q.U64(0);
  c.name = q.Text(1);
  c.joined_at = q.Int(2);
  c.last_seen = q.Int(3);
  return c;
}

Result<RoundRecord> ReadRound(const Query& q, std::string_view op) {
  RoundRecord r;
  r.round = q.U64(0);
  r.base_version = q.U64(1);
  r.state = static_cast<RoundState>(q.Int(2));
  FL_ASSIGN_OR_RETURN(r.selected, DecodeIds(q.Text(3), op));
  r.opened_at = q.Int(4);
  r.closed_at = q.Int(5);
  r.num_updates = q.U64(6);
  r.total_weight = q.Double(7);
  r.train_loss = q.Double(8);
  return r;
}

LedgerEntry ReadLedger(const Query& q) {
  LedgerEntry e;
  e.id = q.Int(0);
  e.round = q.U64(1);
  e.client_id = q.U64(2);
  e.base_version = q.U64(3);
  e.status_code = static_cast<int>(q.Int(4));
  e.reason = q.Text(5);
  e.bytes = q.U64(6);
  e.weight = q.Double(7);
  e.sha256_hex = q.Text(8);
  e.spool_path = q.Text(9);
  e.created_at = q.Int(10);
  e.buffer = q.U64(11);
  e.staleness = q.U64(12);
  return e;
}

TaskRecord ReadTask(const Query& q) {
  TaskRecord t;
  t.task = q.U64(0);
  t.client_id = q.U64(1);
  t.base_version = q.U64(2);
  t.issued_at = q.Int(3);
  t.closed = q.Int(4) != 0;
  return t;
}

std::string EncodeDoubles(const std::vector<double>& values) {
  std::string out;
  out.reserve(values.size() * 8);
  for (double v : values) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  }
  return out;
}

Result<std::vector<double>> DecodeDoubles(std::string_view bytes, std::string_view op) {
  if (bytes.size() % 8 != 0) return Status::DataLoss(std::string(op) + ": truncated step norms");
  std::vector<double> out(bytes.size() / 8);
  for (size_t k = 0; k < out.size(); ++k) {
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) {
      bits |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[8 * k + i])) << (8 * i);
    }
    std::memcpy(&out[k], &bits, 8);
  }
  return out;
}

ModelRecord ReadModel(const Query& q) {
  ModelRecord m;
  m.version = q.U64(0);
  m.round = q.U64(1);
  m.path = q.Text(2);
  m.sha256_hex = q.Text(3);
  m.num_params = q.U64(4);
  m.layout_hash = q.U64(5);
  m.strategy_state = q.Blob(6);
  m.created_at = q.Int(7);
  return m;
}

RoundMetrics ReadMetrics(const Query& q) {
  RoundMetrics m;
  m.round = q.U64(0);
  m.accuracy = q.Double(1);
  m.test_loss = q.Double(2);
  m.train_loss = q.Double(3);
  m.bytes_up = q.U64(4);
  m.bytes_down = q.U64(5);
  m.clients = q.U64(6);
  m.wall_seconds = q.Double(7);
  return m;
}

class SqliteStore final : public Store {
 public:
  SqliteStore(DbPtr db, std::string path) : db_(std::move(db)), path_(std::move(path)) {}

  // Checks that the file is ours (or empty), applies the connection settings and brings
  // the schema up to kSchemaVersion.
  Status Init(const StoreOptions& options) {
    const std::string op = "Store::Open(" + path_ + ")";
    FL_RETURN_IF_ERROR(CheckOwnership(op));

    // journal_mode must be set outside a transaction; ":memory:" answers "memory".
    {
      FL_ASSIGN_OR_RETURN(Query q, Prepare("PRAGMA journal_mode = WAL", op));
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      std::string mode = row ? q.Text(0) : std::string();
      if (mode != "wal" && mode != "memory") {
        FL_LOG(WARNING) << "store " << path_ << ": WAL unavailable, journal_mode=" << mode;
      }
    }
    FL_RETURN_IF_ERROR(Exec(db_.get(),
                            options.durable ? "PRAGMA synchronous = FULL"
                                            : "PRAGMA synchronous = OFF",
                            op));
    FL_RETURN_IF_ERROR(Exec(db_.get(), "PRAGMA foreign_keys = ON", op));
    sqlite3_commit_hook(db_.get(), &SqliteStore::CountCommit, this);
    return Migrate(op);
  }

  Result<ClientRecord> UpsertClient(const std::string& name, int64_t now) override {
    return UpsertClientRow(name, now, "Store::UpsertClient");
  }

  Result<std::vector<ClientRecord>> UpsertClients(const std::vector<std::string>& names,
                                                  int64_t now) override {
    constexpr std::string_view kOp = "Store::UpsertClients";
    Transaction txn(db_.get(), kOp);
    FL_RETURN_IF_ERROR(txn.Begin());
    std::vector<ClientRecord> records;
    records.reserve(names.size());
    for (const std::string& name : names) {
      if (name.empty()) return Status::InvalidArgument("Store::UpsertClients: empty client name");
      // A new name is a plain insert, half the cost of an upsert returning its row.
      FL_ASSIGN_OR_RETURN(Query q, Prepare(
          "INSERT OR IGNORE INTO clients (name, joined_at, last_seen) VALUES (?1, ?2, ?2)", kOp));
      q.BindText(1, name);
      q.BindInt(2, now);
      FL_RETURN_IF_ERROR(q.Run());
      if (sqlite3_changes(db_.get()) == 1) {
        records.push_back(ClientRecord{static_cast<uint64_t>(sqlite3_last_insert_rowid(db_.get())),
                                       name, now, now});
        continue;
      }
      FL_ASSIGN_OR_RETURN(ClientRecord record, UpsertClientRow(name, now, kOp));
      records.push_back(std::move(record));
    }
    FL_RETURN_IF_ERROR(txn.Commit());
    return records;
  }

  uint64_t committed_transactions() const override { return commits_; }

  Result<std::optional<ClientRecord>> GetClient(uint64_t id) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_CLIENT_COLUMNS " FROM clients WHERE id = ?1", "Store::GetClient"));
    q.BindU64(1, id);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<ClientRecord>();
    return std::optional<ClientRecord>(ReadClient(q));
  }

  Result<std::optional<ClientRecord>> FindClient(const std::string& name) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_CLIENT_COLUMNS " FROM clients WHERE name = ?1", "Store::FindClient"));
    q.BindText(1, name);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<ClientRecord>();
    return std::optional<ClientRecord>(ReadClient(q));
  }

  Result<std::vector<ClientRecord>> ListClients() override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_CLIENT_COLUMNS " FROM clients ORDER BY id", "Store::ListClients"));
    std::vector<ClientRecord> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(ReadClient(q));
    }
  }

  Status TouchClient(uint64_t id, int64_t now) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "UPDATE clients SET last_seen = ?2 WHERE id = ?1", "Store::TouchClient"));
    q.BindU64(1, id);
    q.BindInt(2, now);
    FL_RETURN_IF_ERROR(q.Run());
    if (sqlite3_changes(db_.get()) == 0) {
      return Status::NotFound("Store::TouchClient: unknown client " + std::to_string(id));
    }
    return Status::Ok();
  }

  Status SaveSession(const std::string& token_hash_hex, uint64_t client_id,
                     int64_t now) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO sessions (token_hash, client_id, created_at) VALUES (?1, ?2, ?3)",
        "Store::SaveSession"));
    q.BindText(1, token_hash_hex);
    q.BindU64(2, client_id);
    q.BindInt(3, now);
    return q.Run();
  }

  Result<std::optional<uint64_t>> LookupSession(const std::string& token_hash_hex) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT client_id FROM sessions WHERE token_hash = ?1", "Store::LookupSession"));
    q.BindText(1, token_hash_hex);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<uint64_t>();
    return std::optional<uint64_t>(q.U64(0));
  }

  Result<std::optional<SessionRecord>> GetSession(const std::string& token_hash_hex) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT client_id, created_at FROM sessions WHERE token_hash = ?1", "Store::GetSession"));
    q.BindText(1, token_hash_hex);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<SessionRecord>();
    return std::optional<SessionRecord>(SessionRecord{q.U64(0), q.Int(1)});
  }

  Result<uint64_t> RevokeSessions(uint64_t client_id) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "DELETE FROM sessions WHERE client_id = ?1", "Store::RevokeSessions"));
    q.BindU64(1, client_id);
    FL_RETURN_IF_ERROR(q.Run());
    return static_cast<uint64_t>(sqlite3_changes(db_.get()));
  }

  Status DeleteSession(const std::string& token_hash_hex) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "DELETE FROM sessions WHERE token_hash = ?1", "Store::DeleteSession"));
    q.BindText(1, token_hash_hex);
    return q.Run();
  }

  Status InsertRound(const RoundRecord& r) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO rounds (" FL_ROUND_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        "Store::InsertRound"));
    q.BindU64(1, r.round);
    q.BindU64(2, r.base_version);
    q.BindInt(3, static_cast<int>(r.state));
    q.BindText(4, EncodeIds(r.selected));
    q.BindInt(5, r.opened_at);
    q.BindInt(6, r.closed_at);
    q.BindU64(7, r.num_updates);
    q.BindDouble(8, r.total_weight);
    q.BindDouble(9, r.train_loss);
    return q.Run();
  }

  Status UpdateRoundSelection(uint64_t round, const std::vector<uint64_t>& selected) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "UPDATE rounds SET selected = ?2 WHERE round = ?1", "Store::UpdateRoundSelection"));
    q.BindU64(1, round);
    q.BindText(2, EncodeIds(selected));
    FL_RETURN_IF_ERROR(q.Run());
    if (sqlite3_changes(db_.get()) == 0) {
      return Status::NotFound("Store::UpdateRoundSelection: unknown round " +
                              std::to_string(round));
    }
    return Status::Ok();
  }

  Result<std::optional<RoundRecord>> GetOpenRound() override {
    constexpr std::string_view kOp = "Store::GetOpenRound";
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_ROUND_COLUMNS " FROM rounds WHERE state = 1 ORDER BY round DESC LIMIT 1",
        kOp));
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<RoundRecord>();
    FL_ASSIGN_OR_RETURN(RoundRecord r, ReadRound(q, kOp));
    return std::optional<RoundRecord>(std::move(r));
  }

  Result<std::vector<RoundRecord>> ListRounds() override {
    constexpr std::string_view kOp = "Store::ListRounds";
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_ROUND_COLUMNS " FROM rounds ORDER BY round", kOp));
    std::vector<RoundRecord> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      FL_ASSIGN_OR_RETURN(RoundRecord r, ReadRound(q, kOp));
      out.push_back(std::move(r));
    }
  }

  Status CloseRound(const RoundRecord& closed, const ModelRecord& model) override {
    constexpr std::string_view kOp = "Store::CloseRound";
    Transaction txn(db_.get(), kOp);
    FL_RETURN_IF_ERROR(txn.Begin());
    FL_RETURN_IF_ERROR(CloseRoundRows(closed, model, kOp));
    return txn.Commit();
  }

  Status CloseBuffer(const RoundRecord& closed, const ModelRecord& model,
                     const FlushRecord& flush,
                     const std::optional<RoundRecord>& next_buffer) override {
    constexpr std::string_view kOp = "Store::CloseBuffer";
    Transaction txn(db_.get(), kOp);
    FL_RETURN_IF_ERROR(txn.Begin());
    FL_RETURN_IF_ERROR(CloseRoundRows(closed, model, kOp));
    {
      FL_ASSIGN_OR_RETURN(Query q, Prepare(
          "INSERT INTO flushes (flush, version, num_updates, total_weight, "
          "staleness_histogram, step_norms, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
          kOp));
      q.BindU64(1, flush.flush);
      q.BindU64(2, flush.version);
      q.BindU64(3, flush.num_updates);
      q.BindDouble(4, flush.total_weight);
      q.BindText(5, flush.staleness_histogram);
      q.BindBlob(6, EncodeDoubles(flush.step_norms));
      q.BindInt(7, flush.created_at);
      FL_RETURN_IF_ERROR(q.Run());
    }
    if (next_buffer.has_value()) FL_RETURN_IF_ERROR(InsertRound(*next_buffer));
    return txn.Commit();
  }

  Result<std::vector<FlushRecord>> ListFlushes(uint64_t from_version) override {
    constexpr std::string_view kOp = "Store::ListFlushes";
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT flush, version, num_updates, total_weight, staleness_histogram, step_norms, "
        "created_at FROM flushes WHERE version >= ?1 ORDER BY version", kOp));
    q.BindU64(1, from_version);
    std::vector<FlushRecord> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      FlushRecord f;
      f.flush = q.U64(0);
      f.version = q.U64(1);
      f.num_updates = q.U64(2);
      f.total_weight = q.Double(3);
      f.staleness_histogram = q.Text(4);
      FL_ASSIGN_OR_RETURN(f.step_norms, DecodeDoubles(q.Blob(5), kOp));
      f.created_at = q.Int(6);
      out.push_back(std::move(f));
    }
  }

  Result<std::vector<LedgerEntry>> AcceptedUpdatesInBuffer(uint64_t buffer) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_LEDGER_COLUMNS " FROM ledger WHERE buffer = ?1 AND buffer > 0 "
        "AND status_code = 0 ORDER BY id", "Store::AcceptedUpdatesInBuffer"));
    q.BindU64(1, buffer);
    return ReadLedgerRows(q);
  }

  Status InsertTask(const TaskRecord& t) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO async_tasks (task, client_id, base_version, issued_at, closed) "
        "VALUES (?1, ?2, ?3, ?4, ?5)", "Store::InsertTask"));
    q.BindU64(1, t.task);
    q.BindU64(2, t.client_id);
    q.BindU64(3, t.base_version);
    q.BindInt(4, t.issued_at);
    q.BindInt(5, t.closed ? 1 : 0);
    return q.Run();
  }

  Status CloseTask(uint64_t task) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "UPDATE async_tasks SET closed = 1 WHERE task = ?1", "Store::CloseTask"));
    q.BindU64(1, task);
    return q.Run();
  }

  Result<std::optional<TaskRecord>> GetTask(uint64_t task) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT task, client_id, base_version, issued_at, closed FROM async_tasks "
        "WHERE task = ?1", "Store::GetTask"));
    q.BindU64(1, task);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<TaskRecord>();
    return std::optional<TaskRecord>(ReadTask(q));
  }

  Result<std::vector<TaskRecord>> ListOpenTasks() override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT task, client_id, base_version, issued_at, closed FROM async_tasks "
        "WHERE closed = 0 ORDER BY task", "Store::ListOpenTasks"));
    std::vector<TaskRecord> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(ReadTask(q));
    }
  }

  Result<uint64_t> LastTaskNumber() override {
    FL_ASSIGN_OR_RETURN(int64_t last, ReadInt("SELECT coalesce(max(task), 0) FROM async_tasks",
                                              "Store::LastTaskNumber"));
    return static_cast<uint64_t>(last);
  }

  Result<int64_t> AppendLedger(const LedgerEntry& e) override {
    constexpr std::string_view kOp = "Store::AppendLedger";
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO ledger (round, client_id, base_version, status_code, reason, bytes, "
        "weight, sha256_hex, spool_path, created_at, buffer, staleness) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)", kOp));
    q.BindU64(1, e.round);
    q.BindU64(2, e.client_id);
    q.BindU64(3, e.base_version);
    q.BindInt(4, e.status_code);
    q.BindText(5, e.reason);
    q.BindU64(6, e.bytes);
    q.BindDouble(7, e.weight);
    q.BindText(8, e.sha256_hex);
    q.BindText(9, e.spool_path);
    q.BindInt(10, e.created_at);
    q.BindU64(11, e.buffer);
    q.BindU64(12, e.staleness);
    Status status = q.Run();
    if (status.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists(
          "Store::AppendLedger: client " + std::to_string(e.client_id) +
          " already has an accepted update in round " + std::to_string(e.round));
    }
    FL_RETURN_IF_ERROR(status);
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db_.get()));
  }

  Result<std::vector<LedgerEntry>> AcceptedUpdates(uint64_t round) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_LEDGER_COLUMNS " FROM ledger WHERE round = ?1 AND status_code = 0 "
        "ORDER BY id", "Store::AcceptedUpdates"));
    q.BindU64(1, round);
    return ReadLedgerRows(q);
  }

  Result<std::vector<LedgerEntry>> LedgerForRound(uint64_t round) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_LEDGER_COLUMNS " FROM ledger WHERE round = ?1 ORDER BY id",
        "Store::LedgerForRound"));
    q.BindU64(1, round);
    return ReadLedgerRows(q);
  }

  Status InsertModel(const ModelRecord& model) override {
    constexpr std::string_view kOp = "Store::InsertModel";
    Transaction txn(db_.get(), kOp);
    FL_RETURN_IF_ERROR(txn.Begin());
    FL_RETURN_IF_ERROR(InsertModelRow(model, kOp));
    return txn.Commit();
  }

  Result<std::optional<ModelRecord>> LatestModel() override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_MODEL_COLUMNS " FROM models ORDER BY version DESC LIMIT 1",
        "Store::LatestModel"));
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<ModelRecord>();
    return std::optional<ModelRecord>(ReadModel(q));
  }

  Result<std::optional<ModelRecord>> GetModel(uint64_t version) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_MODEL_COLUMNS " FROM models WHERE version = ?1", "Store::GetModel"));
    q.BindU64(1, version);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<ModelRecord>();
    return std::optional<ModelRecord>(ReadModel(q));
  }

  Status PutReplayRecord(uint64_t version, const std::string& bytes) override {
    return InsertReplayRow(version, bytes, "Store::PutReplayRecord");
  }

  Result<std::vector<ReplayRecord>> GetReplayRecords(uint64_t from, uint64_t to) override {
    std::vector<ReplayRecord> out;
    if (from > to) return out;
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT version, record FROM replay_records WHERE version >= ?1 AND version <= ?2 "
        "ORDER BY version", "Store::GetReplayRecords"));
    q.BindU64(1, from);
    q.BindU64(2, to);
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(ReplayRecord{q.U64(0), q.Blob(1)});
    }
  }

  Status PutMeta(const std::string& key, const std::string& value) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", "Store::PutMeta"));
    q.BindText(1, key);
    q.BindText(2, value);
    return q.Run();
  }

  Result<std::optional<std::string>> GetMeta(const std::string& key) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT value FROM meta WHERE key = ?1", "Store::GetMeta"));
    q.BindText(1, key);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<std::string>();
    return std::optional<std::string>(q.Text(0));
  }

  // One row per round: a second append for the same round fails with AlreadyExists.
  Status AppendRoundMetrics(const RoundMetrics& m) override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO round_metrics (" FL_METRICS_COLUMNS ") "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", "Store::AppendRoundMetrics"));
    q.BindU64(1, m.round);
    q.BindDouble(2, m.accuracy);
    q.BindDouble(3, m.test_loss);
    q.BindDouble(4, m.train_loss);
    q.BindU64(5, m.bytes_up);
    q.BindU64(6, m.bytes_down);
    q.BindU64(7, m.clients);
    q.BindDouble(8, m.wall_seconds);
    return q.Run();
  }

  Result<std::vector<RoundMetrics>> ListRoundMetrics() override {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "SELECT " FL_METRICS_COLUMNS " FROM round_metrics ORDER BY round",
        "Store::ListRoundMetrics"));
    std::vector<RoundMetrics> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(ReadMetrics(q));
    }
  }

 private:
  // The rows of CloseRound, inside the caller's transaction.
  Status CloseRoundRows(const RoundRecord& closed, const ModelRecord& model,
                        std::string_view op) {
    FL_RETURN_IF_ERROR(InsertModelRow(model, op));
    {
      FL_ASSIGN_OR_RETURN(Query q, Prepare(
          "UPDATE rounds SET state = ?2, closed_at = ?3, num_updates = ?4, "
          "total_weight = ?5, train_loss = ?6 WHERE round = ?1 AND state = ?7", op));
      q.BindU64(1, closed.round);
      q.BindInt(2, static_cast<int>(RoundState::kClosed));
      q.BindInt(3, closed.closed_at);
      q.BindU64(4, closed.num_updates);
      q.BindDouble(5, closed.total_weight);
      q.BindDouble(6, closed.train_loss);
      q.BindInt(7, static_cast<int>(RoundState::kOpen));
      FL_RETURN_IF_ERROR(q.Run());
    }
    if (sqlite3_changes(db_.get()) == 0) {
      FL_ASSIGN_OR_RETURN(Query q, Prepare("SELECT state FROM rounds WHERE round = ?1", op));
      q.BindU64(1, closed.round);
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      const std::string which = "round " + std::to_string(closed.round);
      if (!row) return Status::NotFound(std::string(op) + ": unknown " + which);
      return Status::FailedPrecondition(std::string(op) + ": " + which + " is not open");
    }
    return Status::Ok();
  }

  // Statements are prepared once and kept for the life of the connection. REQUIRES:
  // `sql` is a string literal (it keys the cache), and no two live Query objects use
  // the same statement.
  // sqlite3_commit_hook's callback; 0 lets the commit proceed.
  static int CountCommit(void* store) {
    ++static_cast<SqliteStore*>(store)->commits_;
    return 0;
  }

  Result<ClientRecord> UpsertClientRow(const std::string& name, int64_t now,
                                       std::string_view op) {
    if (name.empty()) return Status::InvalidArgument(std::string(op) + ": empty client name");
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO clients (name, joined_at, last_seen) VALUES (?1, ?2, ?2) "
        "ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen "
        "RETURNING " FL_CLIENT_COLUMNS, op));
    q.BindText(1, name);
    q.BindInt(2, now);
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::Internal(std::string(op) + ": upsert returned no row");
    ClientRecord record = ReadClient(q);
    FL_RETURN_IF_ERROR(q.Run());
    return record;
  }

  Result<Query> Prepare(const char* sql, std::string_view op) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) {
      sqlite3_stmt* raw = nullptr;
      int rc = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(raw);
        return LastError(db_.get(), op);
      }
      it = statements_.emplace(sql, StmtPtr(raw)).first;
    }
    return Query(db_.get(), it->second.get(), op);
  }

  Result<int64_t> ReadInt(const char* sql, std::string_view op) {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(sql, op));
    FL_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::Internal(std::string(op) + ": no result for " + sql);
    return q.Int(0);
  }

  // The first read of the file: a file that is not SQLite fails here with
  // SQLITE_NOTADB, which becomes DataLoss.
  Status CheckOwnership(std::string_view op) {
    FL_ASSIGN_OR_RETURN(int64_t objects, ReadInt("SELECT count(*) FROM sqlite_master", op));
    FL_ASSIGN_OR_RETURN(int64_t app_id, ReadInt("PRAGMA application_id", op));
    if (app_id == kApplicationId) return Status::Ok();
    if (app_id == 0 && objects == 0) return Status::Ok();  // new or empty file
    return Status::DataLoss(std::string(op) +
                            ": an SQLite database that is not an fl store (application_id " +
                            std::to_string(app_id) + ", " + std::to_string(objects) +
                            " schema objects)");
  }

  // Brings the schema to kSchemaVersion in one write transaction, so two processes
  // opening a new file cannot both create the tables.
  Status Migrate(std::string_view op) {
    Transaction txn(db_.get(), op);
    FL_RETURN_IF_ERROR(txn.Begin());
    FL_RETURN_IF_ERROR(CheckOwnership(op));
    FL_ASSIGN_OR_RETURN(int64_t version, ReadInt("PRAGMA user_version", op));
    if (version > kSchemaVersion) {
      return Status::FailedPrecondition(
          std::string(op) + ": schema version " + std::to_string(version) +
          " is newer than this build understands (" + std::to_string(kSchemaVersion) + ")");
    }
    if (version < 0) {
      return Status::DataLoss(std::string(op) + ": invalid schema version " +
                              std::to_string(version));
    }
    if (version == kSchemaVersion) return txn.Commit();
    for (int64_t v = version; v < kSchemaVersion; ++v) {
      FL_RETURN_IF_ERROR(
          Exec(db_.get(), kMigrations[v], std::string(op) + ": migration to schema " +
                                              std::to_string(v + 1)));
    }
    // PRAGMAs take no bound parameters; both values are compile-time constants.
    const std::string set_version =
        "PRAGMA application_id = " + std::to_string(kApplicationId) +
        "; PRAGMA user_version = " + std::to_string(kSchemaVersion);
    FL_RETURN_IF_ERROR(Exec(db_.get(), set_version.c_str(), op));
    FL_RETURN_IF_ERROR(txn.Commit());
    FL_LOG(DEBUG) << "store " << path_ << ": schema " << version << " -> " << kSchemaVersion;
    return Status::Ok();
  }

  Status InsertModelRow(const ModelRecord& m, std::string_view op) {
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO models (" FL_MODEL_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        op));
    q.BindU64(1, m.version);
    q.BindU64(2, m.round);
    q.BindText(3, m.path);
    q.BindText(4, m.sha256_hex);
    q.BindU64(5, m.num_params);
    q.BindU64(6, m.layout_hash);
    q.BindBlob(7, m.strategy_state);
    q.BindInt(8, m.created_at);
    FL_RETURN_IF_ERROR(q.Run());
    if (m.replay_record.empty()) return Status::Ok();
    return InsertReplayRow(m.version, m.replay_record, op);
  }

  Status InsertReplayRow(uint64_t version, const std::string& bytes, std::string_view op) {
    if (bytes.empty()) {
      return Status::InvalidArgument(std::string(op) + ": empty replay record for version " +
                                     std::to_string(version));
    }
    FL_ASSIGN_OR_RETURN(Query q, Prepare(
        "INSERT INTO replay_records (version, record) VALUES (?1, ?2)", op));
    q.BindU64(1, version);
    q.BindBlob(2, bytes);
    Status status = q.Run();
    if (status.code() == StatusCode::kAlreadyExists) {
      return Status::AlreadyExists(std::string(op) + ": version " + std::to_string(version) +
                                   " already has a replay record");
    }
    return status;
  }

  Result<std::vector<LedgerEntry>> ReadLedgerRows(Query& q) {
    std::vector<LedgerEntry> out;
    while (true) {
      FL_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(ReadLedger(q));
    }
  }

  // Declared before statements_, so that statements are finalized before the close.
  DbPtr db_;
  std::string path_;
  std::unordered_map<std::string_view, StmtPtr> statements_;
  uint64_t commits_ = 0;  // see committed_transactions()
};

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("Store::Open: empty path");
  const std::string op = "Store::Open(" + options.path + ")";
  sqlite3* raw = nullptr;
  // NOMUTEX: the Store is thread-compatible, its callers serialize access.
  int rc = sqlite3_open_v2(options.path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  DbPtr db(raw);  // sqlite3_open_v2 may return a handle even when it fails
  if (rc != SQLITE_OK) {
    if (raw == nullptr) return SqliteError(rc, sqlite3_errstr(rc), op);
    return LastError(raw, op);
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  auto store = std::make_unique<SqliteStore>(std::move(db), options.path);
  FL_RETURN_IF_ERROR(store->Init(options));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace fl::internal
