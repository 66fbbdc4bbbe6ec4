#include "simulations/sim_run.h"

#include <sys/resource.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <thread>

#include "algorithms/registry.h"
#include "core/logging.h"
#include "server/coordinator_config.h"
#include "simulations/async_loop.h"
#include "simulations/sim_outputs.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

// The simulated close of a sync round that opened at `open`: every selected client
// runs its task from `open` on the virtual clock; the round waits for the last one,
// then the server aggregates (clock.server_seconds).
double SyncRoundClose(const VirtualClock& clock, double open,
                      const std::vector<std::pair<size_t, Task>>& work,
                      const std::vector<TaskWork>& task_work) {
  double last = open;
  for (size_t k = 0; k < work.size(); ++k) {
    last = std::max(last, clock.RunTask(work[k].first, open, task_work[k]).finish);
  }
  return last + clock.options().server_seconds;
}

}  // namespace

std::string ClientName(size_t client) { return "client-" + std::to_string(client); }

Status CheckRange(const Config& config, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = config.GetInt(key);
  if (v < lo || v > hi) {
    return Status::InvalidArgument("config key " + std::string(key) + " must be in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                                   std::to_string(v) + ")");
  }
  return Status::Ok();
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

SimulationRun::SimulationRun(const Config& config, const ProgressFn& progress)
    : config_(config), progress_(progress) {}

Result<SimulationResult> SimulationRun::Run() {
  start_ = std::chrono::steady_clock::now();
  env_ = Env::Default();
  // Under mpirun, ranks other than 0 only train their share of each round.
  FL_ASSIGN_OR_RETURN(mpi_, MpiBackend::StartIfLaunched());
  if (mpi_ != nullptr && mpi_->rank() != 0) {
    FL_RETURN_IF_ERROR(mpi_->ServeRounds(config_));
    result_.mpi_worker = true;
    return std::move(result_);
  }
  FL_RETURN_IF_ERROR(ReadOptions());
  FL_ASSIGN_OR_RETURN(ParamSet initial, LoadData());
  if (mpi_ != nullptr) {
    FL_RETURN_IF_ERROR(
        mpi_->CheckSupport(config_, strategy_.get(), initial, workload_->SplitBody().has_value()));
  }
  FL_RETURN_IF_ERROR(OpenCoordinator(initial));
  FL_RETURN_IF_ERROR(OpenRunRecord());
  FL_RETURN_IF_ERROR(StartWorkers());
  FL_RETURN_IF_ERROR(StartSplitService());
  // Device profiles of the whole population, drawn from the seed.
  clock_ = std::make_unique<const VirtualClock>(clock_options_, num_clients_);
  FL_RETURN_IF_ERROR(RegisterClients());

  result_.out_dir = out_dir_;
  result_.metric = workload_->metric();
  title_ = "fl-sim " + config_.GetString("sim.preset") + " (" +
           config_.GetString("algorithm.name") + ", " + DescribeClients(config_) + ", seed " +
           std::to_string(seed_) + ")";
  if (async_) {
    FL_RETURN_IF_ERROR(AsyncLoop(this).Run());
  } else {
    FL_RETURN_IF_ERROR(RunSyncRounds());
  }
  if (mpi_ != nullptr) FL_RETURN_IF_ERROR(mpi_->EndRun());
  FL_RETURN_IF_ERROR(Finish());
  return std::move(result_);
}

// ---- setup ----

Status SimulationRun::ReadOptions() {
  FL_RETURN_IF_ERROR(CheckRange(config_, "sim.workers", 1, 1024));
  FL_RETURN_IF_ERROR(CheckRange(config_, "sim.threads_per_worker", 1, 1024));
  FL_RETURN_IF_ERROR(CheckRange(config_, "sim.eval_every", 1, 1000000));
  workers_ = static_cast<int>(config_.GetInt("sim.workers"));
  threads_per_worker_ = static_cast<int>(config_.GetInt("sim.threads_per_worker"));
  eval_every_ = static_cast<uint64_t>(config_.GetInt("sim.eval_every"));
  seed_ = static_cast<uint64_t>(config_.GetInt("run.seed"));
  FL_ASSIGN_OR_RETURN(device_, ResolveTorchDevice(config_.GetString("sim.device")));
  FL_ASSIGN_OR_RETURN(strategy_, CreateStrategy(config_));
  FL_ASSIGN_OR_RETURN(options_, CoordinatorOptionsFromConfig(config_));
  FL_ASSIGN_OR_RETURN(byzantine_options_, ByzantineOptionsFromConfig(config_));
  FL_ASSIGN_OR_RETURN(clock_options_, VirtualClockOptionsFromConfig(config_));
  async_ = options_.mode == CoordinatorMode::kAsync;
  // Sync rounds wait for every upload before the next task exists, so there is nothing
  // to overlap: a no-op there, as in fl-client.
  overlap_ = async_ && config_.GetBool("client.overlap");
  if (async_ && !clock_options_.enabled) {
    return Status::InvalidArgument(
        "coordinator.mode=async needs clock.enabled=true in fl-sim (updates reach the "
        "coordinator in simulated-time order)");
  }
  return Status::Ok();
}

Result<ParamSet> SimulationRun::LoadData() {
  // Tensors are built on this thread; the workers set their own count (StartWorkers).
  SetTorchThreads(threads_per_worker_);
  FL_ASSIGN_OR_RETURN(workload_, LoadWorkload(config_, device_, env_));
  num_clients_ = workload_->num_clients();
  return workload_->InitialModel(config_);
}

Status SimulationRun::OpenCoordinator(const ParamSet& initial) {
  out_dir_ = OutputDirectory(config_);
  FL_RETURN_IF_ERROR(env_->CreateDirs(out_dir_));
  RemovePreviousRun(out_dir_);
  // A simulation needs no crash recovery, and every virtual client is always online:
  // the round starts once the whole population has joined and nobody times out.
  options_.state_dir = out_dir_;
  options_.store_path = out_dir_ + "/" + kRunDb;
  options_.durable = false;
  options_.min_clients = static_cast<uint32_t>(num_clients_);
  options_.client_timeout = std::chrono::hours(24 * 365);
  // Virtual clients never vanish, and slots that expire on the host's clock would make
  // the hand-out depend on how fast the host trains.
  options_.async.task_timeout = std::chrono::milliseconds(0);
  options_.env = env_;
  total_rounds_ = options_.num_rounds;
  FL_ASSIGN_OR_RETURN(coordinator_, Coordinator::Create(options_, std::move(strategy_), initial));
  coordinator_->SetRoundCallback([this](const RoundSummary& s, const ModelSnapshot& m) {
    std::lock_guard<std::mutex> lock(summaries_mu_);
    summaries_.emplace_back(s, m);
  });
  return Status::Ok();
}

Status SimulationRun::OpenRunRecord() {
  // The run record shares the coordinator's SQLite file (WAL lets two connections in).
  StoreOptions store_options;
  store_options.path = options_.store_path;
  store_options.durable = false;
  FL_ASSIGN_OR_RETURN(record_, Store::Open(store_options));
  const std::string yaml = config_.ToYaml();
  FL_RETURN_IF_ERROR(env_->WriteFileAtomic(out_dir_ + "/" + kConfigYaml, yaml, false));
  FL_RETURN_IF_ERROR(record_->PutMeta("tool", "fl-sim"));
  FL_RETURN_IF_ERROR(record_->PutMeta("config", yaml));
  FL_RETURN_IF_ERROR(record_->PutMeta("preset", config_.GetString("sim.preset")));
  FL_RETURN_IF_ERROR(record_->PutMeta("seed", std::to_string(seed_)));
  FL_RETURN_IF_ERROR(record_->PutMeta("device", device_));
  FL_RETURN_IF_ERROR(record_->PutMeta("started_at", std::to_string(env_->NowUnixSeconds())));
  FL_RETURN_IF_ERROR(record_->PutMeta("workload", workload_->Describe()));
  return record_->PutMeta("metric", workload_->metric().name);
}

// One trainer per worker over the workload's shared data, and the attacking clients.
Status SimulationRun::StartWorkers() {
  for (int w = 0; w < workers_; ++w) {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<WorkloadWorker> t, workload_->NewWorker());
    trainers_.push_back(std::move(t));
  }
  const int threads = threads_per_worker_;
  pool_ = std::make_unique<WorkerPool>(workers_, [threads](int) { SetTorchThreads(threads); });
  // Attacking clients (none unless byzantine.fraction > 0): the same ones every round.
  byzantine_ =
      std::make_unique<ByzantineClients>(byzantine_options_, num_clients_, seed_, workers_);
  if (byzantine_->enabled()) {
    FL_RETURN_IF_ERROR(record_->PutMeta("byzantine", byzantine_->Describe()));
  }
  return Status::Ok();
}

Status SimulationRun::StartSplitService() {
  std::optional<Workload::SplitBodySpec> spec = workload_->SplitBody();
  if (!spec.has_value()) return Status::Ok();
  SplitServiceOptions o;
  o.body = spec->body;
  // Every worker holds at most one session; batches are the trainer's own.
  o.max_sessions = workers_;
  o.max_batch_samples = std::numeric_limits<int32_t>::max();
  FL_ASSIGN_OR_RETURN(split_, SplitService::Create(o, spec->backbone, coordinator_.get()));
  return Status::Ok();
}

Status SimulationRun::RegisterClients() {
  // Batches bound the names held at once; each is one store transaction.
  constexpr size_t kBatch = 1 << 16;
  const auto start = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin < num_clients_; begin += kBatch) {
    std::vector<std::string> names;
    for (size_t i = begin; i < std::min(num_clients_, begin + kBatch); ++i) {
      names.push_back(ClientName(i));
    }
    FL_ASSIGN_OR_RETURN(std::vector<uint64_t> ids, coordinator_->RegisterClients(names));
    if (begin == 0) first_client_id_ = ids.front();
    // The run record is new (OpenCoordinator), so the store numbers the clients in
    // order; ClientId relies on it.
    for (size_t k = 0; k < ids.size(); ++k) {
      if (ids[k] != ClientId(begin + k)) {
        return Status::Internal("virtual client " + std::to_string(begin + k) + " got id " +
                                std::to_string(ids[k]) + ", not " +
                                std::to_string(ClientId(begin + k)));
      }
    }
  }
  // Peak resident memory before any training: the data, the model replicas and the
  // registry (tests/bench/registry_scale.sh reads it).
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  FL_LOG(INFO) << "registered " << num_clients_ << " virtual clients in " << SecondsSince(start)
               << " s; peak resident " << usage.ru_maxrss << " kB";
  return Status::Ok();
}

Result<VirtualClient> SimulationRun::NewVirtualClient(size_t client) const {
  VirtualClient c;
  c.link = std::make_unique<InProcessLink>(coordinator_.get(), split_.get(),
                                           Session{ClientId(client)});
  ServerLink* link = c.link.get();
  if (async_) {
    c.deferred = std::make_unique<DeferredPushLink>(c.link.get());
    link = c.deferred.get();
  }
  ClientRuntimeOptions ro;
  ro.client_name = ClientName(client);
  ro.poll_wait = std::chrono::milliseconds(0);
  c.runtime = std::make_unique<ClientRuntime>(link, std::move(ro));
  c.runtime->set_keep_model_cache(false);
  // Answered from the registration: no call reaches the coordinator.
  FL_RETURN_IF_ERROR(c.runtime->Join().WithContext(ClientName(client)));
  return c;
}

Result<VirtualClient*> SimulationRun::Materialise(size_t client) {
  auto it = active_.find(client);
  if (it == active_.end()) {
    FL_ASSIGN_OR_RETURN(VirtualClient c, NewVirtualClient(client));
    it = active_.emplace(client, std::move(c)).first;
  }
  return &it->second;
}

void SimulationRun::Release(size_t client) { active_.erase(client); }

// ---- synchronous rounds ----

Status SimulationRun::RunSyncRounds() {
  auto idle_since = std::chrono::steady_clock::now();
  while (true) {
    const auto round_start = std::chrono::steady_clock::now();
    Work work;
    bool finished = false;
    FL_RETURN_IF_ERROR(PullAll(&work, &finished));
    if (finished) return Status::Ok();
    if (work.empty()) {
      FL_RETURN_IF_ERROR(WaitForDeadline(idle_since));
      continue;
    }
    FL_RETURN_IF_ERROR(RunSyncRound(std::move(work), round_start, &idle_since));
  }
}

Status SimulationRun::PullAll(Work* work, bool* finished) {
  // Opens the next round when it is due. Then the clients selected for it ask for their
  // tasks, as their polls would; the rest of the population would only hear "wait".
  coordinator_->Poll();
  *finished = coordinator_->GetStatus().finished;
  if (*finished) return Status::Ok();
  for (uint64_t id : coordinator_->SelectedClients()) {
    const size_t i = ClientIndex(id);
    InProcessLink link(coordinator_.get(), split_.get(), Session{id});
    Result<Task> task = link.PullTask(std::chrono::milliseconds(0));
    if (!task.ok()) return task.status().WithContext(ClientName(i) + " pull");
    if (task->kind == TaskKind::kTrain) work->emplace_back(i, std::move(*task));
  }
  return Status::Ok();
}

Status SimulationRun::WaitForDeadline(std::chrono::steady_clock::time_point idle_since) {
  // Nobody has work but the federation is not over: only a round deadline can move it
  // on, and one must have fired within twice its length (plus a margin).
  const double stall_limit_s =
      2.0 * std::chrono::duration<double>(options_.round_deadline).count() + 60.0;
  coordinator_->Poll();
  if (SecondsSince(idle_since) > stall_limit_s) {
    return Status::DeadlineExceeded(
        "simulation stalled: no client has work and the "
        "federation is not finished");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return Status::Ok();
}

Status SimulationRun::RunSyncRound(Work work, std::chrono::steady_clock::time_point round_start,
                                   std::chrono::steady_clock::time_point* idle_since) {
  // Largest clients first: client sizes differ by 10x under a Dirichlet split, and
  // starting the long jobs early keeps both workers busy until the round's end.
  std::stable_sort(work.begin(), work.end(), [&](const auto& a, const auto& b) {
    return workload_->ClientSize(a.first) > workload_->ClientSize(b.first);
  });
  const uint64_t round = work.front().second.round;
  uint64_t round_attackers = 0;
  for (const auto& item : work) round_attackers += byzantine_->attacks(item.first) ? 1 : 0;
  std::atomic<uint64_t> samples{0};
  // What each task moved, by its index in `work`, so the round's simulated time does
  // not depend on which worker ran it or when.
  std::vector<TaskWork> task_work(work.size());
  FL_RETURN_IF_ERROR(TrainSyncRound(work, &task_work, &samples));
  *idle_since = std::chrono::steady_clock::now();
  const double round_train_seconds = SecondsSince(round_start);
  train_seconds_total_ += round_train_seconds;
  result_.train_samples += samples.load();
  result_.byzantine_updates += round_attackers;
  if (clock_options_.enabled) sim_now_ = SyncRoundClose(*clock_, sim_now_, work, task_work);

  for (auto& [summary, snapshot] : TakeClosedRounds()) {
    const bool current = summary.round == round;
    FL_RETURN_IF_ERROR(RecordRound(summary, snapshot, current ? samples.load() : 0,
                                   current ? round_train_seconds : 0, current ? round_attackers : 0,
                                   work.size(), sim_now_));
  }
  return Status::Ok();
}

Status SimulationRun::TrainSyncRound(const Work& work, std::vector<TaskWork>* task_work,
                                     std::atomic<uint64_t>* samples) {
  const uint64_t round = work.front().second.round;
  std::atomic<uint64_t> finished{0};
  Status first_error;
  std::mutex error_mu;
  if (mpi_ != nullptr) {
    FL_RETURN_IF_ERROR(mpi_->StartRound(work, *workload_, coordinator_->CurrentModel()));
  }
  pool_->Run(work.size(), [&](int w, size_t k) {
    if (cancel_.cancelled() || (mpi_ != nullptr && !mpi_->Trains(k))) return;
    const auto& [client, task] = work[k];
    Status s = ExecuteSyncTask(w, client, task, &(*task_work)[k], samples);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (first_error.ok()) {
        first_error = s.WithContext(ClientName(client) + " round " + std::to_string(task.round));
      }
      cancel_.Cancel();
      return;
    }
    SimProgress p;
    p.round = round;
    p.clients_done = ++finished;
    p.clients_selected = work.size();
    Report(p);
  });
  if (first_error.ok() && mpi_ != nullptr) {
    first_error = mpi_->FinishRound(coordinator_.get(), task_work, samples);
  }
  return first_error;
}

Status SimulationRun::ExecuteSyncTask(int worker, size_t client, const Task& task,
                                      TaskWork* task_work, std::atomic<uint64_t>* samples) {
  FL_ASSIGN_OR_RETURN(Trainer * trainer, byzantine_->Bind(*trainers_[worker], worker, client));
  // The client materialises for this task only: its link, runtime and data binding.
  FL_ASSIGN_OR_RETURN(VirtualClient c, NewVirtualClient(client));
  trainers_[worker]->UseLink(c.link.get());
  Result<ExecuteReport> executed = c.runtime->Execute(task, *trainer, cancel_);
  trainers_[worker]->UseLink(nullptr);
  FL_ASSIGN_OR_RETURN(ExecuteReport r, std::move(executed));
  *samples += r.train.num_examples;
  *task_work = TaskWork{r.bytes_down, r.train.num_examples, r.bytes_up};
  AddClientMetrics(r);
  return Status::Ok();
}

// ---- every round ----

SimulationRun::ClosedRounds SimulationRun::TakeClosedRounds() {
  ClosedRounds closed;
  std::lock_guard<std::mutex> lock(summaries_mu_);
  closed.swap(summaries_);
  return closed;
}

void SimulationRun::AddClientMetrics(const ExecuteReport& report) {
  std::lock_guard<std::mutex> lock(client_metrics_mu_);
  for (const auto& [name, value] : report.train.metrics) client_metrics_[name] += value;
  result_.task_times += report.times;
}

std::map<std::string, double> SimulationRun::TakeClientMetrics() {
  std::map<std::string, double> sums;
  {
    std::lock_guard<std::mutex> lock(client_metrics_mu_);
    sums.swap(client_metrics_);
  }
  std::map<std::string, double> named;
  for (const auto& [name, value] : sums) named.emplace("client." + name, value);
  return named;
}

Status SimulationRun::RecordRound(const RoundSummary& summary, const ModelSnapshot& snapshot,
                                  uint64_t train_samples, double train_seconds, uint64_t attackers,
                                  size_t selected, double sim_time) {
  SimRoundRecord rec = NewRecord(summary, train_samples, train_seconds, attackers, sim_time);
  rec.strategy_stats.merge(TakeClientMetrics());
  if (rec.evaluated) {
    FL_ASSIGN_OR_RETURN(EvalStats pooled, Evaluate(*snapshot.params));
    rec.metrics.accuracy = pooled.accuracy;
    rec.metrics.test_loss = pooled.loss;
    rec.metric = workload_->MetricOf(pooled);
    last_metric_ = rec.metric;
    last_evaluated_ = snapshot.params;
    result_.final_metric = rec.metric;
    result_.final_accuracy = rec.metrics.accuracy;
    result_.final_test_loss = rec.metrics.test_loss;
  }
  rec.metrics.wall_seconds = SecondsSince(start_);
  rec.samples_per_sec = train_seconds_total_ > 0
                            ? static_cast<double>(result_.train_samples) / train_seconds_total_
                            : 0;
  FL_RETURN_IF_ERROR(record_->AppendRoundMetrics(rec.metrics));
  result_.rounds.push_back(rec);
  FL_RETURN_IF_ERROR(WriteRoundFiles(env_, out_dir_, result_.rounds, title_, result_.metric));
  rounds_done_ = summary.round;
  ReportRoundFinished(summary, selected);
  return Status::Ok();
}

// A round's record before evaluation and timing.
SimRoundRecord SimulationRun::NewRecord(const RoundSummary& summary, uint64_t train_samples,
                                        double train_seconds, uint64_t attackers,
                                        double sim_time) const {
  SimRoundRecord rec;
  rec.metrics.round = summary.round;
  rec.metrics.train_loss = summary.mean_train_loss;
  rec.metrics.bytes_up = summary.bytes_up;
  rec.metrics.bytes_down = summary.bytes_down;
  rec.metrics.clients = summary.num_updates;
  rec.bytes_up_total =
      summary.bytes_up + (result_.rounds.empty() ? 0 : result_.rounds.back().bytes_up_total);
  rec.strategy_stats = summary.strategy_stats;
  if (byzantine_->enabled()) {
    rec.strategy_stats["byzantine_updates"] = static_cast<double>(attackers);
  }
  rec.metrics.accuracy = -1;  // "not evaluated" in the run record
  rec.metrics.test_loss = -1;
  rec.train_samples = train_samples;
  rec.train_seconds = train_seconds;
  rec.evaluated = summary.round % eval_every_ == 0 || summary.round == total_rounds_;
  if (clock_options_.enabled) rec.sim_time_s = sim_time;
  return rec;
}

Result<EvalStats> SimulationRun::Evaluate(const ParamSet& params) {
  std::vector<Result<EvalStats>> parts(workers_, Status::Internal("not run"));
  pool_->Run(static_cast<size_t>(workers_), [&](int w, size_t k) {
    parts[k] = trainers_[w]->EvaluatePart(params, k, static_cast<size_t>(workers_));
  });
  double loss = 0, correct = 0;
  EvalStats pooled;
  for (const Result<EvalStats>& part : parts) {
    if (!part.ok()) return part.status().WithContext("evaluation");
    loss += part->loss * static_cast<double>(part->num_examples);
    correct += part->accuracy * static_cast<double>(part->num_examples);
    pooled.num_examples += part->num_examples;
  }
  const double n = static_cast<double>(std::max<uint64_t>(pooled.num_examples, 1));
  pooled.loss = loss / n;
  pooled.accuracy = correct / n;
  return pooled;
}

void SimulationRun::Report(SimProgress p) {
  if (!progress_) return;
  p.total_rounds = total_rounds_;
  p.elapsed_seconds = SecondsSince(start_);
  p.metric = &result_.metric;
  p.last_metric = last_metric_;
  if (rounds_done_ > 0) {
    p.eta_seconds = p.elapsed_seconds / static_cast<double>(rounds_done_) *
                    static_cast<double>(total_rounds_ - std::min(total_rounds_, rounds_done_));
  }
  std::lock_guard<std::mutex> lock(progress_mu_);
  progress_(p);
}

void SimulationRun::ReportRoundFinished(const RoundSummary& summary, size_t selected) {
  SimProgress p;
  p.round = summary.round;
  p.clients_done = summary.num_updates;
  p.clients_selected = selected;
  p.round_finished = true;
  p.record = &result_.rounds.back();
  Report(p);
}

// Completes the result and writes its totals to the run record.
Status SimulationRun::Finish() {
  if (last_evaluated_ != nullptr) {
    FL_RETURN_IF_ERROR(workload_->WriteFinalReport(*last_evaluated_, out_dir_, env_)
                           .WithContext("final report"));
  }
  result_.wall_seconds = SecondsSince(start_);
  result_.sim_time_s = sim_now_;
  result_.train_samples_per_sec =
      train_seconds_total_ > 0 ? static_cast<double>(result_.train_samples) / train_seconds_total_
                               : 0;
  FL_RETURN_IF_ERROR(record_->PutMeta("final_accuracy", FormatDouble(result_.final_accuracy)));
  FL_RETURN_IF_ERROR(record_->PutMeta("final_metric", FormatDouble(result_.final_metric)));
  FL_RETURN_IF_ERROR(record_->PutMeta("wall_seconds", FormatDouble(result_.wall_seconds)));
  if (clock_options_.enabled) {
    FL_RETURN_IF_ERROR(record_->PutMeta("sim_time_s", FormatDouble(result_.sim_time_s, 12)));
  }
  return record_->PutMeta("train_samples_per_sec", FormatDouble(result_.train_samples_per_sec));
}

}  // namespace fl::internal
