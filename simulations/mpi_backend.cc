#include "simulations/mpi_backend.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "codec/byte_io.h"
#include "codec/param_io.h"
#include "crypto/update_digest.h"
#include "fl/server_link.h"
#include "fl/v1/fl.pb.h"
#include "proto/wire.h"
#include "server/coordinator_config.h"
#include "server/update_policy.h"
#include "simulations/mpi_launch.h"
#include "simulations/sim_run.h"
#include "simulations/worker_pool.h"
#include "simulations/workload.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

// Message kinds of rank 0's broadcast.
constexpr uint32_t kRoundMessage = 1;
constexpr uint32_t kEndMessage = 2;
// Tag of a partial aggregate sent up the tree.
constexpr int kPartialTag = 7;

Status MpiError(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return Status::Internal(std::string(call) + ": " + std::string(text, length));
}

#define FL_MPI_CALL(call)                                                \
  do {                                                                   \
    const int fl_mpi_code = (call);                                      \
    if (fl_mpi_code != MPI_SUCCESS) return MpiError(#call, fl_mpi_code); \
  } while (0)

// Waits for a nonblocking operation by testing it every 100 us instead of spinning in a
// blocking call: a rank waits through whole rounds (rank 0 evaluating, slower ranks
// training), and OpenMPI's blocking calls busy-poll, taking a core from the ranks that
// work when ranks share or oversubscribe the machine.
Status Await(MPI_Request* request) {
  while (true) {
    int done = 0;
    FL_MPI_CALL(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

Status CheckMessageSize(size_t bytes) {
  if (bytes <= static_cast<size_t>(INT_MAX)) return Status::Ok();
  return Status::ResourceExhausted("MPI message of " + std::to_string(bytes) +
                                   " bytes exceeds the 2 GiB a single send carries");
}

// Rank r's parent and children in a binomial tree rooted at 0: r's children are
// r + 2^j for every 2^j below r's lowest set bit (every 2^j < size for rank 0), in
// increasing order, the order their partials are merged in.
int TreeParent(int rank) { return rank == 0 ? -1 : rank - (rank & -rank); }

std::vector<int> TreeChildren(int rank, int size) {
  std::vector<int> children;
  const int limit = rank == 0 ? size : (rank & -rank);
  for (int step = 1; step < limit && rank + step < size; step <<= 1) {
    children.push_back(rank + step);
  }
  return children;
}

// One client's update folded on some rank, as it travels up the tree.
struct RemoteRecord {
  uint64_t k = 0;  // the work item
  Coordinator::RemoteUpdate update;
  TaskWork work;
};

// A partial aggregate and the updates it folded: LP(partial), count, then per record
// k, LP(client name), bytes, weight, clipped, LP(sha256), bytes_down, examples, bytes_up.
std::string EncodePartial(std::string_view partial, const std::vector<RemoteRecord>& records) {
  std::string out;
  PutLengthPrefixed(&out, partial);
  PutU64(&out, records.size());
  for (const RemoteRecord& r : records) {
    PutU64(&out, r.k);
    PutLengthPrefixed(&out, r.update.client_name);
    PutU64(&out, r.update.bytes);
    PutF64(&out, r.update.weight);
    PutU64(&out, r.update.weight_clipped ? 1 : 0);
    PutLengthPrefixed(&out, r.update.sha256);
    PutU64(&out, r.work.bytes_down);
    PutU64(&out, r.work.examples);
    PutU64(&out, r.work.bytes_up);
  }
  return out;
}

Status DecodePartial(std::string_view bytes, std::string* partial,
                     std::vector<RemoteRecord>* records) {
  ByteReader in(bytes);
  uint64_t n = 0;
  if (!in.LengthPrefixed(partial) || !in.U64(&n)) {
    return Status::DataLoss("partial aggregate message truncated");
  }
  for (uint64_t i = 0; i < n; ++i) {
    RemoteRecord r;
    uint64_t clipped = 0;
    if (!in.U64(&r.k) || !in.LengthPrefixed(&r.update.client_name) || !in.U64(&r.update.bytes) ||
        !in.F64(&r.update.weight) || !in.U64(&clipped) || !in.LengthPrefixed(&r.update.sha256) ||
        !in.U64(&r.work.bytes_down) || !in.U64(&r.work.examples) || !in.U64(&r.work.bytes_up)) {
      return Status::DataLoss("partial aggregate message truncated in record " + std::to_string(i));
    }
    r.update.weight_clipped = clipped != 0;
    records->push_back(std::move(r));
  }
  if (in.remaining() != 0) return Status::DataLoss("partial aggregate message too long");
  return Status::Ok();
}

// A round as rank 0 broadcasts it.
struct RoundMessage {
  bool end = false;
  uint64_t round = 0;
  ModelSnapshot model;
  MpiBackend::Work work;
  std::vector<uint32_t> rank_of;  // by work item
};

// Work item k's rank: largest clients first, each to the rank with the fewest examples
// so far (ties: the lowest rank), a greedy schedule within 4/3 of the best makespan.
std::vector<uint32_t> AssignRanks(const MpiBackend::Work& work, const Workload& workload,
                                  int ranks) {
  std::vector<size_t> order(work.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return workload.ClientSize(work[a].first) > workload.ClientSize(work[b].first);
  });
  std::vector<uint64_t> load(static_cast<size_t>(ranks), 0);
  std::vector<uint32_t> rank_of(work.size(), 0);
  for (size_t k : order) {
    const auto least = std::min_element(load.begin(), load.end());
    rank_of[k] = static_cast<uint32_t>(least - load.begin());
    *least += std::max<uint64_t>(workload.ClientSize(work[k].first), 1);
  }
  return rank_of;
}

// kind, round, version, wire bytes, LP(model), count, then per work item its client,
// its rank and LP(task).
std::string EncodeRound(const MpiBackend::Work& work, const std::vector<uint32_t>& rank_of,
                        const ModelSnapshot& model) {
  std::string out;
  PutU32(&out, kRoundMessage);
  PutU64(&out, work.front().second.round);
  PutU64(&out, model.version);
  PutU64(&out, model.wire_bytes);
  PutLengthPrefixed(&out, SerializeParamSet(*model.params));
  PutU64(&out, work.size());
  for (size_t k = 0; k < work.size(); ++k) {
    v1::Task proto;
    ToProto(work[k].second, &proto);
    PutU64(&out, work[k].first);
    PutU32(&out, rank_of[k]);
    PutLengthPrefixed(&out, proto.SerializeAsString());
  }
  return out;
}

Result<RoundMessage> DecodeRound(std::string_view bytes) {
  ByteReader in(bytes);
  RoundMessage m;
  uint32_t kind = 0;
  if (!in.U32(&kind)) return Status::DataLoss("round message truncated");
  if (kind == kEndMessage) {
    m.end = true;
    return m;
  }
  std::string model;
  uint64_t n = 0;
  if (kind != kRoundMessage || !in.U64(&m.round) || !in.U64(&m.model.version) ||
      !in.U64(&m.model.wire_bytes) || !in.LengthPrefixed(&model) || !in.U64(&n)) {
    return Status::DataLoss("round message truncated or of unknown kind");
  }
  FL_ASSIGN_OR_RETURN(ParamSet params, ParseParamSet(model));
  m.model.params = std::make_shared<const ParamSet>(std::move(params));
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t client = 0;
    uint32_t rank = 0;
    std::string task_bytes;
    v1::Task proto;
    if (!in.U64(&client) || !in.U32(&rank) || !in.LengthPrefixed(&task_bytes) ||
        !proto.ParseFromString(task_bytes)) {
      return Status::DataLoss("round message: task " + std::to_string(i) + " does not parse");
    }
    FL_ASSIGN_OR_RETURN(Task task, FromProto(proto));
    m.work.emplace_back(client, std::move(task));
    m.rank_of.push_back(rank);
  }
  return m;
}

// A rank's fold of its clients' updates for one round. Thread-safe: the workers push
// through it concurrently.
class RankFold {
 public:
  RankFold(std::unique_ptr<RoundAggregator> aggregator, const UpdatePolicy& policy,
           uint64_t version)
      : aggregator_(std::move(aggregator)), policy_(policy), version_(version) {}

  // Applies the update policy's weight as the coordinator does and folds the update of
  // work item k. The aggregator validates the content.
  Status Fold(uint64_t k, const std::string& client_name, const Payload& payload) {
    if (payload.meta.base_version != version_) {
      return Status::FailedPrecondition(
          "update computed against version " + std::to_string(payload.meta.base_version) +
          " but the round is based on version " + std::to_string(version_));
    }
    RemoteRecord r;
    r.k = k;
    r.update.client_name = client_name;
    r.update.bytes = payload.bytes.size();
    FL_ASSIGN_OR_RETURN(r.update.weight,
                        PolicyWeight(policy_, payload.meta.weight, &r.update.weight_clipped));
    r.update.sha256 = payload.meta.sha256;
    std::lock_guard<std::mutex> lock(mu_);
    if (r.update.weight == payload.meta.weight) {
      FL_RETURN_IF_ERROR(aggregator_->Accumulate(payload));
    } else {
      Payload weighed = payload;
      weighed.meta.weight = r.update.weight;
      FL_RETURN_IF_ERROR(aggregator_->Accumulate(weighed));
    }
    records_.push_back(std::move(r));
    return Status::Ok();
  }

  // What the task of work item k moved (after its Fold).
  void SetWork(uint64_t k, const TaskWork& work) {
    std::lock_guard<std::mutex> lock(mu_);
    for (RemoteRecord& r : records_) {
      if (r.k == k) r.work = work;
    }
  }

  // Merges a child's message into this fold.
  Status MergeChild(std::string_view message) {
    std::string partial;
    std::vector<RemoteRecord> records;
    FL_RETURN_IF_ERROR(DecodePartial(message, &partial, &records));
    std::lock_guard<std::mutex> lock(mu_);
    FL_RETURN_IF_ERROR(aggregator_->MergeSerializedPartial(partial));
    for (RemoteRecord& r : records) records_.push_back(std::move(r));
    return Status::Ok();
  }

  Result<std::string> Message() const {
    std::lock_guard<std::mutex> lock(mu_);
    FL_ASSIGN_OR_RETURN(std::string partial, aggregator_->SerializePartial());
    return EncodePartial(partial, records_);
  }

 private:
  mutable std::mutex mu_;
  std::unique_ptr<RoundAggregator> aggregator_;
  const UpdatePolicy policy_;
  const uint64_t version_;
  std::vector<RemoteRecord> records_;
};

// The link of one client trained on a rank other than 0: the model is the round's
// broadcast, an upload is folded into the rank's partial aggregate. Nothing else of the
// server exists here.
class RankLink final : public ServerLink {
 public:
  RankLink(uint64_t k, std::string client_name, const ModelSnapshot* model, RankFold* fold)
      : k_(k), client_name_(std::move(client_name)), model_(model), fold_(fold) {}

  Result<JoinReply> Join(const std::string&, const std::string&) override {
    return JoinReply{0, "rank-local"};
  }
  Result<Task> PullTask(std::chrono::milliseconds) override {
    return Status::Unimplemented("a rank's client is handed its task by rank 0");
  }
  Result<ModelSnapshot> FetchModel(uint64_t version) override {
    if (version != model_->version) {
      return Status::NotFound("model version " + std::to_string(version) + " is not the round's " +
                              std::to_string(model_->version));
    }
    return *model_;
  }
  Result<PushAck> PushUpdate(const Payload& payload) override {
    if (payload.meta.sha256.empty()) {
      Payload sealed = payload;
      SealUpdateSha256(&sealed.meta, sealed.bytes);
      FL_RETURN_IF_ERROR(fold_->Fold(k_, client_name_, sealed));
    } else {
      FL_RETURN_IF_ERROR(fold_->Fold(k_, client_name_, payload));
    }
    return PushAck{payload.meta.round, false};
  }
  Status Heartbeat() override { return Status::Ok(); }
  Result<ServerStatusInfo> GetStatus() override {
    return Status::Unimplemented("a rank's client has no server status");
  }

 private:
  const uint64_t k_;
  const std::string client_name_;
  const ModelSnapshot* model_;
  RankFold* fold_;
};

// What a rank other than 0 needs to train: the workload's data and one trainer per
// worker, as SimulationRun has them.
struct RankTrainers {
  std::unique_ptr<Workload> workload;
  std::vector<std::unique_ptr<WorkloadWorker>> workers;
  std::unique_ptr<WorkerPool> pool;
  std::unique_ptr<Strategy> strategy;
  UpdatePolicy policy;
};

class OpenMpiBackend final : public MpiBackend {
 public:
  // `owns_mpi`: this backend initialized MPI (and finalizes it), rather than the program
  // that embeds the simulation (fl/simulation.h).
  OpenMpiBackend(int rank, int size, bool owns_mpi)
      : rank_(rank), size_(size), owns_mpi_(owns_mpi) {}
  ~OpenMpiBackend() override {
    if (clean_ && owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status CheckSupport(const Config& config, Strategy* strategy, const ParamSet& initial,
                      bool split_body) const override {
    std::string algorithm = config.GetString("algorithm.name");
    if (config.Has("algorithm.aggregator") && config.GetString("algorithm.aggregator") != "mean") {
      algorithm += " (aggregator " + config.GetString("algorithm.aggregator") + ")";
    }
    const std::string prefix = "mpirun -np " + std::to_string(size_) + ": ";
    FL_ASSIGN_OR_RETURN(CoordinatorOptions options, CoordinatorOptionsFromConfig(config));
    if (options.mode != CoordinatorMode::kSync) {
      return Status::InvalidArgument(prefix + "coordinator.mode=async is not spread over ranks");
    }
    if (config.GetDouble("byzantine.fraction") > 0) {
      return Status::InvalidArgument(prefix + "byzantine.fraction > 0 is not spread over ranks");
    }
    if (options.norm_bound > 0 || options.norm_bound_quantile > 0) {
      return Status::InvalidArgument(prefix +
                                     "norm bounding needs every update's norm at the coordinator");
    }
    if (split_body) {
      return Status::InvalidArgument(prefix +
                                     "a split-learning workload needs the server's "
                                     "body in every client's process");
    }
    std::unique_ptr<RoundAggregator> probe = strategy->NewRoundAggregator(initial, 1);
    Result<std::string> partial = probe->SerializePartial();
    if (partial.status().code() == StatusCode::kUnimplemented) {
      return Status::InvalidArgument(prefix + "algorithm " + algorithm +
                                     " has no partial aggregate to merge across ranks "
                                     "(RoundAggregator::SerializePartial)");
    }
    return partial.status();
  }

  bool Trains(size_t k) const override {
    return k < rank_of_.size() && rank_of_[k] == static_cast<uint32_t>(rank_);
  }

  Status StartRound(const Work& work, const Workload& workload,
                    const ModelSnapshot& model) override {
    if (work.empty() || model.params == nullptr ||
        model.version != work.front().second.model_version) {
      return Status::Internal("StartRound: no work, or a model other than the round's");
    }
    round_ = work.front().second.round;
    round_clients_.clear();
    for (const auto& item : work) round_clients_.push_back(item.first);
    rank_of_ = AssignRanks(work, workload, size_);
    std::string message = EncodeRound(work, rank_of_, model);
    return Broadcast(&message);
  }

  Status FinishRound(Coordinator* coordinator, std::vector<TaskWork>* task_work,
                     std::atomic<uint64_t>* samples) override {
    for (int child : TreeChildren(0, size_)) {
      FL_ASSIGN_OR_RETURN(std::string message, Receive(child));
      std::string partial;
      std::vector<RemoteRecord> records;
      FL_RETURN_IF_ERROR(DecodePartial(message, &partial, &records));
      std::vector<Coordinator::RemoteUpdate> updates;
      for (RemoteRecord& r : records) {
        if (r.k >= round_clients_.size() ||
            r.update.client_name != ClientName(round_clients_[r.k])) {
          return Status::DataLoss("rank " + std::to_string(child) + " reported work item " +
                                  std::to_string(r.k) + " for \"" + r.update.client_name +
                                  "\", which is not this round's");
        }
        (*task_work)[r.k] = r.work;
        *samples += r.work.examples;
        r.update.bytes_down = r.work.bytes_down;
        updates.push_back(std::move(r.update));
      }
      FL_RETURN_IF_ERROR(coordinator->MergeRemotePartial(round_, updates, partial)
                             .WithContext("partial of rank " + std::to_string(child)));
    }
    return Status::Ok();
  }

  Status EndRun() override {
    std::string message;
    PutU32(&message, kEndMessage);
    FL_RETURN_IF_ERROR(Broadcast(&message));
    clean_ = true;
    return Status::Ok();
  }

  Status ServeRounds(const Config& config) override {
    FL_ASSIGN_OR_RETURN(RankTrainers t, StartTrainers(config));
    while (true) {
      std::string bytes;
      FL_RETURN_IF_ERROR(Broadcast(&bytes));
      FL_ASSIGN_OR_RETURN(RoundMessage m, DecodeRound(bytes));
      if (m.end) break;
      rank_of_ = m.rank_of;
      FL_RETURN_IF_ERROR(ServeRound(m, &t).WithContext("rank " + std::to_string(rank_) + " round " +
                                                       std::to_string(m.round)));
    }
    clean_ = true;
    return Status::Ok();
  }

 private:
  Result<RankTrainers> StartTrainers(const Config& config) const {
    RankTrainers t;
    FL_ASSIGN_OR_RETURN(std::string device, ResolveTorchDevice(config.GetString("sim.device")));
    const int threads = static_cast<int>(config.GetInt("sim.threads_per_worker"));
    SetTorchThreads(threads);
    FL_ASSIGN_OR_RETURN(t.workload, LoadWorkload(config, device, Env::Default()));
    FL_ASSIGN_OR_RETURN(ParamSet initial, t.workload->InitialModel(config));
    FL_ASSIGN_OR_RETURN(t.strategy, CreateStrategy(config));
    FL_RETURN_IF_ERROR(
        CheckSupport(config, t.strategy.get(), initial, t.workload->SplitBody().has_value()));
    FL_ASSIGN_OR_RETURN(CoordinatorOptions options, CoordinatorOptionsFromConfig(config));
    t.policy = options.update_policy;
    const int workers = static_cast<int>(config.GetInt("sim.workers"));
    for (int w = 0; w < workers; ++w) {
      FL_ASSIGN_OR_RETURN(std::unique_ptr<WorkloadWorker> worker, t.workload->NewWorker());
      t.workers.push_back(std::move(worker));
    }
    t.pool = std::make_unique<WorkerPool>(workers, [threads](int) { SetTorchThreads(threads); });
    return t;
  }

  // Trains this rank's share of round `m`, merges its children's partials and sends
  // the result to its parent.
  Status ServeRound(const RoundMessage& m, RankTrainers* t) {
    RankFold fold(t->strategy->NewRoundAggregator(*m.model.params, m.round), t->policy,
                  m.model.version);
    std::vector<size_t> mine;
    for (size_t k = 0; k < m.work.size(); ++k) {
      if (Trains(k)) mine.push_back(k);
    }
    std::vector<Status> outcome(mine.size());
    const CancelToken never;
    t->pool->Run(mine.size(), [&](int w, size_t j) {
      const size_t k = mine[j];
      outcome[j] = TrainClient(k, m, &fold, t->workers[w].get(), never);
    });
    for (const Status& s : outcome) FL_RETURN_IF_ERROR(s);
    for (int child : TreeChildren(rank_, size_)) {
      FL_ASSIGN_OR_RETURN(std::string message, Receive(child));
      FL_RETURN_IF_ERROR(
          fold.MergeChild(message).WithContext("partial of rank " + std::to_string(child)));
    }
    FL_ASSIGN_OR_RETURN(std::string message, fold.Message());
    FL_RETURN_IF_ERROR(CheckMessageSize(message.size()));
    MPI_Request sent;
    FL_MPI_CALL(MPI_Isend(message.data(), static_cast<int>(message.size()), MPI_BYTE,
                          TreeParent(rank_), kPartialTag, MPI_COMM_WORLD, &sent));
    return Await(&sent);
  }

  Status TrainClient(size_t k, const RoundMessage& m, RankFold* fold, WorkloadWorker* worker,
                     const CancelToken& cancel) const {
    const auto& [client, task] = m.work[k];
    const std::string name = ClientName(client);
    RankLink link(k, name, &m.model, fold);
    ClientRuntimeOptions ro;
    ro.client_name = name;
    ClientRuntime runtime(&link, std::move(ro));
    runtime.set_keep_model_cache(false);
    FL_RETURN_IF_ERROR(runtime.Join());
    FL_ASSIGN_OR_RETURN(Trainer * trainer, worker->BindClient(client));
    worker->UseLink(&link);
    FL_ASSIGN_OR_RETURN(ExecuteReport r, runtime.Execute(task, *trainer, cancel));
    fold->SetWork(k, TaskWork{r.bytes_down, r.train.num_examples, r.bytes_up});
    return Status::Ok();
  }

  // Rank 0 sends *message; every other rank receives into it.
  Status Broadcast(std::string* message) const {
    uint64_t size = message->size();
    MPI_Request request;
    FL_MPI_CALL(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD, &request));
    FL_RETURN_IF_ERROR(Await(&request));
    FL_RETURN_IF_ERROR(CheckMessageSize(size));
    message->resize(size);
    FL_MPI_CALL(
        MPI_Ibcast(message->data(), static_cast<int>(size), MPI_BYTE, 0, MPI_COMM_WORLD, &request));
    return Await(&request);
  }

  Result<std::string> Receive(int from) const {
    MPI_Status status;
    for (int arrived = 0; !arrived;) {
      FL_MPI_CALL(MPI_Iprobe(from, kPartialTag, MPI_COMM_WORLD, &arrived, &status));
      if (!arrived) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    int count = 0;
    FL_MPI_CALL(MPI_Get_count(&status, MPI_BYTE, &count));
    std::string message(static_cast<size_t>(count), '\0');
    MPI_Request request;
    FL_MPI_CALL(
        MPI_Irecv(message.data(), count, MPI_BYTE, from, kPartialTag, MPI_COMM_WORLD, &request));
    FL_RETURN_IF_ERROR(Await(&request));
    return message;
  }

  const int rank_;
  const int size_;
  uint64_t round_ = 0;                 // rank 0: the round StartRound sent
  std::vector<size_t> round_clients_;  // ... and its clients, by work item
  std::vector<uint32_t> rank_of_;      // the current round's rank of each work item
  const bool owns_mpi_;
  bool clean_ = false;                 // MPI is finalized only after a run that ended in order
};

}  // namespace

Result<std::unique_ptr<MpiBackend>> MpiBackend::StartIfLaunched() {
  if (LaunchedWorldSize() <= 1) return std::unique_ptr<MpiBackend>();
  int initialized = 0;
  FL_MPI_CALL(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    FL_MPI_CALL(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  }
  int rank = 0, size = 1;
  FL_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  FL_MPI_CALL(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return std::unique_ptr<MpiBackend>(new OpenMpiBackend(rank, size, !initialized));
}

}  // namespace fl::internal
