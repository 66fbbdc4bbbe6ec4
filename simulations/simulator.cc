#include "simulations/simulator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "algorithms/registry.h"
#include "client/client_runtime.h"
#include "core/logging.h"
#include "data/fortunes.h"
#include "server/coordinator.h"
#include "server/coordinator_config.h"
#include "simulations/byzantine.h"
#include "simulations/event_queue.h"
#include "simulations/in_process_link.h"
#include "simulations/virtual_clock.h"
#include "torch/torch_trainer.h"

// Set by the build (CMake cache variable FL_FASHION_MNIST_DIR).
#ifndef FL_FASHION_MNIST_DIR
#define FL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif

namespace fl::internal {
namespace {

constexpr char kDefaultPreset[] = "fmnist-cnn";
constexpr char kFortunesPreset[] = "fortunes-gpt";
constexpr char kMetricsCsv[] = "metrics.csv";
constexpr char kMetricsJsonl[] = "metrics.jsonl";
constexpr char kPlotSvg[] = "accuracy_bytes.svg";
constexpr char kConfigYaml[] = "config.yaml";
constexpr char kRunDb[] = "run.db";

// Recursively overlays `overlay` onto `base` (objects merge, everything else replaces).
void MergeJson(nlohmann::json& base, const nlohmann::json& overlay) {
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    if (it->is_object() && base.contains(it.key()) && base[it.key()].is_object()) {
      MergeJson(base[it.key()], *it);
    } else {
      base[it.key()] = *it;
    }
  }
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A fixed set of threads that run batches of items; each thread keeps its identity
// (worker index), so per-worker state such as a trainer needs no locking.
class WorkerPool {
 public:
  // `init` runs first on each worker thread (e.g. to set per-thread LibTorch options).
  WorkerPool(int workers, std::function<void(int)> init) {
    for (int w = 0; w < workers; ++w) {
      threads_.emplace_back([this, w, init] {
        if (init) init(w);
        Loop(w);
      });
    }
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs task(worker, item) for every item in [0, count); returns when all are done.
  void Run(size_t count, const std::function<void(int, size_t)>& task) {
    if (count == 0) return;
    std::unique_lock<std::mutex> lock(mu_);
    task_ = &task;
    count_ = count;
    next_ = 0;
    finished_ = 0;
    ++generation_;
    work_cv_.notify_all();
    done_cv_.wait(lock, [&] { return finished_ == count_; });
    task_ = nullptr;
  }

 private:
  void Loop(int worker) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      while (next_ < count_) {
        const size_t item = next_++;
        const auto* task = task_;
        lock.unlock();
        (*task)(worker, item);
        lock.lock();
        if (++finished_ == count_) done_cv_.notify_all();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int, size_t)>* task_ = nullptr;
  size_t count_ = 0;
  size_t next_ = 0;
  size_t finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// A client's link in asynchronous mode. The simulation hands the client each task's base
// model when the task is handed out, so training may run later on any worker whatever
// versions the coordinator has moved on to, and holds the client's update until the
// task's simulated completion, when Deliver() pushes it: updates reach the coordinator
// in simulated-time order, whatever order the workers finish in. A client holds at most
// two tasks (client overlap: one uploading while the next trains), each by its number.
class DeferredPushLink : public ServerLink {
 public:
  // `inner` is not owned and must outlive the link.
  explicit DeferredPushLink(ServerLink* inner) : inner_(inner) {}

  Result<JoinReply> Join(const std::string& enrollment_token,
                         const std::string& client_name) override {
    return inner_->Join(enrollment_token, client_name);
  }
  Result<Task> PullTask(std::chrono::milliseconds wait) override {
    return inner_->PullTask(wait);
  }
  Result<ModelSnapshot> FetchModel(uint64_t version) override {
    auto it = bases_.find(training_);
    if (it != bases_.end() && it->second.version == version) return it->second;
    return inner_->FetchModel(version);
  }
  Result<ModelSnapshot> FetchModelOrReplay(uint64_t version, uint64_t) override {
    return FetchModel(version);
  }
  // Keeps the update of the task being trained for Deliver(); the acknowledgement is the
  // simulation's promise that it will be pushed at the task's simulated completion.
  Result<PushAck> PushUpdate(const Payload& payload) override {
    held_[training_] = payload;
    PushAck ack;
    ack.round = payload.meta.round;
    return ack;
  }
  Status Heartbeat() override { return inner_->Heartbeat(); }
  Result<ServerStatusInfo> GetStatus() override { return inner_->GetStatus(); }

  // The base model of task `task`, just handed out.
  void Hold(uint64_t task, ModelSnapshot base) { bases_[task] = std::move(base); }
  // The task whose training runs next on this client (FetchModel and PushUpdate refer to
  // it). Training does not say which task an update belongs to, so the caller does.
  void BeginTraining(uint64_t task) { training_ = task; }
  // Pushes the update held for `task` to the coordinator and forgets the task; Internal
  // if there is none.
  Result<PushAck> Deliver(uint64_t task) {
    auto it = held_.find(task);
    if (it == held_.end()) return Status::Internal("no update held for delivery");
    Payload payload = std::move(it->second);
    held_.erase(it);
    bases_.erase(task);
    return inner_->PushUpdate(payload);
  }

 private:
  ServerLink* inner_;
  uint64_t training_ = 0;
  std::map<uint64_t, ModelSnapshot> bases_;  // by task number
  std::map<uint64_t, Payload> held_;         // by task number
};

struct VirtualClient {
  std::unique_ptr<InProcessLink> link;
  std::unique_ptr<DeferredPushLink> deferred;  // asynchronous mode only
  std::unique_ptr<ClientRuntime> runtime;
};

// What an asynchronous task will move, known when it is handed out (the clock must time
// it before it runs): the base model's download, the examples it trains (client size x
// epochs, or steps x batch) and an upload the size of the dense model in the task's
// encoding. Compressed payloads (Ferret, subsets) are charged at that dense size.
TaskWork EstimateTaskWork(const ModelSnapshot& base, const TrainConfig& config,
                          uint64_t client_examples) {
  TaskWork w;
  const uint64_t values = base.params != nullptr ? base.params->size() : 0;
  w.bytes_down = base.wire_bytes > 0 ? base.wire_bytes : values * 4;
  w.examples = config.local_steps > 0
                   ? static_cast<uint64_t>(config.local_steps) *
                         static_cast<uint64_t>(std::max(config.batch_size, 1))
                   : client_examples * static_cast<uint64_t>(std::max(config.local_epochs, 1));
  const bool half = config.upload_encoding == Encoding::kDenseF16 ||
                    config.upload_encoding == Encoding::kDenseBF16;
  w.bytes_up = values * (half ? 2 : 4);
  return w;
}

std::string FormatDouble(double v, int precision = 6) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
  return buf;
}

// Fixed columns, then one column per strategy statistic any round reported (sorted by
// name; empty in rounds without it).
std::string MetricsCsv(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric) {
  std::set<std::string> stat_names;
  for (const SimRoundRecord& r : rounds) {
    for (const auto& [name, value] : r.strategy_stats) stat_names.insert(name);
  }
  std::ostringstream out;
  out << "round," << metric.name
      << ",test_loss,train_loss,bytes_up,bytes_down,bytes_up_total,clients,wall_seconds,"
         "train_samples,samples_per_sec,sim_time_s";
  for (const std::string& name : stat_names) out << ',' << name;
  out << '\n';
  for (const SimRoundRecord& r : rounds) {
    const RoundMetrics& m = r.metrics;
    out << m.round << ',' << (r.evaluated ? FormatDouble(r.metric) : "") << ','
        << (r.evaluated ? FormatDouble(m.test_loss) : "") << ',' << FormatDouble(m.train_loss)
        << ',' << m.bytes_up << ',' << m.bytes_down << ',' << r.bytes_up_total << ','
        << m.clients << ',' << FormatDouble(m.wall_seconds) << ',' << r.train_samples << ','
        << FormatDouble(r.samples_per_sec) << ',' << FormatDouble(r.sim_time_s, 12);
    for (const std::string& name : stat_names) {
      auto it = r.strategy_stats.find(name);
      out << ',' << (it == r.strategy_stats.end() ? "" : FormatDouble(it->second, 12));
    }
    out << '\n';
  }
  return out.str();
}

std::string MetricsJsonl(const std::vector<SimRoundRecord>& rounds, const WorkloadMetric& metric) {
  std::string out;
  for (const SimRoundRecord& r : rounds) {
    const RoundMetrics& m = r.metrics;
    nlohmann::json j = {
        {"round", m.round},
        {metric.name, r.evaluated ? nlohmann::json(r.metric) : nlohmann::json(nullptr)},
        {"test_loss", r.evaluated ? nlohmann::json(m.test_loss) : nlohmann::json(nullptr)},
        {"train_loss", m.train_loss},
        {"bytes_up", m.bytes_up},
        {"bytes_down", m.bytes_down},
        {"bytes_up_total", r.bytes_up_total},
        {"clients", m.clients},
        {"wall_seconds", m.wall_seconds},
        {"train_samples", r.train_samples},
        {"samples_per_sec", r.samples_per_sec},
        {"sim_time_s",
         std::isfinite(r.sim_time_s) ? nlohmann::json(r.sim_time_s) : nlohmann::json(nullptr)},
    };
    for (const auto& [name, value] : r.strategy_stats) j[name] = value;
    out += j.dump() + "\n";
  }
  return out;
}

std::string EscapeXml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A two-axis line chart: the workload's metric (left axis: accuracy in %, or from 0 to
// above the largest value) and bytes moved per round (right axis, MB up + down) over
// rounds. Plain SVG, no dependency.
std::string PlotSvg(const std::vector<SimRoundRecord>& rounds, const std::string& title,
                    const WorkloadMetric& metric) {
  constexpr double kW = 800, kH = 420, kLeft = 70, kRight = 80, kTop = 50, kBottom = 60;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  uint64_t max_round = 1;
  double max_mb = 0;
  double max_metric = 1;  // a fraction's axis ends at 100%
  if (!metric.is_fraction) {
    max_metric = 0;
    for (const SimRoundRecord& r : rounds) {
      if (r.evaluated && std::isfinite(r.metric)) max_metric = std::max(max_metric, r.metric);
    }
    max_metric = max_metric > 0 ? max_metric * 1.1 : 1;
  }
  for (const SimRoundRecord& r : rounds) {
    max_round = std::max(max_round, r.metrics.round);
    max_mb = std::max(max_mb, static_cast<double>(r.metrics.bytes_up + r.metrics.bytes_down) / 1e6);
  }
  if (max_mb <= 0) max_mb = 1;
  max_mb *= 1.1;
  auto x = [&](double round) {
    return kLeft + (max_round <= 1 ? pw / 2 : (round - 1) / (max_round - 1) * pw);
  };
  auto y_metric = [&](double v) { return kTop + ph * (1.0 - v / max_metric); };
  auto y_mb = [&](double mb) { return kTop + ph * (1.0 - mb / max_mb); };
  char buf[256];
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kW << "\" height=\"" << kH
    << "\" viewBox=\"0 0 " << kW << ' ' << kH << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << kW / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
    << EscapeXml(title) << "</text>\n";
  // Grid and axes.
  for (int i = 0; i <= 5; ++i) {
    const double frac = i / 5.0;
    const double yy = kTop + ph * (1.0 - frac);
    std::snprintf(buf, sizeof(buf),
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", kLeft,
                  yy, kLeft + pw, yy);
    s << buf;
    if (metric.is_fraction) {
      std::snprintf(buf, sizeof(buf),
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%d%%</text>\n",
                    kLeft - 6, yy + 4, i * 20);
    } else {
      std::snprintf(buf, sizeof(buf),
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%.3g</text>\n",
                    kLeft - 6, yy + 4, frac * max_metric);
    }
    s << buf;
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"start\" fill=\"#ff7f0e\">%.3g</text>\n",
                  kLeft + pw + 6, yy + 4, frac * max_mb);
    s << buf;
  }
  const uint64_t step = std::max<uint64_t>(1, (max_round + 9) / 10);
  for (uint64_t r = 1; r <= max_round; r += step) {
    std::snprintf(buf, sizeof(buf),
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%llu</text>\n", x(r),
                  kTop + ph + 18, static_cast<unsigned long long>(r));
    s << buf;
  }
  std::snprintf(buf, sizeof(buf),
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                "stroke=\"#333\"/>\n",
                kLeft, kTop, pw, ph);
  s << buf;
  s << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kH - 18 << "\" text-anchor=\"middle\">round</text>\n";
  std::snprintf(buf, sizeof(buf),
                "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                "fill=\"#1f77b4\">%s</text>\n",
                kTop + ph / 2, EscapeXml(metric.label).c_str());
  s << buf;
  std::snprintf(buf, sizeof(buf),
                "<text transform=\"translate(%.1f %.1f) rotate(90)\" text-anchor=\"middle\" "
                "fill=\"#ff7f0e\">MB per round (up + down)</text>\n",
                kW - 16, kTop + ph / 2);
  s << buf;
  // Series.
  std::ostringstream acc_points, mb_points;
  for (const SimRoundRecord& r : rounds) {
    const double round = static_cast<double>(r.metrics.round);
    if (r.evaluated) {
      std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x(round), y_metric(r.metric));
      acc_points << buf;
    }
    const double mb = static_cast<double>(r.metrics.bytes_up + r.metrics.bytes_down) / 1e6;
    std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x(round), y_mb(mb));
    mb_points << buf;
  }
  s << "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" stroke-dasharray=\"5,3\" "
       "points=\""
    << mb_points.str() << "\"/>\n";
  s << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"" << acc_points.str()
    << "\"/>\n";
  // Legend.
  s << "<line x1=\"" << kLeft + 10 << "\" y1=\"" << kTop + 14 << "\" x2=\"" << kLeft + 34
    << "\" y2=\"" << kTop + 14 << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
    << "<text x=\"" << kLeft + 40 << "\" y=\"" << kTop + 18 << "\">" << EscapeXml(metric.label)
    << "</text>\n";
  s << "<line x1=\"" << kLeft + 10 << "\" y1=\"" << kTop + 32 << "\" x2=\"" << kLeft + 34
    << "\" y2=\"" << kTop + 32 << "\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" "
    << "stroke-dasharray=\"5,3\"/>"
    << "<text x=\"" << kLeft + 40 << "\" y=\"" << kTop + 36 << "\">MB per round</text>\n";
  s << "</svg>\n";
  return s.str();
}

// Files of an earlier run in `dir` that this run replaces. Nothing else is touched.
void RemovePreviousRun(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* name : {kRunDb, "run.db-wal", "run.db-shm", kMetricsCsv, kMetricsJsonl, kPlotSvg,
                           kConfigYaml}) {
    fs::remove(fs::path(dir) / name, ec);
  }
  fs::remove_all(fs::path(dir) / "models", ec);
  fs::remove_all(fs::path(dir) / "spool", ec);
}

Status CheckRange(const Config& config, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = config.GetInt(key);
  if (v < lo || v > hi) {
    return Status::InvalidArgument("config key " + std::string(key) + " must be in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                                   std::to_string(v) + ")");
  }
  return Status::Ok();
}

// Writes the per-round outputs; called after every round so a long run can be
// inspected (or plotted) while it is still going.
Status WriteRoundFiles(Env* env, const std::string& dir, const std::vector<SimRoundRecord>& rounds,
                       const std::string& title, const WorkloadMetric& metric) {
  FL_RETURN_IF_ERROR(
      env->WriteFileAtomic(dir + "/" + kMetricsCsv, MetricsCsv(rounds, metric), false));
  FL_RETURN_IF_ERROR(
      env->WriteFileAtomic(dir + "/" + kMetricsJsonl, MetricsJsonl(rounds, metric), false));
  return env->WriteFileAtomic(dir + "/" + kPlotSvg, PlotSvg(rounds, title, metric), false);
}

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

nlohmann::json SimulatorConfigDefaults() {
  nlohmann::json d = AlgorithmConfigDefaults();
  MergeJson(d, CoordinatorConfigDefaults());
  MergeJson(d, ModelConfigDefaults("cnn"));
  d["data"] = {
      {"dir", FL_FASHION_MNIST_DIR},
      {"partition", "dirichlet:0.5"},
      {"num_clients", 100},
      {"train_examples", 0},
      {"test_examples", 0},
  };
  MergeJson(d, WorkloadConfigDefaults());
  MergeJson(d, ByzantineConfigDefaults());
  MergeJson(d, VirtualClockConfigDefaults());
  d["client"] = {{"overlap", false}};
  d["sim"] = {
      {"preset", kDefaultPreset},
      {"workers", 2},
      {"threads_per_worker", 1},
      {"eval_every", 1},
      {"out_dir", ""},
      {"device", "auto"},
      {"progress", "auto"},
  };
  return d;
}

std::vector<std::string> PresetNames() { return {kDefaultPreset, kFortunesPreset}; }

Result<nlohmann::json> PresetValues(const std::string& preset) {
  if (preset == kDefaultPreset) {
    // W1 (WORKLOADS.md). Client SGD tuned once for FedAvg on this workload, 50 rounds,
    // final test accuracy (seed 1): lr 0.05 / momentum 0: 84.2%; lr 0.1 / 0: 85.9%;
    // lr 0.05 / 0.5: 85.8%; lr 0.05 / 0.9: 86.6%; lr 0.1 / 0.5: 87.1% (seeds 2, 3: 88.2%,
    // 87.2%). The preset uses lr 0.1, momentum 0.5; every W1 baseline uses the same.
    return nlohmann::json{
        {"algorithm", {{"name", "fedavg"}}},
        {"train",
         {{"local_epochs", 1},
          {"local_steps", 0},
          {"batch_size", 32},
          {"lr", 0.1},
          {"momentum", 0.5},
          {"weight_decay", 0.0}}},
        {"run", {{"rounds", 50}, {"seed", 1}}},
        {"coordinator", {{"clients_per_round", 10}}},
        {"model", {{"name", "cnn"}}},
        {"data",
         {{"dataset", "fashion-mnist"}, {"partition", "dirichlet:0.5"}, {"num_clients", 100}}},
        {"sim", {{"preset", kDefaultPreset}}},
    };
  }
  if (preset == kFortunesPreset) {
    // W2 (WORKLOADS.md): gpt-tiny pretrained on the English fortunes (`fl-sim pretrain
    // --preset fortunes-gpt` writes model.init_file), then every German, Spanish and
    // Italian fortune file is one client (84 of them; 4 single-entry files cannot hold
    // one out). Held-out bits per byte are evaluated on the first 2 KB of every file's
    // held-out slice (122 KB in all); the pretrained model starts at 4.72 there.
    // Local training tuned once for FedAvg (10 rounds of 10 clients, seed 1, 10 steps of
    // 8 windows, gradients clipped to norm 1; bits per byte after round 10): SGD lr 0.1:
    // 3.75, 0.3: 3.63, 1.0: 3.67; SGD lr 0.1 momentum 0.9: 3.57; Adam lr 3e-4: 3.68,
    // 1e-3: 3.49, 3e-3: 3.50. Adam 1e-3 with 20 local steps: 3.43 after 10 rounds, against
    // 3.37 for 10 steps over 20 rounds (the same compute). The preset uses Adam, lr 1e-3,
    // 10 steps; every W2 comparison uses the same local training.
    return nlohmann::json{
        {"algorithm", {{"name", "fedavg"}}},
        {"train",
         {{"local_epochs", 1},
          {"local_steps", 10},
          {"batch_size", 8},
          {"lr", 1e-3},
          {"momentum", 0.0},
          {"weight_decay", 0.0}}},
        {"lm", {{"optimizer", "adam"}, {"clip_norm", 1.0}}},
        {"run", {{"rounds", 40}, {"seed", 1}}},
        {"coordinator", {{"clients_per_round", 10}}},
        {"model", {{"name", "gpt-tiny"}, {"init_file", "runs/fortunes-gpt-pretrained.flps"}}},
        {"data",
         {{"dataset", "fortunes"},
          {"dir", std::string(kFortunesDefaultDir)},
          {"languages", "de,es,it"},
          {"num_clients", 0},
          {"heldout_fraction", 0.1},
          {"eval_bytes_per_client", 2048}}},
        // 2000 Adam steps of 8 windows (2 MB, ~0.9 epoch of the English training text):
        // 3 min 18 s here on one thread at ~11 kB/s. Two intra-op threads ran 5.6x slower
        // (1.8 against 10.3 kB/s) while other processes shared the two cores.
        {"pretrain",
         {{"languages", "en"},
          {"steps", 2000},
          {"batch_size", 8},
          {"lr", 3e-3},
          {"threads", 1}}},
        {"sim", {{"preset", kFortunesPreset}, {"workers", 2}, {"threads_per_worker", 1}}},
    };
  }
  std::string known;
  for (const std::string& n : PresetNames()) known += (known.empty() ? "" : ", ") + n;
  return Status::InvalidArgument("unknown preset \"" + preset + "\" (known: " + known + ")");
}

Result<Partition> PartitionFromConfig(const Config& config, std::span<const uint8_t> labels) {
  Result<PartitionSpec> spec = ParsePartitionSpec(config.GetString("data.partition"));
  if (!spec.ok()) return spec.status().WithContext("data.partition");
  FL_RETURN_IF_ERROR(CheckRange(config, "data.num_clients", 1, 10000000));
  Result<Partition> p =
      PartitionExamples(*spec, labels, static_cast<int>(config.GetInt("data.num_clients")),
                        static_cast<uint64_t>(config.GetInt("run.seed")));
  if (!p.ok()) return p.status().WithContext("data.partition");
  return p;
}

std::string OutputDirectory(const Config& config) {
  std::string dir = config.GetString("sim.out_dir");
  if (!dir.empty()) return dir;
  return "runs/" + config.GetString("sim.preset") + "-" + std::to_string(config.GetInt("run.seed"));
}

Result<SimulationResult> RunSimulation(const Config& config,
                                       const std::function<void(const SimProgress&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  Env* env = Env::Default();

  // ---- configuration ----
  FL_RETURN_IF_ERROR(CheckRange(config, "sim.workers", 1, 1024));
  FL_RETURN_IF_ERROR(CheckRange(config, "sim.threads_per_worker", 1, 1024));
  FL_RETURN_IF_ERROR(CheckRange(config, "sim.eval_every", 1, 1000000));
  const int workers = static_cast<int>(config.GetInt("sim.workers"));
  const int threads_per_worker = static_cast<int>(config.GetInt("sim.threads_per_worker"));
  const uint64_t eval_every = static_cast<uint64_t>(config.GetInt("sim.eval_every"));
  const uint64_t seed = static_cast<uint64_t>(config.GetInt("run.seed"));
  FL_ASSIGN_OR_RETURN(std::string device, ResolveTorchDevice(config.GetString("sim.device")));
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, CreateStrategy(config));
  FL_ASSIGN_OR_RETURN(CoordinatorOptions options, CoordinatorOptionsFromConfig(config));
  FL_ASSIGN_OR_RETURN(ByzantineOptions byzantine_options, ByzantineOptionsFromConfig(config));
  FL_ASSIGN_OR_RETURN(VirtualClockOptions clock_options, VirtualClockOptionsFromConfig(config));
  const bool async = options.mode == CoordinatorMode::kAsync;
  // Sync rounds wait for every upload before the next task exists, so there is nothing
  // to overlap: a no-op there, as in fl-client.
  const bool overlap = async && config.GetBool("client.overlap");
  if (async && !clock_options.enabled) {
    return Status::InvalidArgument(
        "coordinator.mode=async needs clock.enabled=true in fl-sim (updates reach the "
        "coordinator in simulated-time order)");
  }

  // ---- data and initial model ----
  // Tensors are built on this thread; the workers set their own count below.
  SetTorchThreads(threads_per_worker);
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Workload> workload, LoadWorkload(config, device, env));
  const size_t num_clients = workload->num_clients();
  FL_ASSIGN_OR_RETURN(ParamSet initial, workload->InitialModel(config));

  // ---- output directory and coordinator ----
  const std::string out_dir = OutputDirectory(config);
  FL_RETURN_IF_ERROR(env->CreateDirs(out_dir));
  RemovePreviousRun(out_dir);
  // A simulation needs no crash recovery, and every virtual client is always online:
  // the round starts once the whole population has joined and nobody times out.
  options.state_dir = out_dir;
  options.store_path = out_dir + "/" + kRunDb;
  options.durable = false;
  options.min_clients = static_cast<uint32_t>(num_clients);
  options.client_timeout = std::chrono::hours(24 * 365);
  // Virtual clients never vanish, and slots that expire on the host's clock would make
  // the hand-out depend on how fast the host trains.
  options.async.task_timeout = std::chrono::milliseconds(0);
  options.env = env;
  const uint64_t total_rounds = options.num_rounds;

  std::mutex summaries_mu;
  std::vector<std::pair<RoundSummary, ModelSnapshot>> summaries;
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator,
                      Coordinator::Create(options, std::move(strategy), initial));
  coordinator->SetRoundCallback([&](const RoundSummary& s, const ModelSnapshot& m) {
    std::lock_guard<std::mutex> lock(summaries_mu);
    summaries.emplace_back(s, m);
  });
  // The run record shares the coordinator's SQLite file (WAL lets two connections in).
  StoreOptions store_options;
  store_options.path = options.store_path;
  store_options.durable = false;
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Store> record, Store::Open(store_options));
  const std::string yaml = config.ToYaml();
  FL_RETURN_IF_ERROR(env->WriteFileAtomic(out_dir + "/" + kConfigYaml, yaml, false));
  FL_RETURN_IF_ERROR(record->PutMeta("tool", "fl-sim"));
  FL_RETURN_IF_ERROR(record->PutMeta("config", yaml));
  FL_RETURN_IF_ERROR(record->PutMeta("preset", config.GetString("sim.preset")));
  FL_RETURN_IF_ERROR(record->PutMeta("seed", std::to_string(seed)));
  FL_RETURN_IF_ERROR(record->PutMeta("device", device));
  FL_RETURN_IF_ERROR(record->PutMeta("started_at", std::to_string(env->NowUnixSeconds())));

  FL_RETURN_IF_ERROR(record->PutMeta("workload", workload->Describe()));
  FL_RETURN_IF_ERROR(record->PutMeta("metric", workload->metric().name));

  // ---- trainers: one per worker over the workload's shared data ----
  std::vector<std::unique_ptr<WorkloadWorker>> trainers;
  for (int w = 0; w < workers; ++w) {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<WorkloadWorker> t, workload->NewWorker());
    trainers.push_back(std::move(t));
  }
  WorkerPool pool(workers, [threads_per_worker](int) { SetTorchThreads(threads_per_worker); });
  // Attacking clients (none unless byzantine.fraction > 0): the same ones every round.
  ByzantineClients byzantine(byzantine_options, num_clients, seed, workers);
  if (byzantine.enabled()) FL_RETURN_IF_ERROR(record->PutMeta("byzantine", byzantine.Describe()));

  // Device profiles of the whole population, drawn from the seed.
  const VirtualClock clock(clock_options, num_clients);
  double sim_now = 0;  // simulated seconds at the close of the last round

  // ---- virtual clients ----
  std::vector<VirtualClient> clients(num_clients);
  for (size_t i = 0; i < num_clients; ++i) {
    VirtualClient& c = clients[i];
    c.link = std::make_unique<InProcessLink>(coordinator.get());
    ClientRuntimeOptions ro;
    ro.client_name = "client-" + std::to_string(i);
    ro.enrollment_token = options.enrollment_token;
    ro.poll_wait = std::chrono::milliseconds(0);
    ServerLink* link = c.link.get();
    if (async) {
      c.deferred = std::make_unique<DeferredPushLink>(c.link.get());
      link = c.deferred.get();
    }
    c.runtime = std::make_unique<ClientRuntime>(link, std::move(ro));
    c.runtime->set_keep_model_cache(false);
    FL_RETURN_IF_ERROR(c.runtime->Join().WithContext("client-" + std::to_string(i)));
  }

  // ---- rounds ----
  SimulationResult result;
  result.out_dir = out_dir;
  result.metric = workload->metric();
  const std::string title = "fl-sim " + config.GetString("sim.preset") + " (" +
                            config.GetString("algorithm.name") + ", " + DescribeClients(config) +
                            ", seed " + std::to_string(seed) + ")";
  std::mutex progress_mu;
  double train_seconds_total = 0;
  double last_metric = -1;
  uint64_t rounds_done = 0;
  CancelToken cancel;
  // How long the federation may sit without any client having work before the run is
  // declared stuck: a round deadline must have fired by then.
  const double stall_limit_s =
      2.0 * std::chrono::duration<double>(options.round_deadline).count() + 60.0;
  auto idle_since = std::chrono::steady_clock::now();

  auto report = [&](SimProgress p) {
    if (!progress) return;
    p.total_rounds = total_rounds;
    p.elapsed_seconds = SecondsSince(start);
    p.metric = &result.metric;
    p.last_metric = last_metric;
    if (rounds_done > 0) {
      p.eta_seconds = p.elapsed_seconds / static_cast<double>(rounds_done) *
                      static_cast<double>(total_rounds - std::min(total_rounds, rounds_done));
    }
    std::lock_guard<std::mutex> lock(progress_mu);
    progress(p);
  };

  // Records a closed round (asynchronous mode: a flush): evaluates its model when due,
  // appends it to the run record and the metrics files, and reports progress.
  auto record_round = [&](const RoundSummary& summary, const ModelSnapshot& snapshot,
                          uint64_t train_samples, double train_seconds, uint64_t attackers,
                          size_t selected, double sim_time) -> Status {
    SimRoundRecord rec;
    rec.metrics.round = summary.round;
    rec.metrics.train_loss = summary.mean_train_loss;
    rec.metrics.bytes_up = summary.bytes_up;
    rec.metrics.bytes_down = summary.bytes_down;
    rec.metrics.clients = summary.num_updates;
    rec.bytes_up_total =
        summary.bytes_up + (result.rounds.empty() ? 0 : result.rounds.back().bytes_up_total);
    rec.strategy_stats = summary.strategy_stats;
    if (byzantine.enabled()) {
      rec.strategy_stats["byzantine_updates"] = static_cast<double>(attackers);
    }
    rec.metrics.accuracy = -1;  // "not evaluated" in the run record
    rec.metrics.test_loss = -1;
    rec.train_samples = train_samples;
    rec.train_seconds = train_seconds;
    rec.evaluated = summary.round % eval_every == 0 || summary.round == total_rounds;
    if (clock_options.enabled) rec.sim_time_s = sim_time;
    if (rec.evaluated) {
      // Each worker scores a part of the evaluation set with its own replica.
      std::vector<Result<EvalStats>> parts(workers, Status::Internal("not run"));
      pool.Run(static_cast<size_t>(workers), [&](int w, size_t k) {
        parts[k] = trainers[w]->EvaluatePart(*snapshot.params, k, static_cast<size_t>(workers));
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
      rec.metrics.accuracy = pooled.accuracy;
      rec.metrics.test_loss = pooled.loss;
      rec.metric = workload->MetricOf(pooled);
      last_metric = rec.metric;
      result.final_metric = rec.metric;
      result.final_accuracy = rec.metrics.accuracy;
      result.final_test_loss = rec.metrics.test_loss;
    }
    rec.metrics.wall_seconds = SecondsSince(start);
    rec.samples_per_sec = train_seconds_total > 0
                              ? static_cast<double>(result.train_samples) / train_seconds_total
                              : 0;
    FL_RETURN_IF_ERROR(record->AppendRoundMetrics(rec.metrics));
    result.rounds.push_back(rec);
    FL_RETURN_IF_ERROR(WriteRoundFiles(env, out_dir, result.rounds, title, result.metric));
    rounds_done = summary.round;
    SimProgress p;
    p.round = summary.round;
    p.clients_done = summary.num_updates;
    p.clients_selected = selected;
    p.round_finished = true;
    p.record = &result.rounds.back();
    report(p);
    return Status::Ok();
  };

  // Asynchronous mode: tasks on the event queue (event_queue.h describes the loop).
  // Without client.overlap a client is busy from hand-out until its upload finishes;
  // with it, only until its upload begins (an event of its own), so its next task
  // downloads and trains while the update is still uploading.
  auto run_async = [&]() -> Status {
    struct Held {
      size_t client = 0;
      Task task;
      bool trained = false;
      uint64_t examples = 0;
    };
    struct AsyncEvent {
      uint64_t task = 0;
      bool delivery = true;  // false: the client's upload begins (overlap only)
    };
    EventQueue<AsyncEvent> events;
    std::map<uint64_t, Held> held;     // tasks handed out and not yet delivered
    std::vector<uint64_t> untrained;   // task numbers whose training has not run, in order
    std::vector<bool> busy(num_clients, false);  // not eligible for a new task
    // When each client's last upload ends: the next one starts no earlier.
    std::vector<double> uplink_free(num_clients, 0.0);
    size_t cursor = 0;  // hand-out order rotates so no client index is favoured
    uint64_t since_samples = 0, since_attackers = 0;
    double since_train_seconds = 0;
    int stalls = 0;

    // Trains `batch` (at most one task per client) in parallel; each trains against the
    // base model held for it, so it does not matter when it runs.
    auto train_batch = [&](const std::vector<uint64_t>& batch) -> Status {
      std::vector<Status> errors(batch.size());
      pool.Run(batch.size(), [&](int w, size_t k) {
        Held& h = held.at(batch[k]);
        Result<Trainer*> trainer = byzantine.Bind(*trainers[w], w, h.client);
        if (!trainer.ok()) {
          errors[k] = trainer.status();
          return;
        }
        clients[h.client].deferred->BeginTraining(batch[k]);
        Result<ExecuteReport> r = clients[h.client].runtime->Execute(h.task, **trainer, cancel);
        if (!r.ok()) {
          errors[k] = r.status();
          return;
        }
        h.examples = r->train.num_examples;
      });
      for (size_t k = 0; k < batch.size(); ++k) {
        Held& h = held.at(batch[k]);
        if (!errors[k].ok()) {
          return errors[k].WithContext("client-" + std::to_string(h.client) + " task " +
                                       std::to_string(h.task.round));
        }
        h.trained = true;
        result.train_samples += h.examples;
      }
      return Status::Ok();
    };

    // Trains every task handed out so far. A client's runtime is not thread-safe and its
    // learner may carry state from task to task, so an overlapping client's two tasks
    // train one after the other, oldest first, as on a real device.
    auto train_untrained = [&]() -> Status {
      const auto t0 = std::chrono::steady_clock::now();
      while (!untrained.empty()) {
        std::vector<uint64_t> batch, later;
        std::set<size_t> in_batch;
        for (uint64_t t : untrained) {
          (in_batch.insert(held.at(t).client).second ? batch : later).push_back(t);
        }
        FL_RETURN_IF_ERROR(train_batch(batch));
        untrained.swap(later);
      }
      const double seconds = SecondsSince(t0);
      train_seconds_total += seconds;
      since_train_seconds += seconds;
      return Status::Ok();
    };

    // Hands tasks to idle online clients while the coordinator grants them; false if it
    // refused one (every slot is held).
    auto hand_out = [&](bool* done) -> Result<bool> {
      size_t next_cursor = cursor;
      for (size_t n = 0; n < num_clients; ++n) {
        const size_t i = (cursor + n) % num_clients;
        if (busy[i] || !clock.IsOnline(i, sim_now)) continue;
        const std::string name = "client-" + std::to_string(i);
        Result<Task> task = clients[i].runtime->Pull(std::chrono::milliseconds(0));
        if (!task.ok()) return task.status().WithContext(name + " pull");
        if (task->kind == TaskKind::kDone) {
          *done = true;
          return true;
        }
        if (task->kind != TaskKind::kTrain) {
          cursor = next_cursor;
          return false;
        }
        Result<ModelSnapshot> base = clients[i].link->FetchModel(task->model_version);
        if (!base.ok()) return base.status().WithContext(name + " fetch");
        const TaskWork work = EstimateTaskWork(*base, task->config, workload->ClientSize(i));
        clients[i].deferred->Hold(task->round, std::move(*base));
        // Without overlap the uplink is free by now (the client was busy until then).
        const TaskTimeline timeline = clock.RunTask(i, sim_now, work, uplink_free[i]);
        uplink_free[i] = timeline.finish;
        if (overlap) events.Push(timeline.uploading, i, AsyncEvent{task->round, false});
        events.Push(timeline.finish, i, AsyncEvent{task->round, true});
        busy[i] = true;
        untrained.push_back(task->round);
        held[task->round] = Held{i, std::move(*task)};
        next_cursor = (i + 1) % num_clients;
      }
      cursor = next_cursor;
      return true;
    };

    // The first instant after now at which an idle client comes online (inf if none).
    auto next_idle_online = [&]() {
      double next = std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < num_clients; ++i) {
        if (!busy[i] && !clock.IsOnline(i, sim_now)) {
          next = std::min(next, clock.NextOnline(i, sim_now));
        }
      }
      return next;
    };

    // Pushes a task's update at its simulated completion and records any flush it caused.
    auto deliver = [&](uint64_t task) -> Status {
      if (!held.at(task).trained) FL_RETURN_IF_ERROR(train_untrained());
      const Held h = std::move(held.at(task));
      held.erase(task);
      if (!overlap) busy[h.client] = false;
      Result<PushAck> ack = clients[h.client].deferred->Deliver(task);
      if (ack.ok()) {
        since_samples += h.examples;
        const uint64_t attacker = byzantine.attacks(h.client) ? 1 : 0;
        since_attackers += attacker;
        result.byzantine_updates += attacker;
      } else if (ack.status().code() != StatusCode::kFailedPrecondition) {
        return ack.status().WithContext("client-" + std::to_string(h.client) + " push");
      }
      // FailedPrecondition: too stale. The coordinator refused it with a ledger row, as
      // it would a real client's; the client simply takes a new task.
      std::vector<std::pair<RoundSummary, ModelSnapshot>> flushed;
      {
        std::lock_guard<std::mutex> lock(summaries_mu);
        flushed.swap(summaries);
      }
      for (auto& [summary, snapshot] : flushed) {
        sim_now += clock_options.server_seconds;
        FL_RETURN_IF_ERROR(record_round(summary, snapshot, since_samples, since_train_seconds,
                                        since_attackers, held.size() + 1, sim_now));
        since_samples = since_attackers = 0;
        since_train_seconds = 0;
      }
      return Status::Ok();
    };

    while (rounds_done < total_rounds) {
      bool done = false;
      FL_ASSIGN_OR_RETURN(bool slots_free, hand_out(&done));
      if (done) return Status::Ok();
      const double next_online = slots_free ? next_idle_online() : sim_now;
      if (events.empty()) {
        if (std::isfinite(next_online) && next_online > sim_now) {
          sim_now = next_online;  // everyone idle is offline: wait for the first back
          continue;
        }
        // Nothing runs and an online client got no task: only the coordinator's tick
        // (e.g. opening the next buffer) can move it on.
        coordinator->Poll();
        if (++stalls > 100) {
          return Status::DeadlineExceeded(
              "asynchronous simulation stalled: no task is running and the coordinator "
              "hands out none");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      stalls = 0;
      // A client coming online before the next event is handed a task first.
      if (slots_free && next_online < events.Top().time) {
        sim_now = next_online;
        continue;
      }
      const SimEvent<AsyncEvent> event = events.Pop();
      sim_now = event.time;
      if (event.payload.delivery) {
        FL_RETURN_IF_ERROR(deliver(event.payload.task));
      } else {
        busy[event.client] = false;  // its upload begins: it may take the next task
      }
    }
    return Status::Ok();
  };
  if (async) FL_RETURN_IF_ERROR(run_async());

  // Synchronous rounds (the loop does not run in asynchronous mode).
  while (!async) {
    // Every client asks for work, as a real client's poll would.
    const auto round_start = std::chrono::steady_clock::now();
    std::vector<std::pair<size_t, Task>> work;
    size_t done = 0;
    for (size_t i = 0; i < num_clients; ++i) {
      Result<Task> task = clients[i].runtime->Pull(std::chrono::milliseconds(0));
      if (!task.ok()) return task.status().WithContext("client-" + std::to_string(i) + " pull");
      if (task->kind == TaskKind::kTrain) work.emplace_back(i, std::move(*task));
      if (task->kind == TaskKind::kDone) ++done;
    }
    if (done == num_clients) break;
    if (work.empty()) {
      // Nobody has work but the federation is not over: only a round deadline can move
      // it on. Give the coordinator its tick.
      coordinator->Poll();
      if (SecondsSince(idle_since) > stall_limit_s) {
        return Status::DeadlineExceeded(
            "simulation stalled: no client has work and the "
            "federation is not finished");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }

    // Largest clients first: client sizes differ by 10x under a Dirichlet split, and
    // starting the long jobs early keeps both workers busy until the round's end.
    std::stable_sort(work.begin(), work.end(), [&](const auto& a, const auto& b) {
      return workload->ClientSize(a.first) > workload->ClientSize(b.first);
    });
    const uint64_t round = work.front().second.round;
    uint64_t round_attackers = 0;
    for (const auto& item : work) round_attackers += byzantine.attacks(item.first) ? 1 : 0;
    std::atomic<uint64_t> samples{0};
    std::atomic<uint64_t> finished{0};
    // What each task moved, by its index in `work`, so the round's simulated time does
    // not depend on which worker ran it or when.
    std::vector<TaskWork> task_work(work.size());
    Status first_error;
    std::mutex error_mu;
    pool.Run(work.size(), [&](int w, size_t k) {
      if (cancel.cancelled()) return;
      auto& [client_index, task] = work[k];
      VirtualClient& c = clients[client_index];
      Result<Trainer*> trainer = byzantine.Bind(*trainers[w], w, client_index);
      Status s = trainer.status();
      if (s.ok()) {
        Result<ExecuteReport> r = c.runtime->Execute(task, **trainer, cancel);
        if (r.ok()) {
          samples += r->train.num_examples;
          task_work[k] = TaskWork{r->bytes_down, r->train.num_examples, r->bytes_up};
        } else {
          s = r.status();
        }
      }
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (first_error.ok()) {
          first_error = s.WithContext("client-" + std::to_string(client_index) + " round " +
                                      std::to_string(task.round));
        }
        cancel.Cancel();
        return;
      }
      SimProgress p;
      p.round = round;
      p.clients_done = ++finished;
      p.clients_selected = work.size();
      report(p);
    });
    if (!first_error.ok()) return first_error;
    idle_since = std::chrono::steady_clock::now();
    const double round_train_seconds = SecondsSince(round_start);
    train_seconds_total += round_train_seconds;
    result.train_samples += samples.load();
    result.byzantine_updates += round_attackers;
    if (clock_options.enabled) sim_now = SyncRoundClose(clock, sim_now, work, task_work);

    std::vector<std::pair<RoundSummary, ModelSnapshot>> closed;
    {
      std::lock_guard<std::mutex> lock(summaries_mu);
      closed.swap(summaries);
    }
    for (auto& [summary, snapshot] : closed) {
      const bool current = summary.round == round;
      FL_RETURN_IF_ERROR(record_round(summary, snapshot, current ? samples.load() : 0,
                                      current ? round_train_seconds : 0,
                                      current ? round_attackers : 0, work.size(), sim_now));
    }
  }

  result.wall_seconds = SecondsSince(start);
  result.sim_time_s = sim_now;
  result.train_samples_per_sec =
      train_seconds_total > 0 ? static_cast<double>(result.train_samples) / train_seconds_total : 0;
  FL_RETURN_IF_ERROR(record->PutMeta("final_accuracy", FormatDouble(result.final_accuracy)));
  FL_RETURN_IF_ERROR(record->PutMeta("final_metric", FormatDouble(result.final_metric)));
  FL_RETURN_IF_ERROR(record->PutMeta("wall_seconds", FormatDouble(result.wall_seconds)));
  if (clock_options.enabled) {
    FL_RETURN_IF_ERROR(record->PutMeta("sim_time_s", FormatDouble(result.sim_time_s, 12)));
  }
  FL_RETURN_IF_ERROR(
      record->PutMeta("train_samples_per_sec", FormatDouble(result.train_samples_per_sec)));
  return result;
}

}  // namespace fl::internal
