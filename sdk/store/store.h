#ifndef FL_SDK_STORE_STORE_H_
#define FL_SDK_STORE_STORE_H_

// The only code that speaks SQL. Server and simulation state in one SQLite file (WAL):
// clients, sessions, rounds, the update ledger, model versions, run metadata and
// per-round metrics.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fl/status.h"

namespace fl::internal {

struct StoreOptions {
  std::string path;     // SQLite file; ":memory:" for a throwaway store
  // true: synchronous=FULL, so a committed transaction survives kill -9 and power loss.
  // false: synchronous=OFF (simulations, which do not need crash recovery).
  bool durable = true;
  int busy_timeout_ms = 5000;
};

struct ClientRecord {
  uint64_t id = 0;
  std::string name;
  int64_t joined_at = 0;   // unix seconds
  int64_t last_seen = 0;   // unix seconds
};

struct SessionRecord {
  uint64_t client_id = 0;
  int64_t created_at = 0;  // unix seconds
};

// Round states. Persisted: never change existing values.
enum class RoundState : int { kOpen = 1, kClosed = 2 };

struct RoundRecord {
  uint64_t round = 0;
  uint64_t base_version = 0;
  RoundState state = RoundState::kOpen;
  std::vector<uint64_t> selected;  // client ids
  int64_t opened_at = 0;
  int64_t closed_at = 0;
  uint64_t num_updates = 0;
  double total_weight = 0;
  double train_loss = 0;
};

// One row per update received, accepted or not.
struct LedgerEntry {
  int64_t id = 0;            // assigned by the store
  uint64_t round = 0;
  uint64_t client_id = 0;    // 0 if the client could not be identified
  uint64_t base_version = 0;
  int status_code = 0;       // fl::StatusCode; 0 = accepted
  std::string reason;        // empty when accepted
  uint64_t bytes = 0;
  double weight = 0;
  std::string sha256_hex;
  std::string spool_path;    // where the accepted payload is kept until the round closes
  int64_t created_at = 0;
  // Asynchronous mode (schema version 3): `round` holds the task number, `buffer` the
  // flush the update was folded into (its rounds row), `staleness` the model version at
  // the fold minus base_version. Both 0 in synchronous mode.
  uint64_t buffer = 0;
  uint64_t staleness = 0;
};

// Asynchronous mode: one training assignment handed to a client by PullTask.
struct TaskRecord {
  uint64_t task = 0;          // unique, increasing; the ledger's round for its update
  uint64_t client_id = 0;
  uint64_t base_version = 0;  // the model version the client was told to train on
  int64_t issued_at = 0;      // unix seconds
  bool closed = false;        // answered, superseded or expired: holds no slot
};

// Asynchronous mode: one buffer flushed into a new model version.
struct FlushRecord {
  uint64_t flush = 0;        // the buffer's number (its rounds row)
  uint64_t version = 0;      // the model version it produced
  uint64_t num_updates = 0;
  double total_weight = 0;   // sum of the folded weights (policy weight x s(staleness))
  // Updates per staleness, as a JSON object {"<staleness>": count, ...}.
  std::string staleness_histogram;
  // Per tensor (layout order), the L2 norm of (model at version) - (model at version-1);
  // the gap penalty of later updates is computed from them.
  std::vector<double> step_norms;
  int64_t created_at = 0;
};

struct ModelRecord {
  uint64_t version = 0;
  uint64_t round = 0;            // the round that produced it (0 for the initial model)
  std::string path;              // file holding the serialized ParamSet
  std::string sha256_hex;        // of that file's content
  uint64_t num_params = 0;
  uint64_t layout_hash = 0;
  std::string strategy_state;    // Strategy::SaveState() after producing this version
  int64_t created_at = 0;
  // Strategy::TakeReplayRecord() of the round that produced this version; empty if none.
  // Written to the replay table (not the models table) in the same transaction as the
  // model row, so a version and its record become durable together; LatestModel and
  // GetModel leave it empty (read records with GetReplayRecords).
  std::string replay_record;
};

// Downlink by replay: the record that turns model version - 1 into `version`.
struct ReplayRecord {
  uint64_t version = 0;
  std::string bytes;
};

// Per-round results of a simulation or server run (the run record).
struct RoundMetrics {
  uint64_t round = 0;
  double accuracy = 0;
  double test_loss = 0;
  double train_loss = 0;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  uint64_t clients = 0;
  double wall_seconds = 0;
};

// Thread-compatible: callers serialize access (the Coordinator holds its mutex).
class Store {
 public:
  virtual ~Store() = default;
  // Opens (creating and migrating the schema if needed). Unavailable if the file
  // cannot be opened; DataLoss if it is not a database of ours.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);

  // Clients and sessions. Returns the existing record if `name` is known.
  virtual Result<ClientRecord> UpsertClient(const std::string& name, int64_t now) = 0;
  // UpsertClient for every name, in one transaction (all or none); records in the
  // order of `names`.
  virtual Result<std::vector<ClientRecord>> UpsertClients(const std::vector<std::string>& names,
                                                          int64_t now) = 0;
  virtual Result<std::optional<ClientRecord>> GetClient(uint64_t id) = 0;
  virtual Result<std::optional<ClientRecord>> FindClient(const std::string& name) = 0;
  virtual Result<std::vector<ClientRecord>> ListClients() = 0;
  virtual Status TouchClient(uint64_t id, int64_t now) = 0;
  // Sessions are stored by the SHA-256 (hex) of their token, never the token itself.
  virtual Status SaveSession(const std::string& token_hash_hex, uint64_t client_id, int64_t now) = 0;
  virtual Result<std::optional<uint64_t>> LookupSession(const std::string& token_hash_hex) = 0;
  // The session's client and creation time (unix seconds), if the token is known.
  virtual Result<std::optional<SessionRecord>> GetSession(const std::string& token_hash_hex) = 0;
  // Deletes every session of `client_id` (a re-join revokes the older tokens) and
  // returns how many there were.
  virtual Result<uint64_t> RevokeSessions(uint64_t client_id) = 0;
  // Deletes one session (an expired token); OK if it does not exist.
  virtual Status DeleteSession(const std::string& token_hash_hex) = 0;

  // Rounds. InsertRound fails with AlreadyExists for a known round number.
  virtual Status InsertRound(const RoundRecord& round) = 0;
  virtual Status UpdateRoundSelection(uint64_t round, const std::vector<uint64_t>& selected) = 0;
  // The open round with the highest number, if any.
  virtual Result<std::optional<RoundRecord>> GetOpenRound() = 0;
  virtual Result<std::vector<RoundRecord>> ListRounds() = 0;
  // In one transaction: inserts `model`, marks `round` closed with its stats.
  virtual Status CloseRound(const RoundRecord& closed, const ModelRecord& model) = 0;

  // Update ledger. An accepted entry (status_code == 0) is unique per (round, client):
  // a second one fails with AlreadyExists and changes nothing.
  virtual Result<int64_t> AppendLedger(const LedgerEntry& entry) = 0;
  virtual Result<std::vector<LedgerEntry>> AcceptedUpdates(uint64_t round) = 0;
  virtual Result<std::vector<LedgerEntry>> LedgerForRound(uint64_t round) = 0;

  // Asynchronous mode. CloseBuffer is CloseRound plus the flush row and, if given, the
  // next buffer's rounds row (InsertRound), in one transaction.
  virtual Status CloseBuffer(const RoundRecord& closed, const ModelRecord& model,
                             const FlushRecord& flush,
                             const std::optional<RoundRecord>& next_buffer) = 0;
  // Flushes that produced versions >= from_version, in increasing version order.
  virtual Result<std::vector<FlushRecord>> ListFlushes(uint64_t from_version) = 0;
  // The accepted ledger rows folded into `buffer`, in the order they were acknowledged.
  virtual Result<std::vector<LedgerEntry>> AcceptedUpdatesInBuffer(uint64_t buffer) = 0;
  // AlreadyExists for a known task number.
  virtual Status InsertTask(const TaskRecord& task) = 0;
  virtual Status CloseTask(uint64_t task) = 0;
  virtual Result<std::optional<TaskRecord>> GetTask(uint64_t task) = 0;
  // Tasks not closed, by task number.
  virtual Result<std::vector<TaskRecord>> ListOpenTasks() = 0;
  // The highest task number ever issued (0: none).
  virtual Result<uint64_t> LastTaskNumber() = 0;

  // Models. InsertModel and CloseRound also store model.replay_record, if any, as
  // PutReplayRecord(model.version, ...) within their transaction.
  virtual Status InsertModel(const ModelRecord& model) = 0;
  virtual Result<std::optional<ModelRecord>> LatestModel() = 0;
  virtual Result<std::optional<ModelRecord>> GetModel(uint64_t version) = 0;

  // Replay records (schema version 2), one per model version. AlreadyExists if
  // `version` already has one (records never change); InvalidArgument if bytes is empty.
  virtual Status PutReplayRecord(uint64_t version, const std::string& bytes) = 0;
  // The records of the versions in [from, to] that exist, in increasing version order
  // (a gap means a version without a record). Empty if from > to.
  virtual Result<std::vector<ReplayRecord>> GetReplayRecords(uint64_t from, uint64_t to) = 0;

  // Run metadata (config, seed) and per-round metrics.
  virtual Status PutMeta(const std::string& key, const std::string& value) = 0;
  virtual Result<std::optional<std::string>> GetMeta(const std::string& key) = 0;
  virtual Status AppendRoundMetrics(const RoundMetrics& metrics) = 0;
  virtual Result<std::vector<RoundMetrics>> ListRoundMetrics() = 0;

  // Transactions committed through this store since it was opened, explicit ones and
  // single statements alike (what each costs: a WAL commit, an fsync when durable).
  virtual uint64_t committed_transactions() const = 0;
};

}  // namespace fl::internal

#endif  // FL_SDK_STORE_STORE_H_
