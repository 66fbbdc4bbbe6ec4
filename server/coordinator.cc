#include "server/coordinator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "agg/aggregator_tree.h"
#include "codec/dense_codec.h"
#include "codec/param_io.h"
#include "core/client_name.h"
#include "core/hash.h"
#include "core/logging.h"
#include "crypto/sha256.h"
#include "crypto/update_digest.h"
#include "rng/splitmix64.h"
#include "server/client_table.h"
#include "server/update_spool.h"

namespace fl::internal {
namespace {

// Compares secrets in time independent of where they differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string ModelPath(const std::string& dir, uint64_t version) {
  return dir + "/models/v" + std::to_string(version) + ".flps";
}

std::string SpoolPath(const std::string& dir, uint64_t round, uint64_t client) {
  return dir + "/spool/r" + std::to_string(round) + "-c" + std::to_string(client) + ".upd";
}

// Norms of accepted updates kept for the adaptive norm bound (the latest ones).
constexpr size_t kMaxNormHistory = 4096;

// Asynchronous mode: tasks one client may hold at once. Two, so a client can train on a
// new task while its previous update is still uploading (CO2's overlap); pulling a third
// closes its oldest, so retried pulls cannot pile up slots.
constexpr size_t kMaxTasksPerClient = 2;

// Writes a model version's file; *sha256_hex is the SHA-256 of what was written.
Status WriteModelFile(Env* env, const ParamSet& params, const std::string& path, bool sync,
                      std::string* sha256_hex) {
  const std::string data = SerializeParamSet(params);
  *sha256_hex = HexEncode(Sha256(data));
  return env->WriteFileAtomic(path, data, sync);
}

// A stored model version, checked against its SHA-256.
Result<ModelSnapshot> LoadModelFile(Env* env, const ModelRecord& record) {
  FL_ASSIGN_OR_RETURN(std::string data, env->ReadFile(record.path));
  if (HexEncode(Sha256(data)) != record.sha256_hex) {
    return Status::DataLoss("model file " + record.path + " does not match its SHA-256");
  }
  FL_ASSIGN_OR_RETURN(ParamSet params, ParseParamSet(data));
  ModelSnapshot snapshot;
  snapshot.version = record.version;
  snapshot.params = std::make_shared<ParamSet>(std::move(params));
  snapshot.wire_bytes = data.size();
  return snapshot;
}

// Per tensor, the L2 norm (fp64) of after - before. REQUIRES: the same layout.
std::vector<double> StepNorms(const ParamSet& before, const ParamSet& after) {
  std::vector<double> norms;
  for (const TensorSpec& t : before.layout().tensors()) {
    double sum = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      const double d = static_cast<double>(after.data()[i]) - before.data()[i];
      sum += d * d;
    }
    norms.push_back(std::sqrt(sum));
  }
  return norms;
}

// An update as the update policy turned it into what the aggregator folds.
struct PreparedUpdate {
  // The metadata it is folded with (the server's weight; in asynchronous mode the
  // buffer's number as its round): RoundAggregator::AccumulateWithMeta reads the values
  // in place, so rewriting the metadata copies nothing.
  UpdateMeta meta;
  bool meta_rewritten = false;  // meta differs from the update's own
  // A copy with scaled values (norm bound, gap penalty), if scaled: the scratch payload
  // given to PrepareForFold, valid until it is reused.
  Payload* owned = nullptr;
  double weight = 0;                 // the weight folded
  bool weight_clipped = false;       // the claim was over the cap and clipped
  std::optional<double> norm;        // L2 norm of a dense delta as received
  bool norm_clipped = false;         // scaled down to the round's bound
  const Payload& Get(const Payload& original) const { return owned != nullptr ? *owned : original; }
};

// What the server does to an update before folding it, decided under the coordinator's
// lock from the round's state; PrepareForFold carries it out (the O(d) part: the norm,
// the copy and the scaling) without the lock.
struct FoldPlan {
  double weight = 0;            // the update policy's weight
  bool weight_clipped = false;
  bool measure_norm = false;    // norm bounding is on: measure the dense delta's L2 norm
  double norm_bound = 0;        // scale the delta down to this norm; 0: no bound
  // Asynchronous mode: the buffer the update is folded into (its number replaces the
  // task number as meta.round), the staleness weight factor and, with a gap penalty,
  // each tensor's scale 1/Lambda_l (empty: none).
  bool async = false;
  uint64_t buffer = 0;
  double staleness_factor = 1;
  std::vector<double> tensor_scales;
  std::shared_ptr<const ParamSet> global;  // the layout the tensor scales refer to
};

// Makes p's payload a modifiable copy of `in` in *scratch (once), to scale its values.
void Own(const Payload& in, Payload* scratch, PreparedUpdate* p) {
  if (p->owned != nullptr) return;
  scratch->meta = in.meta;
  scratch->bytes.assign(in.bytes);
  p->owned = scratch;
}

// Carries out `plan` on `in`: the policy's weight, the norm bound on a dense delta and,
// in asynchronous mode, weight x s(staleness), the buffer's number and the gap penalty.
// The metadata is rewritten in p.meta; a copy is made into *scratch only if the values
// must be scaled (norm bound, gap penalty). Malformed content passes
// through unchanged for the aggregator to refuse. Thread-safe (touches only its
// arguments).
Result<PreparedUpdate> PrepareForFold(const Payload& in, const FoldPlan& plan, Payload* scratch) {
  PreparedUpdate p;
  p.meta = in.meta;
  p.weight = plan.weight;
  p.weight_clipped = plan.weight_clipped;
  if (plan.measure_norm) {
    Result<std::optional<double>> norm = UpdateNorm(in);
    if (norm.ok() && norm->has_value() && std::isfinite(**norm)) {
      p.norm = **norm;
      if (plan.norm_bound > 0 && *p.norm > plan.norm_bound) {
        Own(in, scratch, &p);
        if (ScaleUpdate(plan.norm_bound / *p.norm, p.owned).ok()) p.norm_clipped = true;
      }
    }
  }
  if (plan.async) {
    p.weight *= plan.staleness_factor;
    p.meta.round = plan.buffer;
  }
  p.meta_rewritten = plan.async || !(p.weight == in.meta.weight);
  p.meta.weight = p.weight;
  if (plan.tensor_scales.empty()) return p;
  const Layout& layout = plan.global->layout();
  // A payload that does not fit the layout is left for the aggregator to refuse.
  if (in.meta.layout_hash != layout.hash()) return p;
  Own(in, scratch, &p);
  Status scaled = ScaleDenseUpdateTensors(layout, plan.tensor_scales, p.owned);
  if (!scaled.ok() && scaled.code() != StatusCode::kInvalidArgument) return scaled;
  return p;
}

// Folds a prepared update into `agg`: its values (scaled copy or as received) with the
// metadata the server gave it.
Status FoldPrepared(RoundAggregator& agg, const Payload& in, const PreparedUpdate& p) {
  if (!p.meta_rewritten) return agg.Accumulate(p.Get(in));
  return agg.AccumulateWithMeta(p.meta, p.Get(in));
}

}  // namespace

Result<CoordinatorMode> ParseCoordinatorMode(std::string_view name) {
  if (name == "sync") return CoordinatorMode::kSync;
  if (name == "async") return CoordinatorMode::kAsync;
  return Status::InvalidArgument("unknown coordinator mode '" + std::string(name) +
                                 "' (expected sync or async)");
}

uint32_t AggregationLeaves(const CoordinatorOptions& options) {
  if (options.aggregation_leaves > 0) return std::min(options.aggregation_leaves, kMaxAggregationLeaves);
  // Leaves pay off only with cores to spare beside the pushes' own hashing and decoding:
  // on 2 cores, 10 concurrent 10M-parameter pushes ran slower with 2 or 4 leaves than
  // with 1 (fold_bench BM_FoldConcurrent), each extra leaf costing an fp64 buffer and a
  // merge per round.
  return std::clamp<uint32_t>(std::thread::hardware_concurrency() / 2, 1, 4);
}

std::string_view CoordinatorModeName(CoordinatorMode mode) {
  return mode == CoordinatorMode::kAsync ? "async" : "sync";
}

struct Coordinator::Impl {
  using ClientState = ClientTable::Client;

  CoordinatorOptions opt;
  Env* env = nullptr;
  std::unique_ptr<Strategy> strategy;
  std::unique_ptr<Store> store;

  std::mutex mu;
  // Round opened/closed, a task slot freed, a version published, shutdown: wakes the
  // threads blocked in PullTask and tells the transport's listener (SetTaskListener).
  // Notified with mu held.
  struct ChangeSignal {
    std::condition_variable cv;
    std::function<void()> listener;
    void notify_all() {
      cv.notify_all();
      if (listener) listener();
    }
    template <class... Args>
    auto wait_until(Args&&... args) { return cv.wait_until(std::forward<Args>(args)...); }
    template <class... Args>
    auto wait_for(Args&&... args) { return cv.wait_for(std::forward<Args>(args)...); }
    template <class... Args>
    void wait(Args&&... args) { cv.wait(std::forward<Args>(args)...); }
  } changed;

  // Global model.
  std::shared_ptr<const ParamSet> global;
  uint64_t version = 0;
  uint64_t model_wire_bytes = 0;
  // Replay records of the latest versions (at most max_replay_rounds), by the version
  // each produces; older ones are read from the store when asked for.
  std::map<uint64_t, std::shared_ptr<const std::string>> replay_cache;

  // Clients and sessions.
  ClientTable clients;
  struct SessionState {
    uint64_t client_id = 0;
    int64_t created_at = 0;  // unix seconds (Env clock)
  };
  std::map<std::string, SessionState> sessions;  // token hash hex -> session
  // Names are looked up in the store (Join), not held twice: a million registered
  // clients would cost a map node and a string copy each.

  // Join rate limit (token bucket) and refusal counters.
  double join_tokens = 0;
  uint64_t join_refill_us = 0;
  Coordinator::Refusals refusals;
  // Rejected ledger rows written per client since the current round opened.
  std::map<uint64_t, uint32_t> rejected_rows;

  // The open round, if any.
  bool round_open = false;
  uint64_t next_round = 1;
  RoundRecord round;
  std::set<uint64_t> selected;
  std::map<uint64_t, std::string> accepted_sha;  // client -> sha256 of its accepted update
  // The open round's (or buffer's) aggregation: leaves that fold concurrent updates in
  // parallel, merged in a fixed order at close (agg/aggregator_tree.h).
  std::unique_ptr<AggregatorTree> tree;
  // Updates acknowledged into the open round or buffer.
  uint64_t acked = 0;
  // Folds admitted and not yet finished: folding into a leaf without the lock, then
  // writing their ledger row. The tree is replaced, merged or refolded only when there
  // are none (QuiesceFoldsLocked), so a round never closes under a fold in flight.
  uint64_t folds_in_flight = 0;
  std::set<uint64_t> folding_clients;  // one fold per client at a time
  // Threads waiting for the folds in flight to finish; no fold starts meanwhile.
  uint32_t quiescing = 0;
  // A fold landed in a leaf but its update could not be made durable: the tree must be
  // rebuilt from the ledger before anything else reads it.
  bool refold_needed = false;
  // Where refolds under the lock copy an update they must modify (PrepareForFold).
  Payload scratch_payload;
  uint64_t round_deadline_us = 0;
  uint64_t round_opened_us = 0;
  uint64_t rejected = 0;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  // Update policy state (CoordinatorOptions::update_policy, norm_bound*).
  double round_norm_bound = 0;      // the open round's L2 bound; 0: none
  std::vector<double> round_norms;  // norms of the open round's accepted dense updates
  std::vector<double> norm_history; // norms accepted in closed rounds, oldest first
  uint64_t clipped_weight = 0;      // the open round's updates folded with the capped weight
  uint64_t clipped_norm = 0;        // ... scaled down to round_norm_bound
  uint64_t dropped_updates = 0;     // ... dropped because the round's step was not finite

  // Asynchronous mode: the open round is the open buffer.
  struct HeldTask {
    uint64_t client_id = 0;
    uint64_t base_version = 0;
    uint64_t issued_us = 0;  // Env clock; restored tasks count from the restart
  };
  // Task number -> holder. A task holds one of async.concurrency slots until answered,
  // superseded, expired (its base left the window) or older than async.task_timeout.
  std::map<uint64_t, HeldTask> open_tasks;
  uint64_t last_task = 0;
  // The current and the previous version (the one most fetches of an older version ask
  // for); older servable versions are read from their files.
  std::map<uint64_t, ModelSnapshot> served;
  StepNormHistory step_norms{1};
  std::map<uint64_t, uint64_t> buffer_staleness;  // staleness -> updates in the open buffer
  std::vector<std::string> buffer_spool;          // spool files of the open buffer
  // A flushed buffer whose version is already served but not yet durable. Its model file
  // is written without the lock, so pushes into the next buffer go on meanwhile; then its
  // store rows commit (closing it and recording the next buffer in one transaction).
  // Killed before that, the store still has the buffer open and its refold recomputes
  // the same version. At most one at a time: the next flush completes it first.
  struct PendingFlush {
    std::shared_ptr<const ParamSet> params;
    RoundRecord closed;
    ModelRecord model;
    FlushRecord flush;
    RoundSummary summary;
    std::vector<std::string> spool;
    bool writing = false;       // a thread is writing the model file without the lock
    bool file_written = false;
  };
  std::optional<PendingFlush> pending_flush;

  bool finished = false;
  bool shutdown = false;

  std::function<void(const RoundSummary&, const ModelSnapshot&)> round_callback;
  // Round summaries produced under the lock, delivered after it is released.
  std::vector<std::pair<RoundSummary, ModelSnapshot>> pending_callbacks;

  // ---- helpers; all *Locked methods REQUIRE mu held ----

  uint64_t NowUs() { return env->NowMicros(); }
  bool Async() const { return opt.mode == CoordinatorMode::kAsync; }

  ModelSnapshot SnapshotLocked() const {
    ModelSnapshot snapshot;
    snapshot.version = version;
    snapshot.params = global;
    snapshot.wire_bytes = model_wire_bytes;
    return snapshot;
  }

  void CacheReplayLocked(uint64_t v, std::shared_ptr<const std::string> record) {
    if (opt.max_replay_rounds == 0) return;
    replay_cache[v] = std::move(record);
    while (replay_cache.size() > opt.max_replay_rounds) replay_cache.erase(replay_cache.begin());
  }

  // The replay records turning version `have` into `want`, in order, if every one
  // exists; NotFound otherwise.
  Result<std::vector<std::shared_ptr<const std::string>>> ReplayRecordsLocked(uint64_t have,
                                                                              uint64_t want) {
    std::vector<std::shared_ptr<const std::string>> out;
    auto it = replay_cache.find(have + 1);
    for (uint64_t v = have + 1; v <= want && it != replay_cache.end() && it->first == v; ++v) {
      out.push_back(it->second);
      ++it;
    }
    if (out.size() == want - have) return out;
    // Older than the cache (or a server restart emptied it): the store has every round's.
    FL_ASSIGN_OR_RETURN(std::vector<ReplayRecord> stored, store->GetReplayRecords(have + 1, want));
    if (stored.size() != want - have) {
      return Status::NotFound("no replay records for every version from " +
                              std::to_string(have + 1) + " to " + std::to_string(want));
    }
    out.clear();
    for (ReplayRecord& r : stored) {
      auto record = std::make_shared<const std::string>(std::move(r.bytes));
      if (r.version + opt.max_replay_rounds > version) CacheReplayLocked(r.version, record);
      out.push_back(std::move(record));
    }
    return out;
  }

  void Touch(uint64_t client_id) {
    ClientState* c = clients.Find(client_id);
    if (c != nullptr) c->last_seen_us = std::max<uint64_t>(1, NowUs());
  }

  std::vector<uint64_t> AvailableClientsLocked() {
    std::vector<uint64_t> out;
    const uint64_t now = NowUs();
    const uint64_t timeout_us = static_cast<uint64_t>(opt.client_timeout.count()) * 1000;
    clients.ForEach([&](uint64_t id, const ClientState& c) {
      if (c.last_seen_us != 0 && now - std::min(now, c.last_seen_us) <= timeout_us) {
        out.push_back(id);
      }
    });
    return out;
  }

  // The first `n` of `ids` (all if fewer) in the round's order, in that order. The order
  // sorts by a seeded hash of (round, name), then by name: independent of join order and
  // of client ids, so fl-sim and fl-server select the same clients. Each key is computed
  // once and only the first n are sorted: O(ids) time, for a million clients too.
  std::vector<uint64_t> FirstForRound(const std::vector<uint64_t>& ids, uint64_t round_number,
                                      size_t n) {
    struct Keyed {
      uint64_t key;
      const ClientState* client;
      uint64_t id;
    };
    std::vector<Keyed> keyed;
    keyed.reserve(ids.size());
    for (uint64_t id : ids) {
      const ClientState& c = clients[id];
      keyed.push_back(
          {SplitMix64(opt.seed ^ SplitMix64(round_number ^ Fnv1a64(c.name))), &c, id});
    }
    auto before = [](const Keyed& a, const Keyed& b) {
      return a.key != b.key ? a.key < b.key : a.client->name < b.client->name;
    };
    n = std::min(n, keyed.size());
    std::nth_element(keyed.begin(), keyed.begin() + static_cast<std::ptrdiff_t>(n), keyed.end(),
                     before);
    keyed.resize(n);
    std::sort(keyed.begin(), keyed.end(), before);
    std::vector<uint64_t> out;
    out.reserve(n);
    for (const Keyed& k : keyed) out.push_back(k.id);
    return out;
  }

  size_t SelectionSize(size_t available) const {
    size_t n = opt.clients_per_round > 0
                   ? opt.clients_per_round
                   : static_cast<size_t>(std::llround(opt.client_fraction * available));
    n = std::max<size_t>(n, 1);
    return std::min(n, available);
  }

  // True, and the federation is finished, once every round (or buffer) has run.
  bool FinishedAllLocked() {
    if (next_round <= opt.num_rounds) return false;
    finished = true;
    changed.notify_all();
    return true;
  }

  // Records round (or buffer: `what`) next_round as open at the current version with
  // `selected`; false, logged, if the store refuses it.
  bool RecordOpenLocked(const char* what, std::vector<uint64_t> selected, RoundRecord* r) {
    r->round = next_round;
    r->base_version = version;
    r->state = RoundState::kOpen;
    r->selected = std::move(selected);
    r->opened_at = env->NowUnixSeconds();
    Status s = store->InsertRound(*r);
    if (!s.ok()) FL_LOG(ERROR) << "cannot record " << what << " " << r->round << ": " << s.ToString();
    return s.ok();
  }

  void MaybeOpenRoundLocked() {
    if (Async()) return MaybeOpenBufferLocked();
    if (round_open || finished || shutdown || FinishedAllLocked()) return;
    // Cheap before the scan: fl-sim registers its clients in batches, each of which
    // asks for the round.
    if (clients.size() < std::max<uint32_t>(opt.min_clients, 1)) return;
    std::vector<uint64_t> available = AvailableClientsLocked();
    if (available.size() < std::max<uint32_t>(opt.min_clients, 1)) return;
    std::vector<uint64_t> order =
        FirstForRound(available, next_round, SelectionSize(available.size()));
    std::sort(order.begin(), order.end());

    RoundRecord r;
    if (!RecordOpenLocked("round", order, &r)) return;
    StartRoundLocked(r);
    SaveNormStateLocked();
    FL_LOG(INFO) << "round " << r.round << " opened: " << order.size() << " of "
                 << clients.size() << " clients selected, base version " << version;
  }

  bool NormBoundingOn() const { return opt.norm_bound > 0 || opt.norm_bound_quantile > 0; }

  // The L2 bound for a new round: norm_bound, and/or the q-quantile of the norms of
  // earlier rounds once norm_bound_warmup were seen (the smaller if both apply).
  double RoundNormBoundLocked() const {
    double bound = opt.norm_bound > 0 ? opt.norm_bound : 0;
    const size_t warmup = std::max<size_t>(opt.norm_bound_warmup, 1);
    if (opt.norm_bound_quantile > 0 && norm_history.size() >= warmup) {
      std::vector<double> sorted = norm_history;
      std::sort(sorted.begin(), sorted.end());
      const double rank = std::ceil(opt.norm_bound_quantile * static_cast<double>(sorted.size()));
      const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(std::max(rank, 1.0)) - 1);
      if (sorted[i] > 0) bound = bound > 0 ? std::min(bound, sorted[i]) : sorted[i];
    }
    return bound;
  }

  // The adaptive bound's state (the open round, its bound, the history it came from) is
  // stored when a round opens, before any update of it is folded, so a restarted
  // coordinator refolds the round with the same bound and goes on with the same history.
  static constexpr char kNormStateKey[] = "coordinator.norm_bound_state";

  void SaveNormStateLocked() {
    if (opt.norm_bound_quantile <= 0) return;
    std::string text;
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%llu %.17g", static_cast<unsigned long long>(round.round),
                  round_norm_bound);
    text += buf;
    for (double n : norm_history) {
      std::snprintf(buf, sizeof(buf), " %.17g", n);
      text += buf;
    }
    Status s = store->PutMeta(kNormStateKey, text);
    if (!s.ok()) FL_LOG(ERROR) << "cannot store the norm bound state: " << s.ToString();
  }

  // Restores the history; returns the stored bound if it belongs to `open_round`.
  std::optional<double> LoadNormStateLocked(uint64_t open_round) {
    if (opt.norm_bound_quantile <= 0) return std::nullopt;
    Result<std::optional<std::string>> text = store->GetMeta(kNormStateKey);
    if (!text.ok() || !text->has_value()) return std::nullopt;
    std::istringstream in(**text);
    unsigned long long stored_round = 0;
    double bound = 0;
    if (!(in >> stored_round >> bound)) return std::nullopt;
    norm_history.clear();
    for (double n; in >> n;) {
      if (std::isfinite(n) && n >= 0) norm_history.push_back(n);
    }
    if (norm_history.size() > kMaxNormHistory) {
      norm_history.erase(norm_history.begin(),
                         norm_history.end() - static_cast<std::ptrdiff_t>(kMaxNormHistory));
    }
    if (stored_round != open_round || !std::isfinite(bound) || bound < 0) return std::nullopt;
    return bound;
  }

  void ResetRoundPolicyLocked() {
    round_norms.clear();
    clipped_weight = 0;
    clipped_norm = 0;
    dropped_updates = 0;
  }

  // The update policy for `in` (the server's weight; InvalidArgument if refused with
  // weight_over_cap = refuse) and the round's norm bound, as a plan for PrepareForFold.
  Result<FoldPlan> PlanLocked(const Payload& in) const {
    FoldPlan plan;
    FL_ASSIGN_OR_RETURN(plan.weight,
                        PolicyWeight(opt.update_policy, in.meta.weight, &plan.weight_clipped));
    plan.measure_norm = NormBoundingOn();
    plan.norm_bound = round_norm_bound;
    return plan;
  }

  // The plan for an update of the open buffer with `staleness` (asynchronous mode).
  Result<FoldPlan> PlanAsyncLocked(const Payload& in, uint64_t staleness) const {
    FL_ASSIGN_OR_RETURN(FoldPlan plan, PlanLocked(in));
    plan.async = true;
    plan.buffer = round.round;
    plan.staleness_factor = StalenessFactor(opt.async, staleness);
    plan.global = global;
    if (opt.async.gap_penalty > 0 && staleness > 0) {
      plan.tensor_scales = step_norms.GapPenalty(opt.async.gap_penalty, version - staleness,
                                                 version, global->layout().num_tensors());
      for (double& f : plan.tensor_scales) f = 1.0 / f;
    }
    return plan;
  }

  // An acknowledged update read back from the spool, prepared under the lock as it was
  // folded when acknowledged (in asynchronous mode with its recorded staleness).
  Result<PreparedUpdate> PrepareSpooledLocked(const LedgerEntry& e, const Payload& p) {
    FL_ASSIGN_OR_RETURN(FoldPlan plan, Async() ? PlanAsyncLocked(p, e.staleness) : PlanLocked(p));
    return PrepareForFold(p, plan, &scratch_payload);
  }

  // Counts what the policy did to an update the round accepted.
  void CountPreparedLocked(const PreparedUpdate& p) {
    if (p.weight_clipped) ++clipped_weight;
    if (p.norm_clipped) ++clipped_norm;
    if (p.norm.has_value()) round_norms.push_back(*p.norm);
  }

  // The round's policy counters as strategy stats (robust.*): only those in use, so
  // metrics.csv of a run without them keeps its columns.
  void AddPolicyStatsLocked(std::map<std::string, double>* stats) const {
    if (NormBoundingOn()) {
      (*stats)["robust.norm_bound"] = round_norm_bound;
      (*stats)["robust.clipped_norm"] = static_cast<double>(clipped_norm);
    }
    if (clipped_weight > 0) (*stats)["robust.clipped_weight"] = static_cast<double>(clipped_weight);
    if (dropped_updates > 0) {
      (*stats)["robust.dropped_updates"] = static_cast<double>(dropped_updates);
    }
  }

  void StartRoundLocked(const RoundRecord& r) {
    round = r;
    round_norm_bound = RoundNormBoundLocked();
    ResetRoundPolicyLocked();
    round_open = true;
    selected = std::set<uint64_t>(r.selected.begin(), r.selected.end());
    accepted_sha.clear();
    NewTreeLocked();
    round_opened_us = NowUs();
    round_deadline_us = round_opened_us + static_cast<uint64_t>(opt.round_deadline.count()) * 1000;
    rejected = 0;
    rejected_rows.clear();
    bytes_up = 0;
    bytes_down = 0;
    changed.notify_all();
  }

  // Rebuilds the round's aggregator from the durable ledger: every acknowledged update
  // folded exactly once. Used at startup and if a durability step failed mid-update.
  // Folds an acknowledged update (read from the spool into *p) into the open aggregator as
  // it was folded when acknowledged: the update policy and, in asynchronous mode, its
  // recorded staleness. False if the policy now refuses it (only if the policy changed
  // since), which is logged and skipped.
  Result<bool> RefoldSpooledLocked(const LedgerEntry& e, Payload* p) {
    FL_ASSIGN_OR_RETURN(*p, ReadSpooledLocked(e));
    Result<FoldPlan> plan = PlanLocked(*p);
    if (!plan.ok()) {
      FL_LOG(WARNING) << "refolding " << e.spool_path << ": skipped by the update policy: "
                      << plan.status().ToString();
      return false;
    }
    if (Async()) plan = PlanAsyncLocked(*p, e.staleness);
    if (!plan.ok()) return plan.status();
    FL_ASSIGN_OR_RETURN(PreparedUpdate prepared, PrepareForFold(*p, *plan, &scratch_payload));
    FL_RETURN_IF_ERROR(
        tree->AccumulateSerial([&](RoundAggregator& leaf) {
              return FoldPrepared(leaf, *p, prepared);
            }).WithContext("refolding " + e.spool_path));
    CountPreparedLocked(prepared);
    return true;
  }

  // A fresh, empty tree for the open round (or buffer), computed against the current
  // global model.
  void NewTreeLocked() {
    std::shared_ptr<const ParamSet> base = global;
    const uint64_t r = round.round;
    tree = std::make_unique<AggregatorTree>(
        AggregationLeaves(opt), [this, base, r] { return strategy->NewRoundAggregator(*base, r); });
    acked = 0;
  }

  // REQUIRES: no fold in flight (QuiesceFoldsLocked, or at startup).
  Status RefoldRoundLocked() {
    if (Async()) return RefoldBufferLocked();
    NewTreeLocked();
    accepted_sha.clear();
    bytes_up = 0;
    ResetRoundPolicyLocked();
    FL_ASSIGN_OR_RETURN(std::vector<LedgerEntry> entries, store->AcceptedUpdates(round.round));
    for (const LedgerEntry& e : entries) {
      Payload p;
      FL_ASSIGN_OR_RETURN(bool folded, RefoldSpooledLocked(e, &p));
      if (!folded) continue;
      ++acked;
      accepted_sha[e.client_id] = p.meta.sha256;
      bytes_up += p.bytes.size();
    }
    return Status::Ok();
  }

  // The spooled payload of an accepted ledger row, checked against the row's SHA-256.
  Result<Payload> ReadSpooledLocked(const LedgerEntry& e) {
    if (e.spool_path.empty()) {
      return Status::DataLoss("accepted update of client " + std::to_string(e.client_id) +
                              " in round " + std::to_string(e.round) + " was not spooled");
    }
    FL_ASSIGN_OR_RETURN(std::string data, env->ReadFile(e.spool_path));
    FL_ASSIGN_OR_RETURN(Payload p, DecodeSpooledUpdate(data));
    if (HexEncode(Sha256(p.bytes)) != e.sha256_hex) {
      return Status::DataLoss("spooled update " + e.spool_path + " does not match its ledger row");
    }
    return p;
  }

  // The round's server step failed (it would make the model or the optimizer state
  // non-finite). Re-folds the round's spooled updates without its largest contributions
  // (the policy's weight times the L2 norm of the delta as folded; the weight alone for
  // non-dense updates), dropping one more each time, largest first, until the step
  // succeeds, so the other updates land. The dropped updates get a ledger row
  // (InvalidArgument, "dropped at round close ...") and are counted
  // (robust.dropped_updates). On success *next is the new model, *replay its record and
  // *summary describes the updates used. FailedPrecondition if the updates were not
  // spooled (durable = false) or fewer than two; InvalidArgument if no subset helps.
  // Reads each spooled update once per attempt: O(n^2) reads at worst, only on this path.
  Status StepWithoutOffendersLocked(ParamSet* next, RoundSummary* summary, std::string* replay) {
    FL_ASSIGN_OR_RETURN(std::vector<LedgerEntry> entries,
                        Async() ? store->AcceptedUpdatesInBuffer(round.round)
                                : store->AcceptedUpdates(round.round));
    if (entries.size() < 2) return Status::FailedPrecondition("fewer than two updates");
    for (const LedgerEntry& e : entries) {
      if (e.spool_path.empty()) {
        return Status::FailedPrecondition("updates are not spooled (coordinator.durable is off)");
      }
    }
    // Largest contribution first; ties in arrival order.
    std::vector<std::pair<double, size_t>> order;
    for (size_t i = 0; i < entries.size(); ++i) {
      double score = std::numeric_limits<double>::infinity();
      Result<Payload> p = ReadSpooledLocked(entries[i]);
      Result<PreparedUpdate> prepared =
          p.ok() ? PrepareSpooledLocked(entries[i], *p) : Result<PreparedUpdate>(p.status());
      if (prepared.ok()) {
        Result<std::optional<double>> norm = UpdateNorm(prepared->Get(*p));
        const double magnitude = norm.ok() && norm->has_value() ? **norm : 1.0;
        score = prepared->weight * magnitude;
        if (std::isnan(score)) score = std::numeric_limits<double>::infinity();
      }
      order.emplace_back(score, i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t k = 1; k < entries.size(); ++k) {
      std::vector<bool> drop(entries.size(), false);
      for (size_t j = 0; j < k; ++j) drop[order[j].second] = true;
      std::unique_ptr<RoundAggregator> agg = strategy->NewRoundAggregator(*global, round.round);
      for (size_t i = 0; i < entries.size(); ++i) {
        if (drop[i]) continue;
        Result<Payload> p = ReadSpooledLocked(entries[i]);
        if (!p.ok()) return p.status();
        Result<PreparedUpdate> prepared = PrepareSpooledLocked(entries[i], *p);
        if (!prepared.ok() || !FoldPrepared(*agg, *p, *prepared).ok()) drop[i] = true;
      }
      if (!agg->CanReport()) break;
      Result<AggregateReport> report = std::move(*agg).Report();
      if (!report.ok()) continue;
      ParamSet trial = *global;
      RoundSummary trial_summary = *summary;
      std::string trial_replay;
      if (!ApplyStepLocked(std::move(report).value(), &trial, &trial_summary, &trial_replay).ok()) {
        continue;
      }
      *next = std::move(trial);
      *replay = std::move(trial_replay);
      *summary = std::move(trial_summary);
      for (size_t i = 0; i < entries.size(); ++i) {
        if (!drop[i]) continue;
        const LedgerEntry& e = entries[i];
        ++dropped_updates;
        LedgerEntry row = e;
        row.id = 0;
        row.status_code = static_cast<int>(StatusCode::kInvalidArgument);
        row.reason = Async() ? "dropped at flush: the buffer's server step was not finite with it"
                             : "dropped at round close: the round's server step was not finite with it";
        row.spool_path.clear();
        row.created_at = env->NowUnixSeconds();
        Result<int64_t> id = store->AppendLedger(row);
        if (!id.ok()) FL_LOG(ERROR) << "cannot record a dropped update: " << id.status().ToString();
        FL_LOG(WARNING) << "round " << round.round << ": update of client " << e.client_id
                        << " dropped: the server step was not finite with it";
      }
      return Status::Ok();
    }
    return Status::InvalidArgument("no subset of the round's updates gives a finite step");
  }

  // Writes an acknowledged update, as client `id` sent it, to the spool (fsync'd).
  Status SpoolLocked(const Payload& payload, uint64_t id, const std::string& path) {
    UpdateMeta meta = payload.meta;
    meta.client_id = id;
    return env->WriteFileAtomic(path, EncodeSpooledUpdate(meta, payload.bytes), true);
  }

  Status WriteModelLocked(const ParamSet& params, uint64_t v, ModelRecord* record) {
    std::string data = SerializeParamSet(params);
    record->version = v;
    record->path = ModelPath(opt.state_dir, v);
    record->sha256_hex = HexEncode(Sha256(data));
    record->num_params = params.size();
    record->layout_hash = params.layout().hash();
    record->strategy_state = strategy->SaveState();
    record->created_at = env->NowUnixSeconds();
    model_wire_bytes = data.size();
    return env->WriteFileAtomic(record->path, data, opt.durable);
  }

  // The round's norms feed the adaptive bound of the rounds after it. Sorted, so the
  // history does not depend on arrival order. The caller stores it (SaveNormStateLocked).
  void KeepRoundNormsLocked() {
    std::sort(round_norms.begin(), round_norms.end());
    norm_history.insert(norm_history.end(), round_norms.begin(), round_norms.end());
    if (norm_history.size() > kMaxNormHistory) {
      norm_history.erase(norm_history.begin(),
                         norm_history.end() - static_cast<std::ptrdiff_t>(kMaxNormHistory));
    }
    round_norms.clear();
  }

  // One server step: applies `report` to `next` (a copy of the global model) and fills
  // the summary's counts and the strategy's statistics, and `replay` with the step's
  // record. On error `next` may be partly written; the caller restores it.
  Status ApplyStepLocked(AggregateReport report, ParamSet* next, RoundSummary* summary,
                         std::string* replay) {
    summary->num_updates = report.count;
    summary->total_weight = report.total_weight;
    summary->mean_train_loss = report.mean_train_loss;
    Status s = strategy->ApplyRound(std::move(report), next);
    // Taken in any case, so a record never outlives the step it belongs to.
    std::string record = strategy->TakeReplayRecord();
    if (!s.ok()) return s;
    *replay = std::move(record);
    summary->strategy_stats = strategy->LastRoundStats();
    return Status::Ok();
  }

  // The server step that closes a round or a buffer (`what`, for the log). If the step
  // fails (the server optimizer refused the aggregate, e.g. a non-finite model), it is
  // taken again without the largest contributions (StepWithoutOffendersLocked); if that
  // fails too, *next stays the current model and there is no replay record.
  void CloseStepLocked(Result<AggregateReport> report, const std::string& what,
                       std::shared_ptr<ParamSet>* next, RoundSummary* summary,
                       std::string* replay) {
    if (!report.ok()) {
      FL_LOG(ERROR) << what << ": no aggregate: " << report.status().ToString();
      return;
    }
    Status s = ApplyStepLocked(std::move(report).value(), next->get(), summary, replay);
    if (s.ok()) return;
    FL_LOG(ERROR) << what << ": server update failed: " << s.ToString()
                  << "; re-folding without the largest contributions";
    *next = std::make_shared<ParamSet>(*global);
    Status retry = StepWithoutOffendersLocked(next->get(), summary, replay);
    if (!retry.ok()) {
      FL_LOG(ERROR) << what << ": model unchanged: " << retry.ToString();
      *next = std::make_shared<ParamSet>(*global);
      replay->clear();
    }
  }

  // The merged leaves' report; consumes the tree. REQUIRES: no fold in flight.
  Result<AggregateReport> TakeReportLocked() {
    Result<std::unique_ptr<RoundAggregator>> root = tree->TakeMerged();
    tree.reset();
    if (!root.ok()) return root.status();
    if (*root == nullptr) return Status::FailedPrecondition("no update was folded");
    return std::move(**root).Report();
  }

  // REQUIRES: no fold in flight (QuiesceFoldsLocked).
  void FinishRoundLocked() {
    const uint64_t r = round.round;
    Result<AggregateReport> report = TakeReportLocked();
    auto next = std::make_shared<ParamSet>(*global);
    RoundSummary summary;
    summary.round = r;
    std::string replay;  // turns the current version into the next one; empty if none
    CloseStepLocked(std::move(report), "round " + std::to_string(r), &next, &summary, &replay);
    AddPolicyStatsLocked(&summary.strategy_stats);

    ModelRecord model;
    model.round = r;
    Status s = WriteModelLocked(*next, version + 1, &model);
    model.replay_record = replay;
    RoundRecord closed = round;
    closed.state = RoundState::kClosed;
    closed.closed_at = env->NowUnixSeconds();
    closed.num_updates = summary.num_updates;
    closed.total_weight = summary.total_weight;
    closed.train_loss = summary.mean_train_loss;
    if (s.ok()) s = store->CloseRound(closed, model);
    if (!s.ok()) {
      // Nothing durable changed: the round stays open and is refolded from the ledger.
      FL_LOG(ERROR) << "round " << r << ": cannot persist the new model: " << s.ToString();
      Status refold = RefoldRoundLocked();
      if (!refold.ok()) FL_LOG(ERROR) << "refold failed: " << refold.ToString();
      return;
    }

    summary.new_version = version + 1;
    summary.num_rejected = rejected;
    summary.bytes_up = bytes_up;
    summary.bytes_down = bytes_down;
    summary.seconds = static_cast<double>(NowUs() - round_opened_us) / 1e6;
    summary.replay_bytes = replay.size();

    // Spooled updates and old model files are no longer needed.
    for (uint64_t client : selected) {
      std::string path = SpoolPath(opt.state_dir, r, client);
      if (env->FileExists(path)) (void)env->DeleteFile(path);
    }
    if (opt.keep_models > 0 && version + 1 >= opt.keep_models) {
      uint64_t drop = version + 1 - opt.keep_models;
      std::string path = ModelPath(opt.state_dir, drop);
      if (drop > 0 && env->FileExists(path)) (void)env->DeleteFile(path);
    }

    KeepRoundNormsLocked();
    SaveNormStateLocked();

    global = std::move(next);
    version += 1;
    if (!replay.empty()) {
      CacheReplayLocked(version, std::make_shared<const std::string>(std::move(replay)));
    }
    round_open = false;
    selected.clear();
    accepted_sha.clear();
    next_round = r + 1;
    std::string stats;
    for (const auto& [name, value] : summary.strategy_stats) {
      char formatted[32];
      std::snprintf(formatted, sizeof(formatted), "%g", value);  // counters and bounds alike
      stats += ", " + name + " " + formatted;
    }
    FL_LOG(INFO) << "round " << r << " closed: " << summary.num_updates << " updates, "
                 << summary.num_rejected << " rejected, " << summary.seconds << " s, version "
                 << version << stats;
    if (round_callback) pending_callbacks.push_back({summary, SnapshotLocked()});
    changed.notify_all();
    MaybeOpenRoundLocked();
  }

  // ---- asynchronous mode (CoordinatorOptions::mode == kAsync) ----

  // Opens the next buffer as a rounds row (no selection: any client may contribute).
  void MaybeOpenBufferLocked() {
    // While a flush is pending, its commit records the next buffer (or finishes).
    if (round_open || finished || shutdown || pending_flush.has_value() || FinishedAllLocked()) {
      return;
    }
    RoundRecord r;
    if (!RecordOpenLocked("buffer", {}, &r)) return;
    StartBufferLocked(r);
    SaveNormStateLocked();
  }

  void StartBufferLocked(const RoundRecord& r) {
    StartRoundLocked(r);
    buffer_staleness.clear();
    buffer_spool.clear();
  }

  Task AsyncTrainTaskLocked(uint64_t task_number, uint64_t client_id, uint64_t base) {
    Task task;
    task.kind = TaskKind::kTrain;
    task.round = task_number;
    task.model_version = base;
    task.algorithm = std::string(strategy->name());
    task.config = strategy->ConfigureRound(task_number);
    task.config.seed = TrainingSeed(opt.seed, clients[client_id].name, task_number);
    task.config.round = task_number;
    return task;
  }

  void CloseTaskLocked(uint64_t task_number) {
    open_tasks.erase(task_number);
    Status s = store->CloseTask(task_number);
    if (!s.ok()) FL_LOG(WARNING) << "cannot close task " << task_number << ": " << s.ToString();
    changed.notify_all();  // a slot is free
  }

  // A new task for `client_id` based on the current version, if a slot is free; nullopt
  // (the caller waits) otherwise. Decided by counts (and by the clock only through
  // async.task_timeout), so a fixed call order hands out the same tasks.
  std::optional<Task> IssueTaskLocked(uint64_t client_id) {
    if (!round_open) return std::nullopt;
    if (AvailableClientsLocked().size() < std::max<uint32_t>(opt.min_clients, 1)) {
      return std::nullopt;
    }
    std::vector<uint64_t> held;
    for (const auto& [number, t] : open_tasks) {
      if (t.client_id == client_id) held.push_back(number);
    }
    const bool supersede = held.size() >= kMaxTasksPerClient;
    if (!supersede && SlotsHeldLocked() >= opt.async.concurrency) return std::nullopt;
    if (supersede) {
      FL_LOG(INFO) << "task " << held.front() << " of client " << client_id
                   << " superseded by a new pull";
      CloseTaskLocked(held.front());
    }
    TaskRecord record;
    record.task = last_task + 1;
    record.client_id = client_id;
    record.base_version = version;
    record.issued_at = env->NowUnixSeconds();
    Status s = store->InsertTask(record);
    if (!s.ok()) {
      FL_LOG(ERROR) << "cannot record a task: " << s.ToString();
      return std::nullopt;
    }
    last_task = record.task;
    open_tasks[record.task] = HeldTask{client_id, version, NowUs()};
    return AsyncTrainTaskLocked(record.task, client_id, version);
  }

  // Tasks holding a concurrency slot. One not answered within async.task_timeout stops
  // holding its slot (the client may have gone away; without this, vanished clients
  // could hold every slot and no version would ever come) but stays answerable while
  // its base is in the window.
  size_t SlotsHeldLocked() {
    if (opt.async.task_timeout.count() == 0) return open_tasks.size();
    const uint64_t now = NowUs();
    const uint64_t timeout_us = static_cast<uint64_t>(opt.async.task_timeout.count()) * 1000;
    size_t n = 0;
    for (const auto& [number, t] : open_tasks) {
      if (now - std::min(now, t.issued_us) < timeout_us) ++n;
    }
    return n;
  }

  Status StaleError(uint64_t base, uint64_t staleness) const {
    return Status::FailedPrecondition(
        "update based on version " + std::to_string(base) + " is " + std::to_string(staleness) +
        " versions old (current " + std::to_string(version) + "); async.max_staleness is " +
        std::to_string(opt.async.max_staleness));
  }

  // Whether client `id` may start a fold now: not while the folds are being drained
  // (QuiesceFoldsLocked), not while its own previous update is folding (a retry then
  // finds it acknowledged), and only onto a free leaf. In asynchronous mode folds in
  // flight count towards the buffer's buffer_size, so parallel folds do not overfill it
  // (pushes arriving while its flush waits for the previous version's model file still
  // fold into it, as they always did).
  bool MayStartFoldLocked(uint64_t id) const {
    if (quiescing > 0 || folding_clients.count(id) > 0) return false;
    if (!round_open || tree == nullptr) return true;  // refused by the checks that follow
    if (!tree->HasFreeLeaf()) return false;
    return !(Async() && folds_in_flight > 0 &&
             acked + folds_in_flight >= opt.async.buffer_size);
  }

  // Prepares (PrepareForFold) and folds an admitted update into a free leaf, without the
  // lock, so folds of concurrent uploads run in parallel; returns with the lock held.
  // The fold stays in flight until the caller has recorded or refused it (EndFoldLocked):
  // the round cannot close under it. On error the leaf is unchanged.
  // REQUIRES: MayStartFoldLocked(id), a round is open and `lock` holds mu.
  Result<PreparedUpdate> FoldUnlocked(uint64_t id, const Payload& payload, const FoldPlan& plan,
                                      std::unique_lock<std::mutex>* lock) {
    AggregatorTree* t = tree.get();
    const size_t leaf = *t->Acquire();
    ++folds_in_flight;
    folding_clients.insert(id);
    lock->unlock();
    Payload scratch;  // filled only if the policy changes the update
    Result<PreparedUpdate> prepared = PrepareForFold(payload, plan, &scratch);
    Status folded =
        prepared.ok() ? FoldPrepared(t->leaf(leaf), payload, *prepared) : prepared.status();
    lock->lock();
    t->Release(leaf);
    if (!folded.ok()) return folded;
    prepared->owned = nullptr;  // the scratch copy ends here
    return prepared;
  }

  void EndFoldLocked(uint64_t id) {
    --folds_in_flight;
    folding_clients.erase(id);
    changed.notify_all();
  }

  // Waits until no fold is in flight (new ones wait meanwhile), then rebuilds the tree
  // from the ledger if a folded update could not be made durable. Called before the
  // tree is merged, replaced or counted for a decision. With a null lock (startup) there
  // is nothing in flight.
  void QuiesceFoldsLocked(std::unique_lock<std::mutex>* lock) {
    if (folds_in_flight > 0 && lock != nullptr) {
      ++quiescing;
      changed.wait(*lock, [&] { return folds_in_flight == 0; });
      --quiescing;
      changed.notify_all();
    }
    if (refold_needed) {
      refold_needed = false;
      Status refold = RefoldRoundLocked();
      if (!refold.ok()) FL_LOG(ERROR) << "refold failed: " << refold.ToString();
    }
  }

  // Was this exact update already acknowledged for `task_number`? (a retry)
  bool AcknowledgedLocked(uint64_t task_number, uint64_t client_id, const std::string& sha) {
    Result<std::vector<LedgerEntry>> rows = store->AcceptedUpdates(task_number);
    if (!rows.ok()) return false;
    for (const LedgerEntry& e : *rows) {
      if (e.client_id == client_id && e.sha256_hex == HexEncode(sha)) return true;
    }
    return false;
  }

  // Why an update for a task the caller does not hold is refused.
  Status NotHeldLocked(uint64_t task_number, uint64_t client_id, uint64_t* staleness) {
    Result<std::optional<TaskRecord>> record = store->GetTask(task_number);
    if (!record.ok()) return record.status();
    if (!record->has_value() || (*record)->client_id != client_id) {
      return Status::FailedPrecondition("task " + std::to_string(task_number) +
                                        " was not given to client " + std::to_string(client_id));
    }
    const uint64_t base = (*record)->base_version;
    *staleness = version - std::min(version, base);
    if (*staleness > opt.async.max_staleness) return StaleError(base, *staleness);
    return Status::FailedPrecondition("task " + std::to_string(task_number) +
                                      " is closed (answered or superseded by a later pull)");
  }

  Result<PushAck> PushAsyncLocked(uint64_t id, const Payload& payload,
                                  std::unique_lock<std::mutex>* lock) {
    const UpdateMeta& meta = payload.meta;
    const uint64_t task_number = meta.round;
    const size_t bytes = payload.bytes.size();
    auto held = open_tasks.find(task_number);
    if (held == open_tasks.end() || held->second.client_id != id) {
      if (AcknowledgedLocked(task_number, id, meta.sha256)) return PushAck{task_number, true};
      uint64_t staleness = 0;
      Status s = NotHeldLocked(task_number, id, &staleness);
      RecordRejectionLocked(id, meta, bytes, s, staleness);
      return s;
    }
    const uint64_t base = held->second.base_version;
    if (meta.base_version != base) {
      Status s = Status::FailedPrecondition(
          "update computed against version " + std::to_string(meta.base_version) + " but task " +
          std::to_string(task_number) + " is based on version " + std::to_string(base));
      RecordRejectionLocked(id, meta, bytes, s);
      return s;
    }
    const uint64_t staleness = version - base;
    if (staleness > opt.async.max_staleness) {
      Status s = StaleError(base, staleness);
      RecordRejectionLocked(id, meta, bytes, s, staleness);
      CloseTaskLocked(task_number);
      return s;
    }
    Result<FoldPlan> plan = PlanAsyncLocked(payload, staleness);
    if (!plan.ok()) {
      RecordRejectionLocked(id, meta, bytes, plan.status(), staleness);
      return plan.status();
    }
    Result<PreparedUpdate> prepared = FoldUnlocked(id, payload, *plan, lock);
    if (!prepared.ok()) {
      EndFoldLocked(id);
      RecordRejectionLocked(id, meta, bytes, prepared.status(), staleness);
      return prepared.status();
    }
    LedgerEntry entry;
    entry.round = task_number;
    entry.client_id = id;
    entry.base_version = base;
    entry.bytes = bytes;
    entry.weight = prepared->weight;
    entry.sha256_hex = HexEncode(meta.sha256);
    entry.created_at = env->NowUnixSeconds();
    entry.buffer = round.round;
    entry.staleness = staleness;
    Status durable;
    if (opt.durable) {
      entry.spool_path = SpoolPath(opt.state_dir, task_number, id);
      durable = SpoolLocked(payload, id, entry.spool_path);
    }
    if (durable.ok()) durable = store->AppendLedger(entry).status();
    if (!durable.ok()) {
      FL_LOG(ERROR) << "cannot make update of client " << id << " durable: " << durable.ToString();
      // The fold cannot be undone in place; rebuild the buffer from what is durable.
      refold_needed = true;
      EndFoldLocked(id);
      QuiesceFoldsLocked(lock);
      return Status::Unavailable("update not stored, retry: " + durable.message());
    }
    CloseTaskLocked(task_number);
    NoteFoldedLocked(entry, bytes);
    CountPreparedLocked(*prepared);
    EndFoldLocked(id);
    if (acked >= opt.async.buffer_size) FlushBufferLocked(lock);
    return PushAck{task_number, false};
  }

  void NoteFoldedLocked(const LedgerEntry& e, uint64_t bytes) {
    ++acked;
    ++buffer_staleness[e.staleness];
    if (!e.spool_path.empty()) buffer_spool.push_back(e.spool_path);
    bytes_up += bytes;
  }

  // Rebuilds the open buffer from the durable ledger, in acknowledgement order and with
  // each update's recorded staleness: the version does not move while a buffer is open,
  // so staleness, weight and gap penalty come out as they did at the first fold.
  // REQUIRES: no fold in flight (QuiesceFoldsLocked, or at startup).
  Status RefoldBufferLocked() {
    NewTreeLocked();
    bytes_up = 0;
    buffer_staleness.clear();
    buffer_spool.clear();
    ResetRoundPolicyLocked();
    FL_ASSIGN_OR_RETURN(std::vector<LedgerEntry> entries,
                        store->AcceptedUpdatesInBuffer(round.round));
    for (const LedgerEntry& e : entries) {
      if (e.base_version + e.staleness != version) {
        return Status::DataLoss("ledger row " + std::to_string(e.id) + " of buffer " +
                                std::to_string(round.round) + " was folded at version " +
                                std::to_string(e.base_version + e.staleness) +
                                ", the buffer is at " + std::to_string(version));
      }
      Payload p;
      FL_ASSIGN_OR_RETURN(bool folded, RefoldSpooledLocked(e, &p));
      if (!folded) continue;
      NoteFoldedLocked(e, p.bytes.size());
    }
    return Status::Ok();
  }

  double MeanBufferStalenessLocked() const {
    double sum = 0, n = 0;
    for (const auto& [staleness, count] : buffer_staleness) {
      sum += static_cast<double>(staleness) * static_cast<double>(count);
      n += static_cast<double>(count);
    }
    return n > 0 ? sum / n : 0;
  }

  // One server step from the full buffer: the new version is served and the next buffer
  // opens at once; making them durable follows (CompletePendingFlushLocked), without the
  // lock while the model file is written when `lock` is given (null: write inline, as at
  // startup). If the step fails (non-finite) it is taken again without the largest
  // contributions (CloseStepLocked); if that fails too, the version still advances with
  // the model unchanged: the buffer's updates are consumed either way, so each applies at
  // most once.
  void FlushBufferLocked(std::unique_lock<std::mutex>* lock) {
    CompletePendingFlushLocked(lock);
    if (pending_flush.has_value()) return;  // its commit failed; retried at the next push
    QuiesceFoldsLocked(lock);
    if (pending_flush.has_value()) return;  // flushed by another thread meanwhile
    // Waiting for the pending flush or the folds let other pushes in: one may have
    // flushed this buffer.
    if (!round_open || tree == nullptr || acked < opt.async.buffer_size) return;
    const uint64_t b = round.round;
    Result<AggregateReport> report = TakeReportLocked();
    auto next = std::make_shared<ParamSet>(*global);
    PendingFlush p;
    RoundSummary& summary = p.summary;
    summary.round = b;
    std::string replay;
    CloseStepLocked(std::move(report), "buffer " + std::to_string(b), &next, &summary, &replay);
    AddPolicyStatsLocked(&summary.strategy_stats);
    summary.strategy_stats["async.mean_staleness"] = MeanBufferStalenessLocked();
    summary.new_version = version + 1;
    summary.num_rejected = rejected;
    summary.bytes_up = bytes_up;
    summary.bytes_down = bytes_down;
    summary.seconds = static_cast<double>(NowUs() - round_opened_us) / 1e6;
    summary.replay_bytes = replay.size();

    p.flush.flush = b;
    p.flush.version = version + 1;
    p.flush.num_updates = summary.num_updates;
    p.flush.total_weight = summary.total_weight;
    p.flush.staleness_histogram = StalenessHistogramJson(buffer_staleness);
    p.flush.step_norms = StepNorms(*global, *next);
    p.flush.created_at = env->NowUnixSeconds();
    p.model.version = version + 1;
    p.model.round = b;
    p.model.path = ModelPath(opt.state_dir, version + 1);
    p.model.num_params = next->size();
    p.model.layout_hash = next->layout().hash();
    p.model.strategy_state = strategy->SaveState();
    p.model.created_at = p.flush.created_at;
    p.model.replay_record = replay;
    p.closed = round;
    p.closed.state = RoundState::kClosed;
    p.closed.closed_at = p.flush.created_at;
    p.closed.num_updates = summary.num_updates;
    p.closed.total_weight = summary.total_weight;
    p.closed.train_loss = summary.mean_train_loss;
    p.spool = std::move(buffer_spool);
    p.params = next;

    KeepRoundNormsLocked();
    AdvanceVersionLocked(std::move(next), std::move(replay), p.flush.step_norms);
    round_open = false;
    next_round = b + 1;
    FL_LOG(INFO) << "buffer " << b << " flushed: " << summary.num_updates << " updates, "
                 << summary.num_rejected << " rejected, mean staleness "
                 << summary.strategy_stats["async.mean_staleness"] << ", version " << version;
    if (next_round <= opt.num_rounds && !shutdown) {
      RoundRecord r;
      r.round = next_round;
      r.base_version = version;
      r.state = RoundState::kOpen;
      r.opened_at = p.flush.created_at;
      StartBufferLocked(r);  // recorded by the flush's commit
    }
    pending_flush = std::move(p);
    changed.notify_all();
    CompletePendingFlushLocked(lock);
  }

  // Makes the pending flush durable (see PendingFlush). Waits while another thread
  // writes its model file. On failure it stays pending and is retried by the next flush
  // or Poll.
  void CompletePendingFlushLocked(std::unique_lock<std::mutex>* lock) {
    while (lock != nullptr && pending_flush.has_value() && pending_flush->writing) {
      changed.wait(*lock);
    }
    if (!pending_flush.has_value() || pending_flush->writing) return;
    if (!pending_flush->file_written) {
      pending_flush->writing = true;
      const std::shared_ptr<const ParamSet> params = pending_flush->params;
      const std::string path = pending_flush->model.path;
      if (lock != nullptr) lock->unlock();
      std::string sha256_hex;
      Status written = WriteModelFile(env, *params, path, opt.durable, &sha256_hex);
      if (lock != nullptr) lock->lock();
      // Still ours: nobody replaces a pending flush while it is being written.
      pending_flush->writing = false;
      pending_flush->file_written = written.ok();
      pending_flush->model.sha256_hex = sha256_hex;
      changed.notify_all();
      if (!written.ok()) {
        FL_LOG(ERROR) << "version " << pending_flush->model.version
                      << ": cannot write the model file: " << written.ToString();
        return;
      }
    }
    PendingFlush& p = *pending_flush;
    const bool next_open = round_open && round.round == p.closed.round + 1;
    Status s = store->CloseBuffer(p.closed, p.model, p.flush,
                                  next_open ? std::optional<RoundRecord>(round) : std::nullopt);
    if (!s.ok()) {
      FL_LOG(ERROR) << "buffer " << p.closed.round << ": cannot persist version "
                    << p.model.version << ": " << s.ToString();
      return;
    }
    for (const std::string& path : p.spool) {
      if (env->FileExists(path)) (void)env->DeleteFile(path);
    }
    if (round_callback) {
      ModelSnapshot snapshot;
      snapshot.version = p.model.version;
      snapshot.params = p.params;
      snapshot.wire_bytes = model_wire_bytes;
      pending_callbacks.push_back({p.summary, std::move(snapshot)});
    }
    pending_flush.reset();
    SaveNormStateLocked();
    MaybeOpenRoundLocked();  // after the last buffer: finished
    changed.notify_all();
  }

  // At startup: a buffer may be full (killed between acknowledging its last update and
  // committing its flush), and the next one may hold updates acknowledged meanwhile.
  Status FlushFullBuffersLocked() {
    while (round_open && acked >= opt.async.buffer_size) {
      FlushBufferLocked(nullptr);
      if (pending_flush.has_value()) {
        return Status::Unavailable("cannot persist the flush of a full buffer at startup");
      }
      if (round_open) FL_RETURN_IF_ERROR(RefoldBufferLocked());
    }
    return Status::Ok();
  }

  // Versions older than this are neither served nor accepted as a base.
  uint64_t OldestServableLocked() const {
    return version - std::min<uint64_t>(version, opt.async.max_staleness);
  }

  void AdvanceVersionLocked(std::shared_ptr<const ParamSet> next, std::string replay,
                            std::vector<double> norms) {
    global = std::move(next);
    version += 1;
    if (!replay.empty()) {
      CacheReplayLocked(version, std::make_shared<const std::string>(std::move(replay)));
    }
    step_norms.Add(version, std::move(norms));
    served[version] = SnapshotLocked();
    const uint64_t oldest = OldestServableLocked();
    const uint64_t in_memory = std::max<uint64_t>(oldest, version - 1);
    while (!served.empty() && served.begin()->first < in_memory) served.erase(served.begin());
    // Model files of the window stay on disk too, so a restart serves them again.
    const uint64_t keep = std::max<uint64_t>(opt.keep_models, opt.async.max_staleness + 1);
    if (opt.keep_models > 0 && version >= keep) {
      const std::string path = ModelPath(opt.state_dir, version - keep);
      if (version - keep > 0 && env->FileExists(path)) (void)env->DeleteFile(path);
    }
    // Tasks whose base left the window can no longer be answered: free their slots.
    std::vector<uint64_t> expired;
    for (const auto& [number, t] : open_tasks) {
      if (t.base_version < oldest) expired.push_back(number);
    }
    for (uint64_t number : expired) CloseTaskLocked(number);
  }

  // Restores the asynchronous state after the latest model was loaded: the servable
  // versions, the step norms of the gap penalty and the tasks still held.
  Status RecoverAsyncLocked() {
    FL_ASSIGN_OR_RETURN(std::optional<std::string> mode, store->GetMeta(kModeKey));
    if (mode.has_value() && *mode != "async") {
      return Status::FailedPrecondition("the state directory holds a " + *mode +
                                        " federation; coordinator.mode is async");
    }
    if (!mode.has_value()) FL_RETURN_IF_ERROR(store->PutMeta(kModeKey, "async"));
    served[version] = SnapshotLocked();
    step_norms = StepNormHistory(opt.async.max_staleness + 1);
    FL_ASSIGN_OR_RETURN(std::vector<FlushRecord> flushes, store->ListFlushes(OldestServableLocked()));
    for (FlushRecord& f : flushes) step_norms.Add(f.version, std::move(f.step_norms));
    FL_ASSIGN_OR_RETURN(last_task, store->LastTaskNumber());
    FL_ASSIGN_OR_RETURN(std::vector<TaskRecord> tasks, store->ListOpenTasks());
    for (const TaskRecord& t : tasks) {
      FL_ASSIGN_OR_RETURN(std::vector<LedgerEntry> answered, store->AcceptedUpdates(t.task));
      if (!answered.empty() || t.base_version < OldestServableLocked()) {
        CloseTaskLocked(t.task);
        continue;
      }
      open_tasks[t.task] = HeldTask{t.client_id, t.base_version, NowUs()};
    }
    return Status::Ok();
  }

  static constexpr char kModeKey[] = "coordinator.mode";

  void RecordRejectionLocked(uint64_t client_id, const UpdateMeta& meta, size_t bytes,
                             const Status& status, uint64_t staleness = 0) {
    LedgerEntry e;
    e.staleness = staleness;
    e.round = meta.round;
    e.client_id = client_id;
    e.base_version = meta.base_version;
    e.status_code = static_cast<int>(status.code());
    e.reason = status.message();
    e.bytes = bytes;
    e.weight = std::isfinite(meta.weight) ? meta.weight : 0;
    e.sha256_hex = HexEncode(meta.sha256);
    e.created_at = env->NowUnixSeconds();
    // In asynchronous mode meta.round is a task number; every rejection counts for the
    // open buffer.
    if (round_open && (Async() || meta.round == round.round)) ++rejected;
    AppendRefusalLocked(e, "update");
  }

  // Writes a refusal's ledger row (status_code != 0), unless `e.client_id` already has
  // max_rejected_rows_per_client of them this round: what one client can add to the
  // ledger per round is capped; the rest is counted. `what` names the refused thing.
  void AppendRefusalLocked(const LedgerEntry& e, const char* what) {
    uint32_t& rows = rejected_rows[e.client_id];
    if (opt.max_rejected_rows_per_client > 0 && rows >= opt.max_rejected_rows_per_client) {
      ++refusals.rejected_rows_suppressed;
      FL_LOG(DEBUG) << what << " from client " << e.client_id << " refused (not recorded, over "
                    << opt.max_rejected_rows_per_client << " rows): " << e.reason;
      return;
    }
    ++rows;
    Result<int64_t> id = store->AppendLedger(e);
    if (!id.ok()) {
      FL_LOG(ERROR) << "cannot record a refused " << what << ": " << id.status().ToString();
    }
    FL_LOG(WARNING) << what << " from client " << e.client_id << " for round " << e.round
                    << " refused: " << e.reason;
  }

  void DeliverCallbacks(std::unique_lock<std::mutex>& lock) {
    if (pending_callbacks.empty()) return;
    auto batch = std::move(pending_callbacks);
    pending_callbacks.clear();
    auto cb = round_callback;
    lock.unlock();
    for (auto& [summary, snapshot] : batch) cb(summary, snapshot);
    lock.lock();
  }

  Status Recover(const ParamSet& initial) {
    FL_RETURN_IF_ERROR(env->CreateDirs(opt.state_dir + "/models"));
    FL_RETURN_IF_ERROR(env->CreateDirs(opt.state_dir + "/spool"));
    FL_ASSIGN_OR_RETURN(std::optional<ModelRecord> latest, store->LatestModel());
    if (latest.has_value()) {
      FL_ASSIGN_OR_RETURN(std::string data, env->ReadFile(latest->path));
      if (HexEncode(Sha256(data)) != latest->sha256_hex) {
        return Status::DataLoss("model file " + latest->path + " does not match its SHA-256");
      }
      FL_ASSIGN_OR_RETURN(ParamSet params, ParseParamSet(data));
      if (params.layout().hash() != initial.layout().hash()) {
        return Status::FailedPrecondition(
            "the state directory holds a model of another layout than the configured one");
      }
      FL_RETURN_IF_ERROR(strategy->LoadState(latest->strategy_state));
      global = std::make_shared<ParamSet>(std::move(params));
      version = latest->version;
      model_wire_bytes = data.size();
      FL_LOG(INFO) << "resumed at model version " << version;
    } else {
      ModelRecord model;
      model.round = 0;
      FL_RETURN_IF_ERROR(WriteModelLocked(initial, 0, &model));
      FL_RETURN_IF_ERROR(store->InsertModel(model));
      global = std::make_shared<ParamSet>(initial);
      version = 0;
    }

    if (Async()) {
      FL_RETURN_IF_ERROR(RecoverAsyncLocked());
    } else {
      FL_ASSIGN_OR_RETURN(std::optional<std::string> mode, store->GetMeta(kModeKey));
      if (mode.has_value() && *mode != "sync") {
        return Status::FailedPrecondition("the state directory holds a " + *mode +
                                          " federation; coordinator.mode is sync");
      }
    }

    FL_ASSIGN_OR_RETURN(std::vector<ClientRecord> known, store->ListClients());
    for (const ClientRecord& c : known) {
      clients[c.id] = ClientState{c.name, 0};
    }

    FL_ASSIGN_OR_RETURN(std::vector<RoundRecord> rounds, store->ListRounds());
    for (const RoundRecord& r : rounds) next_round = std::max(next_round, r.round + 1);

    FL_ASSIGN_OR_RETURN(std::optional<RoundRecord> open, store->GetOpenRound());
    if (!open.has_value()) (void)LoadNormStateLocked(0);
    if (open.has_value()) {
      if (open->base_version != version) {
        return Status::DataLoss("open round " + std::to_string(open->round) +
                                " is based on version " + std::to_string(open->base_version) +
                                " but the latest model is " + std::to_string(version));
      }
      const std::optional<double> stored_bound = LoadNormStateLocked(open->round);
      if (Async()) {
        StartBufferLocked(*open);
      } else {
        StartRoundLocked(*open);
      }
      if (stored_bound.has_value()) round_norm_bound = *stored_bound;
      next_round = open->round;
      FL_RETURN_IF_ERROR(RefoldRoundLocked());
      FL_LOG(INFO) << "resumed round " << round.round << " with " << acked
                   << " acknowledged updates refolded";
      if (Async()) FL_RETURN_IF_ERROR(FlushFullBuffersLocked());
    }
    if (!round_open && next_round > opt.num_rounds) finished = true;
    return Status::Ok();
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() { Shutdown(); }

Result<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorOptions& options,
                                                          std::unique_ptr<Strategy> strategy,
                                                          const ParamSet& initial) {
  if (strategy == nullptr) return Status::InvalidArgument("Coordinator: no strategy");
  if (initial.empty()) return Status::InvalidArgument("Coordinator: empty initial model");
  if (!initial.AllFinite()) return Status::InvalidArgument("Coordinator: initial model is not finite");
  FL_RETURN_IF_ERROR(ValidateUpdatePolicy(options.update_policy));
  if (!(std::isfinite(options.norm_bound) && options.norm_bound >= 0)) {
    return Status::InvalidArgument("coordinator.norm_bound must be >= 0 (0: off)");
  }
  if (!(options.norm_bound_quantile >= 0 && options.norm_bound_quantile <= 1)) {
    return Status::InvalidArgument("coordinator.norm_bound_quantile must be in (0, 1] (0: off)");
  }
  if (options.mode == CoordinatorMode::kAsync) {
    FL_RETURN_IF_ERROR(ValidateAsyncOptions(options.async));
    // Only dense deltas can be folded into a buffer of a later version than the one they
    // were computed on: a Ferret coefficient table is a projection on the basis planned
    // for its task's round and base model, which a later buffer does not share.
    const Encoding upload = strategy->ConfigureRound(1).upload_encoding;
    if (!IsDenseEncoding(upload)) {
      return Status::InvalidArgument("coordinator.mode=async needs an algorithm with dense "
                                     "uploads (f32, f16, bf16); '" +
                                     std::string(strategy->name()) + "' uploads " +
                                     EncodingName(upload));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->step_norms = StepNormHistory(options.async.max_staleness + 1);
  impl->env = options.env ? options.env : Env::Default();
  impl->strategy = std::move(strategy);
  impl->join_tokens = options.join_burst;
  impl->join_refill_us = impl->env->NowMicros();
  FL_RETURN_IF_ERROR(impl->env->CreateDirs(options.state_dir));
  StoreOptions so;
  so.path = options.store_path.empty() ? options.state_dir + "/state.db" : options.store_path;
  so.durable = options.durable;
  FL_ASSIGN_OR_RETURN(impl->store, Store::Open(so));
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    FL_RETURN_IF_ERROR(impl->Recover(initial));
  }
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Result<JoinReply> Coordinator::Join(const std::string& enrollment_token,
                                    const std::string& client_name) {
  Impl& d = *impl_;
  if (!d.opt.enrollment_token.empty() &&
      !ConstantTimeEquals(enrollment_token, d.opt.enrollment_token)) {
    FL_LOG(WARNING) << "join refused for '" << client_name.substr(0, kMaxClientNameLength)
                    << "': bad enrollment token";
    return Status::Unauthenticated("bad enrollment token");
  }
  FL_RETURN_IF_ERROR(ValidateClientName(client_name));
  std::unique_lock<std::mutex> lock(d.mu);
  const bool limited = !d.opt.enrollment_token.empty();
  if (limited && d.opt.joins_per_second > 0) {
    const uint64_t now_us = d.NowUs();
    const double elapsed_s = static_cast<double>(now_us - std::min(now_us, d.join_refill_us)) / 1e6;
    d.join_refill_us = now_us;
    d.join_tokens = std::min<double>(d.opt.join_burst, d.join_tokens + elapsed_s * d.opt.joins_per_second);
    if (d.join_tokens < 1.0) {
      ++d.refusals.joins_rate_limited;
      const auto retry_ms = static_cast<int64_t>(
          std::ceil((1.0 - d.join_tokens) / d.opt.joins_per_second * 1000.0));
      FL_LOG(WARNING) << "join refused for '" << client_name << "': over "
                      << d.opt.joins_per_second << " joins/s (" << d.refusals.joins_rate_limited
                      << " refused so far)";
      return Status::Unavailable("too many joins; retry after " + std::to_string(retry_ms) + " ms");
    }
  }
  FL_ASSIGN_OR_RETURN(std::optional<ClientRecord> existing, d.store->FindClient(client_name));
  const bool known = existing.has_value();
  if (limited && !known && d.opt.max_clients > 0 && d.clients.size() >= d.opt.max_clients) {
    ++d.refusals.joins_over_max_clients;
    FL_LOG(WARNING) << "join refused for new client '" << client_name << "': "
                    << d.opt.max_clients << " clients already enrolled ("
                    << d.refusals.joins_over_max_clients << " refused so far)";
    return Status::ResourceExhausted("enrollment is full: " + std::to_string(d.opt.max_clients) +
                                     " clients already joined");
  }
  if (limited && d.opt.joins_per_second > 0) d.join_tokens -= 1.0;
  const int64_t now = d.env->NowUnixSeconds();
  FL_ASSIGN_OR_RETURN(ClientRecord record, d.store->UpsertClient(client_name, now));
  JoinReply reply;
  reply.client_id = record.id;
  reply.session_token = RandomHex(32);
  const std::string token_hash = HexEncode(Sha256(reply.session_token));
  // A re-join revokes the name's earlier tokens: one live session per client.
  FL_ASSIGN_OR_RETURN(uint64_t revoked, d.store->RevokeSessions(record.id));
  if (revoked > 0 || known) {
    for (auto it = d.sessions.begin(); it != d.sessions.end();) {
      it = it->second.client_id == record.id ? d.sessions.erase(it) : std::next(it);
    }
  }
  FL_RETURN_IF_ERROR(d.store->SaveSession(token_hash, record.id, now));
  d.sessions[token_hash] = Impl::SessionState{record.id, now};
  d.clients[record.id].name = client_name;
  d.Touch(record.id);
  d.MaybeOpenRoundLocked();
  d.DeliverCallbacks(lock);
  return reply;
}

Result<std::vector<uint64_t>> Coordinator::RegisterClients(const std::vector<std::string>& names) {
  Impl& d = *impl_;
  for (const std::string& name : names) FL_RETURN_IF_ERROR(ValidateClientName(name));
  std::unique_lock<std::mutex> lock(d.mu);
  FL_ASSIGN_OR_RETURN(std::vector<ClientRecord> records,
                      d.store->UpsertClients(names, d.env->NowUnixSeconds()));
  const uint64_t now_us = std::max<uint64_t>(1, d.NowUs());
  std::vector<uint64_t> ids;
  ids.reserve(records.size());
  if (!records.empty()) d.clients.Reserve(records.back().id);
  for (ClientRecord& r : records) {
    Impl::ClientState& c = d.clients[r.id];
    c.name = std::move(r.name);
    c.last_seen_us = now_us;
    ids.push_back(r.id);
  }
  d.MaybeOpenRoundLocked();
  d.DeliverCallbacks(lock);
  return ids;
}

Result<Session> Coordinator::Authenticate(const std::string& session_token) {
  Impl& d = *impl_;
  if (session_token.empty()) return Status::Unauthenticated("missing session token");
  const std::string token_hash = HexEncode(Sha256(session_token));
  std::lock_guard<std::mutex> lock(d.mu);
  const int64_t now = d.env->NowUnixSeconds();
  auto expired = [&](int64_t created_at) {
    return (now - created_at) * 1000 >= static_cast<int64_t>(d.opt.session_ttl.count());
  };
  auto it = d.sessions.find(token_hash);
  if (it == d.sessions.end()) {
    // Sessions survive a server restart: they are in the store.
    FL_ASSIGN_OR_RETURN(std::optional<SessionRecord> stored, d.store->GetSession(token_hash));
    if (!stored.has_value() || d.clients.count(stored->client_id) == 0) {
      return Status::Unauthenticated("unknown or revoked session token; join again");
    }
    it = d.sessions.emplace(token_hash, Impl::SessionState{stored->client_id, stored->created_at})
             .first;
  }
  if (expired(it->second.created_at)) {
    d.sessions.erase(it);
    Status s = d.store->DeleteSession(token_hash);
    if (!s.ok()) FL_LOG(WARNING) << "cannot delete an expired session: " << s.ToString();
    return Status::Unauthenticated("session expired; join again");
  }
  return Session{it->second.client_id};
}

Status Coordinator::Heartbeat(const Session& session) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  d.Touch(session.client_id);
  d.MaybeOpenRoundLocked();
  d.DeliverCallbacks(lock);
  return Status::Ok();
}

Result<Task> Coordinator::PullTask(const Session& session, std::chrono::milliseconds wait) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  if (d.clients.count(session.client_id) == 0) return Status::Unauthenticated("unknown client");
  const auto give_up = std::chrono::steady_clock::now() + wait;
  while (true) {
    d.Touch(session.client_id);
    d.MaybeOpenRoundLocked();
    d.DeliverCallbacks(lock);
    Task task;
    if (d.finished || d.shutdown) {
      task.kind = TaskKind::kDone;
      task.model_version = d.version;
      return task;
    }
    const uint64_t id = session.client_id;
    if (d.Async()) {
      std::optional<Task> issued = d.IssueTaskLocked(id);
      if (issued.has_value()) return std::move(issued).value();
    } else if (d.round_open && d.selected.count(id) && d.accepted_sha.count(id) == 0) {
      task.kind = TaskKind::kTrain;
      task.round = d.round.round;
      task.model_version = d.version;
      task.algorithm = std::string(d.strategy->name());
      task.config = d.strategy->ConfigureRound(d.round.round);
      task.config.seed = TrainingSeed(d.opt.seed, d.clients[id].name, d.round.round);
      task.config.round = d.round.round;
      return task;
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      task.kind = TaskKind::kWait;
      task.round = d.round_open ? d.round.round : 0;
      task.model_version = d.version;
      task.retry_after_ms = 1000;
      return task;
    }
    // Wake at the latest every 200 ms so round deadlines are noticed without a ticker.
    d.changed.wait_until(lock, std::min(give_up, std::chrono::steady_clock::now() +
                                                     std::chrono::milliseconds(200)));
  }
}

Result<ModelSnapshot> Coordinator::FetchModel(const Session& session, uint64_t version,
                                              std::optional<uint64_t> have_version) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  d.Touch(session.client_id);
  // Asynchronous mode also serves the versions a task may still be based on.
  const bool older = d.Async() && version < d.version && version >= d.OldestServableLocked();
  if (version != d.version && !older) {
    if (d.Async()) {
      return Status::NotFound("model version " + std::to_string(version) +
                              " is not served; versions " +
                              std::to_string(d.OldestServableLocked()) + " to " +
                              std::to_string(d.version) + " are");
    }
    return Status::NotFound("model version " + std::to_string(version) +
                            " is not served; the current version is " + std::to_string(d.version));
  }
  // Every version has the layout of the current one, hence its serialized size.
  if (have_version.has_value() && *have_version < version && d.opt.max_replay_rounds > 0 &&
      version - *have_version <= d.opt.max_replay_rounds) {
    Result<std::vector<std::shared_ptr<const std::string>>> records =
        d.ReplayRecordsLocked(*have_version, version);
    if (records.ok()) {
      uint64_t bytes = 0;
      for (const auto& record : *records) bytes += record->size();
      if (bytes < d.model_wire_bytes) {
        ModelSnapshot replay;
        replay.version = version;
        replay.wire_bytes = bytes;
        replay.replay_base_version = *have_version;
        replay.replay_records = std::move(records).value();
        d.bytes_down += bytes;
        return replay;
      }
    } else if (records.status().code() != StatusCode::kNotFound) {
      FL_LOG(WARNING) << "cannot read replay records, sending the full model: "
                      << records.status().ToString();
    }
  }
  if (!older) {
    d.bytes_down += d.model_wire_bytes;
    return d.SnapshotLocked();
  }
  auto recent = d.served.find(version);
  if (recent != d.served.end()) {
    d.bytes_down += recent->second.wire_bytes;
    return recent->second;
  }
  // Older versions stay on disk only; reading one does not hold up the federation.
  FL_ASSIGN_OR_RETURN(std::optional<ModelRecord> record, d.store->GetModel(version));
  if (!record.has_value()) {
    return Status::NotFound("model version " + std::to_string(version) + " is not stored");
  }
  lock.unlock();
  Result<ModelSnapshot> loaded = LoadModelFile(d.env, *record);
  lock.lock();
  if (loaded.ok()) d.bytes_down += loaded->wire_bytes;
  return loaded;
}

Result<PushAck> Coordinator::PushUpdate(const Session& session, const Payload& payload) {
  Impl& d = *impl_;
  const UpdateMeta& meta = payload.meta;
  const uint64_t id = session.client_id;

  // Stateless checks first, without the lock: hashing a large payload takes a while.
  Status early;
  if (meta.client_id != 0 && meta.client_id != id) {
    early = Status::PermissionDenied("update names client " + std::to_string(meta.client_id) +
                                     " but the session belongs to client " + std::to_string(id));
  } else if (payload.bytes.size() > d.opt.max_update_bytes) {
    early = Status::ResourceExhausted("update of " + std::to_string(payload.bytes.size()) +
                                      " bytes exceeds the limit of " +
                                      std::to_string(d.opt.max_update_bytes));
  } else {
    early = CheckUpdateSha256(meta, payload.bytes);
  }

  std::unique_lock<std::mutex> lock(d.mu);
  if (d.clients.count(id) == 0) return Status::Unauthenticated("unknown client");
  d.Touch(id);
  if (!early.ok()) {
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), early);
    return early;
  }
  // The checks below and the start of the fold happen in one hold of the lock.
  d.changed.wait(lock, [&] { return d.MayStartFoldLocked(id); });
  if (d.Async()) {
    if (!d.round_open) {
      if (d.AcknowledgedLocked(meta.round, id, meta.sha256)) return PushAck{meta.round, true};
      Status s = Status::FailedPrecondition("no buffer is open (the federation is finished)");
      d.RecordRejectionLocked(id, meta, payload.bytes.size(), s);
      return s;
    }
    Result<PushAck> ack = d.PushAsyncLocked(id, payload, &lock);
    d.DeliverCallbacks(lock);
    return ack;
  }
  if (!d.round_open || meta.round != d.round.round) {
    Status s = Status::FailedPrecondition(
        "update for round " + std::to_string(meta.round) + " but " +
        (d.round_open ? "round " + std::to_string(d.round.round) + " is open" : "no round is open"));
    // A retry of an update acknowledged in a round that has since closed is a duplicate.
    if (!d.round_open || meta.round < d.round.round) {
      Result<std::vector<LedgerEntry>> past = d.store->AcceptedUpdates(meta.round);
      if (past.ok()) {
        for (const LedgerEntry& e : *past) {
          if (e.client_id == id && e.sha256_hex == HexEncode(meta.sha256)) {
            return PushAck{meta.round, true};
          }
        }
      }
    }
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), s);
    return s;
  }
  auto acc = d.accepted_sha.find(id);
  if (acc != d.accepted_sha.end()) {
    if (acc->second == meta.sha256) return PushAck{meta.round, true};
    Status s = Status::FailedPrecondition("client already reported for round " +
                                          std::to_string(meta.round));
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), s);
    return s;
  }
  if (d.selected.count(id) == 0) {
    Status s = Status::FailedPrecondition("client " + std::to_string(id) +
                                          " is not selected for round " + std::to_string(meta.round));
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), s);
    return s;
  }
  if (meta.base_version != d.version) {
    Status s = Status::FailedPrecondition("update computed against version " +
                                          std::to_string(meta.base_version) +
                                          " but the round is based on version " +
                                          std::to_string(d.version));
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), s);
    return s;
  }

  // Fold first: the aggregator validates (layout, length, finiteness) and leaves itself
  // unchanged on error. Only then make the update durable and acknowledge it.
  // The update policy first: the server decides the weight and the norm it is folded with.
  Result<FoldPlan> plan = d.PlanLocked(payload);
  if (!plan.ok()) {
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), plan.status());
    return plan.status();
  }
  Result<PreparedUpdate> prepared = d.FoldUnlocked(id, payload, *plan, &lock);
  if (!prepared.ok()) {
    d.EndFoldLocked(id);
    d.RecordRejectionLocked(id, meta, payload.bytes.size(), prepared.status());
    return prepared.status();
  }
  LedgerEntry entry;
  entry.round = meta.round;
  entry.client_id = id;
  entry.base_version = meta.base_version;
  entry.status_code = 0;
  entry.bytes = payload.bytes.size();
  entry.weight = prepared->weight;
  entry.sha256_hex = HexEncode(meta.sha256);
  entry.created_at = d.env->NowUnixSeconds();
  Status durable;
  if (d.opt.durable) {
    entry.spool_path = SpoolPath(d.opt.state_dir, meta.round, id);
    durable = d.SpoolLocked(payload, id, entry.spool_path);
  }
  if (durable.ok()) durable = d.store->AppendLedger(entry).status();
  if (!durable.ok()) {
    // The fold cannot be undone in place; rebuild the tree from what is durable.
    FL_LOG(ERROR) << "cannot make update of client " << id << " durable: " << durable.ToString();
    d.refold_needed = true;
    d.EndFoldLocked(id);
    d.QuiesceFoldsLocked(&lock);
    return Status::Unavailable("update not stored, retry: " + durable.message());
  }
  d.accepted_sha[id] = meta.sha256;
  ++d.acked;
  d.bytes_up += payload.bytes.size();
  d.CountPreparedLocked(*prepared);
  d.EndFoldLocked(id);
  const uint64_t r = meta.round;
  if (d.accepted_sha.size() == d.selected.size()) {
    d.QuiesceFoldsLocked(&lock);
    if (d.round_open && d.round.round == r && d.accepted_sha.size() == d.selected.size()) {
      d.FinishRoundLocked();
    }
  }
  d.DeliverCallbacks(lock);
  return PushAck{r, false};
}

Status Coordinator::RecordTransportFailure(const Session& session, uint64_t round,
                                           const Status& status) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  UpdateMeta meta;
  meta.round = round;
  d.RecordRejectionLocked(session.client_id, meta, 0, status);
  return status;
}

Status Coordinator::CheckTrainingFor(uint64_t client_id, uint64_t round) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  const std::string who = "client " + std::to_string(client_id);
  if (d.Async()) {
    auto held = d.open_tasks.find(round);
    if (!d.round_open || held == d.open_tasks.end() || held->second.client_id != client_id) {
      return Status::FailedPrecondition(who + " holds no open task " + std::to_string(round));
    }
    return Status::Ok();
  }
  if (!d.round_open || d.round.round != round) {
    return Status::FailedPrecondition(
        "round " + std::to_string(round) + " is not open (" +
        (d.round_open ? "round " + std::to_string(d.round.round) + " is" : "none is") + ")");
  }
  if (d.selected.count(client_id) == 0) {
    return Status::FailedPrecondition(who + " is not selected for round " + std::to_string(round));
  }
  return Status::Ok();
}

void Coordinator::RecordSplitRefusal(uint64_t client_id, uint64_t round, const Status& status,
                                     uint64_t bytes) {
  if (status.ok()) return;  // an accepted row would be refolded as an update at recovery
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  LedgerEntry e;
  e.round = round;
  e.client_id = client_id;
  e.status_code = static_cast<int>(status.code());
  e.reason = std::string(kSplitRefusalPrefix) + status.message();
  e.bytes = bytes;
  e.created_at = d.env->NowUnixSeconds();
  d.AppendRefusalLocked(e, "split session");
}

Coordinator::Refusals Coordinator::GetRefusals() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  return d.refusals;
}

std::vector<uint64_t> Coordinator::SelectedClients() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  if (d.Async() || !d.round_open) return {};
  return std::vector<uint64_t>(d.selected.begin(), d.selected.end());
}

uint64_t Coordinator::StoreTransactions() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  return d.store->committed_transactions();
}

ServerStatusInfo Coordinator::GetStatus() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  ServerStatusInfo info;
  info.round = d.round_open ? d.round.round : d.next_round - 1;
  info.model_version = d.version;
  if (d.Async()) {
    info.updates_in_round = d.round_open ? d.acked : 0;
    info.clients_selected = d.SlotsHeldLocked();  // tasks holding a concurrency slot
  } else {
    info.updates_in_round = d.round_open ? d.accepted_sha.size() : 0;
    info.clients_selected = d.round_open ? d.selected.size() : 0;
  }
  info.clients_known = d.clients.size();
  info.finished = d.finished;
  return info;
}

void Coordinator::Poll() {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  d.MaybeOpenRoundLocked();
  // Buffers have no deadline: they flush by count only. A flush whose commit failed is
  // retried here too.
  if (d.Async() && d.pending_flush.has_value() && !d.pending_flush->writing) {
    d.CompletePendingFlushLocked(&lock);
  }
  if (d.Async() && d.round_open && !d.pending_flush.has_value() &&
      d.acked >= d.opt.async.buffer_size) {
    d.FlushBufferLocked(&lock);
  }
  // The round closes (or grows) by what is acknowledged once nothing is in flight.
  if (d.round_open && !d.Async() && d.NowUs() >= d.round_deadline_us) d.QuiesceFoldsLocked(&lock);
  if (d.round_open && !d.Async() && d.NowUs() >= d.round_deadline_us) {
    if (d.acked >= std::max<uint32_t>(d.opt.min_updates, 1)) {
      FL_LOG(INFO) << "round " << d.round.round << " deadline: closing with "
                   << d.acked << " of " << d.selected.size() << " updates";
      d.FinishRoundLocked();
    } else {
      // Too few updates: add clients that were not selected yet and extend the deadline.
      // Updates already acknowledged stay in the round.
      std::vector<uint64_t> extra;
      for (uint64_t id : d.AvailableClientsLocked()) {
        if (d.selected.count(id) == 0) extra.push_back(id);
      }
      // Replace the silent clients: as many newcomers as updates are still missing.
      const size_t missing = std::max<uint32_t>(d.opt.min_updates, 1) - d.acked;
      extra = d.FirstForRound(extra, d.round.round, missing);
      d.selected.insert(extra.begin(), extra.end());
      d.round.selected.assign(d.selected.begin(), d.selected.end());
      Status s = d.store->UpdateRoundSelection(d.round.round, d.round.selected);
      if (!s.ok()) FL_LOG(ERROR) << "cannot record the new selection: " << s.ToString();
      d.round_deadline_us = d.NowUs() + static_cast<uint64_t>(d.opt.round_deadline.count()) * 1000;
      FL_LOG(WARNING) << "round " << d.round.round << " deadline: only " << d.acked
                      << " updates; " << d.selected.size() << " clients now selected, deadline extended";
      d.changed.notify_all();
    }
  }
  d.DeliverCallbacks(lock);
}

bool Coordinator::WaitUntilFinished(std::chrono::milliseconds timeout) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  return d.changed.wait_for(lock, timeout, [&] { return d.finished || d.shutdown; }) && d.finished;
}

void Coordinator::SetTaskListener(std::function<void()> listener) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  d.changed.listener = std::move(listener);
}

void Coordinator::Shutdown() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  d.shutdown = true;
  d.changed.notify_all();
}

ModelSnapshot Coordinator::CurrentModel() {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  return d.SnapshotLocked();
}

void Coordinator::SetRoundCallback(
    std::function<void(const RoundSummary&, const ModelSnapshot&)> cb) {
  Impl& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mu);
  d.round_callback = std::move(cb);
}

uint64_t Coordinator::TrainingSeed(uint64_t run_seed, const std::string& client_name,
                                   uint64_t round) {
  return SplitMix64(SplitMix64(run_seed ^ Fnv1a64(client_name)) + round);
}

Status Coordinator::MergeRemotePartial(uint64_t round, const std::vector<RemoteUpdate>& updates,
                                       std::string_view partial) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> lock(d.mu);
  // The lock is then held to the end: no fold starts while the partial merges.
  d.QuiesceFoldsLocked(&lock);
  if (d.opt.durable || d.Async() || d.NormBoundingOn()) {
    return Status::FailedPrecondition(
        "remote partial aggregates need a non-durable synchronous coordinator without norm "
        "bounding");
  }
  if (!d.round_open || d.round.round != round) {
    return Status::FailedPrecondition("partial for round " + std::to_string(round) +
                                      " but it is not the open round");
  }
  std::vector<uint64_t> ids;
  for (const RemoteUpdate& u : updates) {
    FL_ASSIGN_OR_RETURN(std::optional<ClientRecord> named, d.store->FindClient(u.client_name));
    const uint64_t id = named.has_value() ? named->id : 0;
    if (id == 0 || d.selected.count(id) == 0 || d.accepted_sha.count(id) > 0 ||
        std::find(ids.begin(), ids.end(), id) != ids.end()) {
      return Status::FailedPrecondition(
          "client \"" + u.client_name + "\" is unknown, not selected for round " +
          std::to_string(round) + ", already reported, or listed twice");
    }
    ids.push_back(id);
  }
  FL_RETURN_IF_ERROR(d.tree->MergeIn(
      [&](RoundAggregator& leaf) { return leaf.MergeSerializedPartial(partial); }));
  for (size_t i = 0; i < updates.size(); ++i) {
    const RemoteUpdate& u = updates[i];
    const uint64_t id = ids[i];
    LedgerEntry entry;
    entry.round = round;
    entry.client_id = id;
    entry.base_version = d.version;
    entry.status_code = 0;
    entry.bytes = u.bytes;
    entry.weight = u.weight;
    entry.sha256_hex = HexEncode(u.sha256);
    entry.created_at = d.env->NowUnixSeconds();
    Status stored = d.store->AppendLedger(entry).status();
    if (!stored.ok()) {
      FL_LOG(ERROR) << "ledger row of " << u.client_name << ": " << stored.ToString();
    }
    d.accepted_sha[id] = u.sha256;
    ++d.acked;
    d.bytes_up += u.bytes;
    d.bytes_down += u.bytes_down;
    if (u.weight_clipped) ++d.clipped_weight;
  }
  if (d.accepted_sha.size() == d.selected.size()) d.FinishRoundLocked();
  d.DeliverCallbacks(lock);
  return Status::Ok();
}

}  // namespace fl::internal
