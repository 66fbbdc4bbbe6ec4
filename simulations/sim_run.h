#ifndef FL_SIMULATIONS_SIM_RUN_H_
#define FL_SIMULATIONS_SIM_RUN_H_

// One fl-sim run, as RunSimulation (simulator.h) describes it: the state every phase
// shares, the setup (workload, coordinator, run record, trainers, virtual clients), the
// synchronous rounds, and the recording of every closed round. Asynchronous mode's
// event loop (async_loop.h) works on the same state.
//
// LibTorch stays out of this header.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "client/client_runtime.h"
#include "core/config.h"
#include "fl/env.h"
#include "fl/model_snapshot.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/strategy.h"
#include "fl/task.h"
#include "fl/trainer.h"
#include "server/coordinator.h"
#include "server/split_service.h"
#include "simulations/byzantine.h"
#include "simulations/deferred_push_link.h"
#include "simulations/in_process_link.h"
#include "simulations/mpi_backend.h"
#include "simulations/simulator.h"
#include "simulations/virtual_clock.h"
#include "simulations/worker_pool.h"
#include "simulations/workload.h"
#include "store/store.h"

namespace fl::internal {

// InvalidArgument unless lo <= config.GetInt(key) <= hi.
Status CheckRange(const Config& config, const char* key, int64_t lo, int64_t hi);

// "client-<index>", a virtual client's name.
std::string ClientName(size_t client);

// Host seconds since `t`.
double SecondsSince(std::chrono::steady_clock::time_point t);

// One materialised virtual client: a ClientRuntime over an in-process link bound to its
// registered id. The registry itself is only the coordinator's client table; a client
// is materialised when it has work: synchronous rounds build one per task on the
// worker that trains it, asynchronous mode keeps one per client while it holds tasks.
struct VirtualClient {
  std::unique_ptr<InProcessLink> link;
  std::unique_ptr<DeferredPushLink> deferred;  // asynchronous mode only
  std::unique_ptr<ClientRuntime> runtime;
};

// Owns everything one run creates; members are destroyed in the reverse order of setup
// (virtual clients before the workers, the workers before the coordinator). Run() is
// called once, from one thread; worker threads use it only inside WorkerPool::Run (each
// on its own trainer and client; progress reports are serialized by progress_mu_).
class SimulationRun {
 public:
  using ProgressFn = std::function<void(const SimProgress&)>;

  // Neither `config` nor `progress` (which may be empty) is copied: both must outlive
  // the run.
  SimulationRun(const Config& config, const ProgressFn& progress);
  SimulationRun(const SimulationRun&) = delete;
  SimulationRun& operator=(const SimulationRun&) = delete;

  // Sets up the federation and runs it to the end. Call once. Errors as RunSimulation's.
  Result<SimulationResult> Run();

 private:
  friend class AsyncLoop;

  // The tasks of one synchronous round, by client index.
  using Work = std::vector<std::pair<size_t, Task>>;
  // Rounds the coordinator closed (a flush in asynchronous mode), with their models.
  using ClosedRounds = std::vector<std::pair<RoundSummary, ModelSnapshot>>;

  // ---- setup, in this order ----
  Status ReadOptions();
  Result<ParamSet> LoadData();
  Status OpenCoordinator(const ParamSet& initial);
  Status OpenRunRecord();
  Status StartWorkers();
  // Hosts the workload's split body for the virtual clients' sessions, if it has one.
  Status StartSplitService();
  // Registers every virtual client with the coordinator in a few store transactions.
  Status RegisterClients();
  // The coordinator's id of virtual client `client` (ids are consecutive, see
  // RegisterClients) and back.
  uint64_t ClientId(size_t client) const { return first_client_id_ + client; }
  size_t ClientIndex(uint64_t id) const { return static_cast<size_t>(id - first_client_id_); }
  // Client `client`'s runtime over a link bound to its registered id, joined (without
  // a call to the coordinator).
  Result<VirtualClient> NewVirtualClient(size_t client) const;
  // Asynchronous mode: the client's materialised state, built on first use; Release
  // drops it once the client holds no task. Main thread only.
  Result<VirtualClient*> Materialise(size_t client);
  void Release(size_t client);

  // ---- synchronous rounds ----
  Status RunSyncRounds();
  // Every client asks for work; *finished when every one was told the run is done.
  Status PullAll(Work* work, bool* finished);
  // Gives the coordinator its tick while nobody has work; DeadlineExceeded once that
  // lasted past the stall limit.
  Status WaitForDeadline(std::chrono::steady_clock::time_point idle_since);
  Status RunSyncRound(Work work, std::chrono::steady_clock::time_point round_start,
                      std::chrono::steady_clock::time_point* idle_since);
  // Trains `work` on the workers; fills task_work (by index in `work`) and adds the
  // examples trained to *samples. The first client error, with cancellation of the rest.
  Status TrainSyncRound(const Work& work, std::vector<TaskWork>* task_work,
                        std::atomic<uint64_t>* samples);
  Status ExecuteSyncTask(int worker, size_t client, const Task& task, TaskWork* task_work,
                         std::atomic<uint64_t>* samples);

  // ---- every round ----
  ClosedRounds TakeClosedRounds();
  // Adds a finished task's TrainStats::metrics to the sums of the next record, and its
  // phase times to the run's.
  void AddClientMetrics(const ExecuteReport& report);
  // The sums since the last record, as "client.<name>", and starts new ones.
  std::map<std::string, double> TakeClientMetrics();
  // Records a closed round (asynchronous mode: a flush): evaluates its model when due,
  // appends it to the run record and the metrics files, and reports progress.
  Status RecordRound(const RoundSummary& summary, const ModelSnapshot& snapshot,
                     uint64_t train_samples, double train_seconds, uint64_t attackers,
                     size_t selected, double sim_time);
  SimRoundRecord NewRecord(const RoundSummary& summary, uint64_t train_samples,
                           double train_seconds, uint64_t attackers, double sim_time) const;
  // Each worker scores a part of the evaluation set with its own replica.
  Result<EvalStats> Evaluate(const ParamSet& params);
  void Report(SimProgress p);
  void ReportRoundFinished(const RoundSummary& summary, size_t selected);
  Status Finish();

  // ---- options ----
  const Config& config_;
  const ProgressFn& progress_;
  std::chrono::steady_clock::time_point start_;
  Env* env_ = nullptr;
  int workers_ = 0;
  int threads_per_worker_ = 0;
  uint64_t eval_every_ = 0;
  uint64_t seed_ = 0;
  std::string device_;
  std::unique_ptr<Strategy> strategy_;  // until the coordinator takes it
  CoordinatorOptions options_;
  ByzantineOptions byzantine_options_;
  VirtualClockOptions clock_options_;
  bool async_ = false;
  bool overlap_ = false;  // client.overlap, asynchronous mode only

  // Under mpirun with several ranks (mpi_backend.h); null otherwise. Destroyed after
  // the federation below, so MPI outlives every worker.
  std::unique_ptr<MpiBackend> mpi_;

  // ---- the federation (declared in setup order; destroyed in reverse) ----
  std::unique_ptr<Workload> workload_;
  size_t num_clients_ = 0;
  std::string out_dir_;
  uint64_t total_rounds_ = 0;
  std::mutex summaries_mu_;
  ClosedRounds summaries_;  // filled by the coordinator's round callback
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Store> record_;  // the run record, in the coordinator's SQLite file
  // The server's split body (SFPrompt), when the workload has one.
  std::unique_ptr<SplitService> split_;
  std::vector<std::unique_ptr<WorkloadWorker>> trainers_;  // one per worker
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<ByzantineClients> byzantine_;
  std::unique_ptr<const VirtualClock> clock_;
  double sim_now_ = 0;  // simulated seconds at the close of the last round
  uint64_t first_client_id_ = 0;  // the coordinator's id of virtual client 0
  std::map<size_t, VirtualClient> active_;  // asynchronous mode: see Materialise

  // ---- progress and results ----
  SimulationResult result_;
  std::string title_;
  std::mutex progress_mu_;
  std::mutex client_metrics_mu_;
  std::map<std::string, double> client_metrics_;  // see AddClientMetrics
  double train_seconds_total_ = 0;
  double last_metric_ = -1;
  // The model of the last evaluation, for Workload::WriteFinalReport.
  std::shared_ptr<const ParamSet> last_evaluated_;
  uint64_t rounds_done_ = 0;
  CancelToken cancel_;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_SIM_RUN_H_
