#ifndef FL_SERVER_COORDINATOR_H_
#define FL_SERVER_COORDINATOR_H_

// The server side of every federation: synchronous rounds or an asynchronous buffer
// (CoordinatorOptions::mode) over one Strategy, state in a Store. fl-server puts it behind gRPC (server/grpc_service.h); fl-sim and tests call
// it in process (simulations/in_process_link.h). No transport code lives here.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fl/env.h"
#include "fl/param_set.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/model_snapshot.h"
#include "fl/task.h"
#include "fl/update.h"
#include "server/staleness.h"
#include "server/update_policy.h"
#include "store/store.h"

namespace fl::internal {

// How updates become model versions.
//   kSync:  rounds. A round selects clients, waits for their updates (or its deadline) and
//           applies them as one server step.
//   kAsync: a buffer (specs/async-co2.md). PullTask hands a task (a task number in
//           Task::round, its base version in Task::model_version) to any client while
//           fewer than async.concurrency tasks are held; each update is folded on arrival
//           with staleness tau = version - base (weight x s(tau), dense tensors scaled by
//           the gap penalty 1/Lambda_l); every async.buffer_size accepted updates are one
//           server step and a new version, served at once while its model file is
//           written without the lock (pushes go on into the next buffer); observers
//           hear of it once it is durable. num_rounds counts flushes. In the store a
//           buffer is a rounds row, the ledger's round is the task number (its buffer
//           and staleness columns say where and how it was folded), and each flush has
//           a flushes row (version, updates, weight, staleness histogram).
enum class CoordinatorMode : int { kSync = 1, kAsync = 2 };

// "sync" | "async"; InvalidArgument otherwise.
Result<CoordinatorMode> ParseCoordinatorMode(std::string_view name);
std::string_view CoordinatorModeName(CoordinatorMode mode);

struct CoordinatorOptions {
  CoordinatorMode mode = CoordinatorMode::kSync;
  // Asynchronous mode only (server/staleness.h). client_fraction, clients_per_round,
  // min_updates and round_deadline do not apply to it; min_clients does (no task is
  // handed out before that many clients are available).
  AsyncOptions async;
  // Directory for models/, spool/ and (unless store_path is set) state.db.
  std::string state_dir = "fl-state";
  // SQLite file; default <state_dir>/state.db. ":memory:" keeps nothing on disk.
  std::string store_path;
  // Rounds to run; after the last one PullTask answers kDone.
  uint64_t num_rounds = 10;
  // Clients selected per round: clients_per_round when > 0, otherwise
  // max(1, round(client_fraction * available)); never more than are available.
  // Selection is a seeded shuffle by client name, so it does not depend on join order;
  // it costs O(available) time per round (no sort of all clients).
  double client_fraction = 1.0;
  uint32_t clients_per_round = 0;
  // A round opens only once this many clients are available (joined, and heard from
  // within client_timeout). fl-sim sets it to the number of virtual clients.
  uint32_t min_clients = 1;
  // At the deadline a round closes if at least this many updates were accepted;
  // otherwise more clients are selected and the deadline is extended.
  uint32_t min_updates = 1;
  std::chrono::milliseconds round_deadline{std::chrono::minutes(5)};
  // A client not heard from for this long is not selected.
  std::chrono::milliseconds client_timeout{std::chrono::minutes(2)};
  // Updates larger than this are refused with ResourceExhausted.
  uint64_t max_update_bytes = 1ull << 30;
  // What a client's claims may weigh (server/update_policy.h): the weight an update is
  // folded with (weight_policy, capped at max_weight; over the cap: clip, counted as
  // robust.clipped_weight, or refuse with InvalidArgument). The ledger records the
  // weight used. Applied to every update whatever the algorithm. With a capped weight and
  // finite values the fold cannot overflow (update_policy.h); if a round's server step
  // is still not finite, the round is re-folded from the spool (durable only) without its
  // largest contributions (ledger rows "dropped at round close", robust.dropped_updates).
  UpdatePolicy update_policy;
  // L2 norm bound on dense updates: an update whose delta norm exceeds the round's bound
  // is scaled down to it before it is folded (robust.clipped_norm). The bound is
  // norm_bound when > 0; with norm_bound_quantile in (0, 1] it is (also, the smaller of
  // the two) the q-quantile of the norms accepted in earlier rounds, once at least
  // norm_bound_warmup of them were seen. Fixed for the whole round, so fl-sim and
  // fl-server agree. Both 0: off. Not applied to non-dense encodings (e.g. Ferret's).
  double norm_bound = 0;
  double norm_bound_quantile = 0;
  uint32_t norm_bound_warmup = 10;
  // Leaf aggregators of a round (agg/aggregator_tree.h): concurrent uploads fold into
  // up to this many leaves in parallel, outside the coordinator's lock; at round close
  // (or buffer flush) the leaves merge in a fixed order. Each leaf is one aggregator of
  // the strategy (FedAvg: 8 bytes per parameter, fp64 sums), created on first use, so
  // memory is O(d * leaves), never O(d * clients). 1 folds every update into one
  // aggregator, in acknowledgement order. 0: min(4, hardware threads / 2), at least 1.
  uint32_t aggregation_leaves = 0;
  // Seed for client selection and per-client training seeds.
  uint64_t seed = 1;
  // Token a client must present to Join. Empty disables enrollment checks (simulations).
  std::string enrollment_token;
  // true: every acknowledged update is fsync'd (spool file + SQLite FULL sync) so it
  // survives kill -9. false: nothing is spooled (simulations).
  bool durable = true;
  // Keep this many model versions on disk (older files are deleted); 0 keeps all.
  uint32_t keep_models = 3;
  // Downlink by replay: a client holding a model at most this many versions behind may
  // get the strategy's replay records instead of the full model, whichever is smaller
  // in bytes. Records of every round stay in the store; this bounds what one download
  // may replay (and how many the coordinator keeps in memory). 0 disables replay.
  uint32_t max_replay_rounds = 64;
  // What one enrollment token may cost the server (enforced only when enrollment_token
  // is set, i.e. when clients come from the network; fl-sim runs without one).
  // Distinct client names that may join; a known name re-joining is always accepted.
  // Beyond it Join fails with ResourceExhausted. 0: unlimited.
  uint32_t max_clients = 10000;
  // Token bucket over all joins: refills at joins_per_second, holds at most join_burst.
  // A join finding it empty fails with Unavailable ("retry after ... ms"). 0 disables.
  double joins_per_second = 20;
  uint32_t join_burst = 100;
  // A session token is valid for this long after its Join (Unauthenticated afterwards;
  // clients re-join). A re-join with the same name revokes that name's older tokens.
  std::chrono::milliseconds session_ttl{std::chrono::hours(24)};
  // Rejected updates recorded per client while one round is open (and per client
  // between rounds); further rejections are counted and logged, not written.
  uint32_t max_rejected_rows_per_client = 10;
  // Optional, not owned: the OS seam. Default Env::Default().
  Env* env = nullptr;
};

// Upper bound of CoordinatorOptions::aggregation_leaves.
inline constexpr uint32_t kMaxAggregationLeaves = 256;
// The leaves a coordinator with `options` uses: aggregation_leaves, or the default for 0.
uint32_t AggregationLeaves(const CoordinatorOptions& options);

// What the coordinator tells observers after each round.
struct RoundSummary {
  uint64_t round = 0;
  uint64_t new_version = 0;
  uint64_t num_updates = 0;
  uint64_t num_rejected = 0;
  double total_weight = 0;
  double mean_train_loss = 0;
  uint64_t bytes_up = 0;      // accepted payload bytes this round
  uint64_t bytes_down = 0;    // model bytes served this round
  double seconds = 0;         // wall time from open to close
  uint64_t replay_bytes = 0;  // size of the round's replay record (0: none)
  // Strategy::LastRoundStats() of the round (e.g. Ferret's clipped/skipped terms).
  std::map<std::string, double> strategy_stats;
};

// An authenticated caller.
struct Session {
  uint64_t client_id = 0;
};

// Thread-safe: every public method may be called from any thread.
class Coordinator {
 public:
  // Opens or resumes the federation stored under options.state_dir. If the store holds
  // no model, `initial` becomes version 0; otherwise the stored latest model is loaded
  // (and must match initial's layout) and the open round, if any, is resumed by
  // re-folding every acknowledged update of it exactly once.
  static Result<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options,
                                                     std::unique_ptr<Strategy> strategy,
                                                     const ParamSet& initial);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Enrollment: Unauthenticated on a wrong token; InvalidArgument unless the name is
  // 1-128 characters of [A-Za-z0-9._-]; ResourceExhausted for a new name beyond
  // max_clients; Unavailable when the join rate limit is exhausted. Re-joining with the
  // same name keeps the client id and revokes the name's earlier session tokens.
  Result<JoinReply> Join(const std::string& enrollment_token, const std::string& client_name);
  // In-process registration of many clients at once (fl-sim's virtual clients): every
  // name is checked as Join checks it, then all are recorded in one store transaction
  // and are available at once; a known name keeps its id. No enrollment token, join rate
  // limit or max_clients (they bound what network clients may cost), and no session
  // token: in-process callers use Session{id} with the returned ids, in the order of
  // `names`. InvalidArgument for a bad name (nothing is registered); the store's errors.
  Result<std::vector<uint64_t>> RegisterClients(const std::vector<std::string>& names);
  // The one place session tokens are checked. Unauthenticated if unknown, revoked by a
  // later Join of the same name, or older than session_ttl.
  Result<Session> Authenticate(const std::string& session_token);

  Status Heartbeat(const Session& session);
  // Long poll up to `wait` for a task for this client.
  Result<Task> PullTask(const Session& session, std::chrono::milliseconds wait);
  // NotFound if `version` is not the current global version (older ones are not served;
  // in asynchronous mode the last async.max_staleness + 1 versions are).
  // With `have_version` (the version the client holds), answers with the replay records
  // from have_version to version instead of the full model when every record exists,
  // version - have_version <= max_replay_rounds, and they are smaller than the model
  // (ModelSnapshot::is_replay()); otherwise with the full model.
  Result<ModelSnapshot> FetchModel(const Session& session, uint64_t version,
                                   std::optional<uint64_t> have_version = std::nullopt);
  // Validates and folds an update; returns only after it is durable. Errors:
  // FailedPrecondition (wrong round/version, client not selected; asynchronous mode: a
  // task not held by the caller, a base version other than the task's, or one more than
  // async.max_staleness versions old), InvalidArgument
  // (layout hash, length, non-finite, a weight over update_policy.max_weight when
  // over_cap is kRefuse), DataLoss (SHA-256 mismatch), ResourceExhausted
  // (size), PermissionDenied (payload claims another client). A rejected update gets a
  // ledger row and leaves the round unaffected. A repeat of an acknowledged update is
  // acknowledged again with duplicate = true and folded nothing.
  Result<PushAck> PushUpdate(const Session& session, const Payload& payload);
  // Same checks as PushUpdate for a payload that failed in transport (truncated
  // stream): records a ledger row with `status` and returns it.
  Status RecordTransportFailure(const Session& session, uint64_t round, const Status& status);
  // Split learning (server/split_service.h). OK if `client_id` may train for task
  // `round` now: synchronous mode, `round` is the open round and the client is selected
  // for it; asynchronous mode, the client holds open task `round`. FailedPrecondition,
  // saying which, otherwise.
  Status CheckTrainingFor(uint64_t client_id, uint64_t round);
  // Records a split session that ended with `status` (not OK; OK records nothing) as one
  // ledger row: status_code = status.code(), reason = kSplitRefusalPrefix + message,
  // `bytes` the tensor bytes it sent. The row is never an accepted update (nonzero
  // status), so recovery and AcceptedUpdates ignore it; it counts against
  // max_rejected_rows_per_client but not as a rejected update of the round.
  void RecordSplitRefusal(uint64_t client_id, uint64_t round, const Status& status,
                          uint64_t bytes);
  static constexpr char kSplitRefusalPrefix[] = "split session: ";
  ServerStatusInfo GetStatus();
  // Counters of refused work, for logs and tests.
  struct Refusals {
    uint64_t joins_over_max_clients = 0;
    uint64_t joins_rate_limited = 0;
    uint64_t rejected_rows_suppressed = 0;
  };
  Refusals GetRefusals();
  // The clients selected for the open synchronous round, ascending (those that already
  // sent their update included); empty while no round is open and in asynchronous mode.
  std::vector<uint64_t> SelectedClients();
  // Transactions the coordinator's store committed so far (Store::committed_transactions).
  uint64_t StoreTransactions();

  // Handles deadlines; called periodically by the transport's ticker and by fl-sim.
  void Poll();
  // Blocks until the federation finished all rounds or `timeout` passed; true if done.
  bool WaitUntilFinished(std::chrono::milliseconds timeout);
  // Wakes every long poll and makes further PullTask calls answer kDone.
  void Shutdown();
  // For transports that park long polls without a thread: `listener` is called whenever
  // PullTask's answer may have changed for someone (a round opened or closed, a task
  // slot freed, a version was published, the run finished or shut down), then waiting
  // polls ask again with PullTask(session, 0). Called with the coordinator's lock held:
  // it must return quickly and must not call into the Coordinator (wake a thread
  // instead). Changes by the clock alone (async.task_timeout, client_timeout) are not
  // signalled. Replaces any earlier listener; an empty function removes it.
  void SetTaskListener(std::function<void()> listener);

  // The current global model and its version.
  ModelSnapshot CurrentModel();
  // Observer called (without the lock held) after each round closes (asynchronous mode:
  // after each flush; RoundSummary::round is the flush's number).
  void SetRoundCallback(std::function<void(const RoundSummary&, const ModelSnapshot&)> cb);

  // Deterministic per-(run seed, client name, round) training seed; fl-sim and fl-server
  // give a client the same seed, so their runs agree.
  static uint64_t TrainingSeed(uint64_t run_seed, const std::string& client_name, uint64_t round);

  // One client's update of a synchronous round, folded into a partial aggregate outside
  // the coordinator (fl-sim's MPI ranks, simulations/mpi_backend.h).
  struct RemoteUpdate {
    std::string client_name;      // as it joined
    uint64_t bytes = 0;           // payload bytes
    uint64_t bytes_down = 0;      // model bytes it downloaded (from its rank)
    double weight = 0;            // the weight folded (after update_policy)
    bool weight_clipped = false;  // update_policy clipped the claimed weight
    std::string sha256;           // of the payload (32 raw bytes)
  };
  // Merges `partial` (RoundAggregator::SerializePartial of round `round`'s algorithm),
  // which folded exactly `updates`, into the open round, and accepts each update as
  // PushUpdate would (ledger row, counts); the round closes once every selected client
  // has reported. On error nothing changed (a ledger row the store fails to write is
  // logged: the update is folded already). FailedPrecondition if the
  // coordinator is durable (a remote update has no spool file to refold from), in
  // asynchronous mode, uses norm bounding (which needs every update's norm here), if
  // `round` is not the open round, or a client is unknown, not selected, already
  // reported or listed twice; InvalidArgument if the aggregator refuses the partial; Unimplemented
  // if the round's aggregator has no partial state.
  Status MergeRemotePartial(uint64_t round, const std::vector<RemoteUpdate>& updates,
                            std::string_view partial);

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl::internal

#endif  // FL_SERVER_COORDINATOR_H_
