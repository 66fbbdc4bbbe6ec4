// Simulator efficiency: fl-sim's training samples per second on the fmnist-cnn preset
// against centralised LibTorch training of the same model (the limit a simulator can
// approach), in one binary and one run, and where fl-sim's remaining time goes.
//
//   sim_efficiency_bench [--rounds=5] [--workers=2] [--repeats=1] [--data_dir=DIR]
//                        [--out=DIR] [--intra_cap=1] [--train_examples=0]
//                        [--clients=100] [--clients_per_round=10]
//
// fl-sim side: RunSimulation with fmnist-cnn's preset (100 clients, Dirichlet 0.5, 10 per
// round, one local epoch of SGD, batch 32, lr 0.1, momentum 0.5), --workers workers x 1
// LibTorch thread, evaluation only after the last round (it is outside train_seconds
// anyway; the test set is cut to 200 images so the run's time is training).
// Its rate is fl-sim's own: train_samples / sum of train_seconds, where a round's
// train_seconds runs from the clients' polls to the round's close (pull, train, push,
// aggregation, server step).
//
// Centralised side, the same number of examples, the same model (CreateImageClassifier,
// the same initialization code and seed), batch size, SGD settings and total threads:
//   data-parallel  --workers independent loops, one LibTorch thread each, each training
//                  its own model on its share of the examples (no synchronisation: an
//                  upper bound for any parallel trainer on these cores);
//   intra-op       one loop with --workers LibTorch threads (stopped after --intra_cap
//                  times the data-parallel time: on a shared machine its spinning
//                  threads can collapse);
//   TorchTrainer   --workers of fl-sim's own trainers, each bound to all 60,000 images
//                  and trained once for the same share: the trainer's inner loop without
//                  the federation, which separates the trainer's cost from the
//                  federation's.
// Every loop draws full batches from a per-epoch shuffle of all images, gathered with
// index_select as fl-sim's trainer does. The baseline is the fastest of the first two;
// ratio = fl-sim / baseline (target >= 0.9).
//
// fl-sim runs on the CPU (sim.device=cpu) like the baselines.
// The breakdown splits the workers' time (workers x train_seconds) with the phase times
// of every executed task (client/client_runtime.h TaskTimes); "idle" is what no task
// used: workers waiting for a round's last task, the polls that open a round, dispatch.
// Batch gathering is timed inside the centralised data-parallel loop (fl-sim's trainer
// gathers the same way, so it is part of "local training" there).

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "data/idx_reader.h"
#include "simulations/simulator.h"
#include "torch/models.h"
#include "torch/tensor_image_data.h"
#include "torch/torch_trainer.h"

#ifndef FL_FASHION_MNIST_DIR
#define FL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif

namespace fl::internal {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The 1-minute load average: how busy the machine was around a measurement.
double LoadAverage() {
  double load = 0;
  return getloadavg(&load, 1) == 1 ? load : -1;
}

// CPU seconds (user + system) this process has used, all threads.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

struct Flags {
  int rounds = 5;
  int workers = 2;
  int repeats = 1;
  int64_t train_examples = 0;  // fl-sim's data.train_examples (0 = all; smoke runs)
  int64_t clients = 100;           // data.num_clients (the preset's 100)
  int64_t clients_per_round = 10;  // coordinator.clients_per_round (the preset's 10)
  double intra_cap = 1;
  std::string data_dir = FL_FASHION_MNIST_DIR;
  std::string out;
};

bool Take(const std::string& arg, const std::string& name, std::string* value) {
  const std::string prefix = "--" + name + "=";
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  f.out = (std::filesystem::temp_directory_path() /
           ("sim_efficiency_bench_" + std::to_string(::getpid())))
              .string();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], v;
    if (Take(arg, "rounds", &v)) f.rounds = std::stoi(v);
    else if (Take(arg, "workers", &v)) f.workers = std::stoi(v);
    else if (Take(arg, "repeats", &v)) f.repeats = std::stoi(v);
    else if (Take(arg, "intra_cap", &v)) f.intra_cap = std::stod(v);
    else if (Take(arg, "train_examples", &v)) f.train_examples = std::stoll(v);
    else if (Take(arg, "clients", &v)) f.clients = std::stoll(v);
    else if (Take(arg, "clients_per_round", &v)) f.clients_per_round = std::stoll(v);
    else if (Take(arg, "data_dir", &v)) f.data_dir = v;
    else if (Take(arg, "out", &v)) f.out = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return f;
}

void Check(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

Config SimConfig(const Flags& f) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fmnist-cnn");
  Check(preset.status(), "preset");
  defaults.merge_patch(*preset);
  Result<Config> config = Config::Build(
      defaults, "",
      {"data.dir=" + f.data_dir, "data.test_examples=200",
       "data.train_examples=" + std::to_string(f.train_examples),
       "data.num_clients=" + std::to_string(f.clients),
       "coordinator.clients_per_round=" + std::to_string(f.clients_per_round),
       "run.rounds=" + std::to_string(f.rounds),
       "sim.workers=" + std::to_string(f.workers), "sim.threads_per_worker=1",
       "sim.eval_every=1000000", "sim.progress=none", "sim.device=cpu",
       "sim.out_dir=" + f.out});
  Check(config.status(), "config");
  return *config;
}

// What a centralised run of one model trained with.
struct Hyper {
  int64_t batch = 32;
  double lr = 0.1;
  double momentum = 0.5;
  double weight_decay = 0;
  uint64_t seed = 1;
};

Hyper HyperOf(const Config& c) {
  Hyper h;
  h.batch = c.GetInt("train.batch_size");
  h.lr = c.GetDouble("train.lr");
  h.momentum = c.GetDouble("train.momentum");
  h.weight_decay = c.GetDouble("train.weight_decay");
  h.seed = static_cast<uint64_t>(c.GetInt("run.seed"));
  return h;
}

struct LoopTimes {
  uint64_t samples = 0;
  double gather_seconds = 0;  // index_select of the batches
};

// The plain LibTorch loop: a fresh model trained with SGD on `samples` examples in full
// batches from a per-epoch shuffle of `data`, on `threads` intra-op threads; stops early
// once `deadline` passes.
LoopTimes TrainCentralised(const TensorImageData& data, const Hyper& h, uint64_t samples,
                           uint64_t seed, int threads, Clock::time_point deadline) {
  SetTorchThreads(threads);
  Result<std::shared_ptr<ImageClassifier>> created = CreateImageClassifier("cnn", h.seed);
  Check(created.status(), "model");
  std::shared_ptr<ImageClassifier> model = *created;
  model->train();
  torch::optim::SGD optimizer(
      model->parameters(),
      torch::optim::SGDOptions(h.lr).momentum(h.momentum).weight_decay(h.weight_decay));
  const int64_t n = data.size();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  LoopTimes t;
  int64_t pos = n;
  while (t.samples + static_cast<uint64_t>(h.batch) <= samples && Clock::now() < deadline) {
    if (pos + h.batch > n) {
      std::shuffle(order.begin(), order.end(), rng);
      pos = 0;
    }
    const Clock::time_point gather = Clock::now();
    torch::Tensor idx = torch::from_blob(order.data() + pos, {h.batch}, torch::kLong);
    torch::Tensor x = data.images.index_select(0, idx);
    torch::Tensor y = data.labels.index_select(0, idx);
    t.gather_seconds += Since(gather);
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    optimizer.step();
    pos += h.batch;
    t.samples += static_cast<uint64_t>(h.batch);
  }
  return t;
}

// fl-sim's TorchTrainer bound to every image, trained once for `samples` examples.
LoopTimes TrainWithTorchTrainer(std::shared_ptr<const TensorImageData> data, const Hyper& h,
                                uint64_t samples, uint64_t seed) {
  SetTorchThreads(1);
  TorchTrainerOptions options;
  options.init_seed = h.seed;
  Result<std::unique_ptr<TorchTrainer>> trainer = TorchTrainer::Create(options, data, nullptr);
  Check(trainer.status(), "trainer");
  std::vector<int64_t> all(static_cast<size_t>(data->size()));
  std::iota(all.begin(), all.end(), 0);
  Check((*trainer)->BindExamples(std::move(all)), "bind");
  TrainConfig tc;
  tc.batch_size = static_cast<int>(h.batch);
  tc.lr = h.lr;
  tc.momentum = h.momentum;
  tc.weight_decay = h.weight_decay;
  tc.local_steps = static_cast<int>(static_cast<int64_t>(samples) / h.batch);
  tc.seed = seed;
  CancelToken cancel;
  Result<TrainStats> stats = (*trainer)->Train(tc, cancel);
  Check(stats.status(), "TorchTrainer::Train");
  LoopTimes t;
  t.samples = stats->num_examples;
  return t;
}

struct Rate {
  uint64_t samples = 0;
  double seconds = 0;
  // The process's CPU seconds (all threads) while cpu_samples were trained: less
  // sensitive than wall time to what else runs on the machine.
  uint64_t cpu_samples = 0;
  double cpu_seconds = 0;
  double gather_seconds = 0;  // summed over threads
  double per_sec() const { return seconds > 0 ? static_cast<double>(samples) / seconds : 0; }
  double per_cpu_sec() const {
    return cpu_seconds > 0 ? static_cast<double>(cpu_samples) / cpu_seconds : 0;
  }
  Rate& operator+=(const Rate& o) {
    samples += o.samples;
    seconds += o.seconds;
    cpu_samples += o.cpu_samples;
    cpu_seconds += o.cpu_seconds;
    gather_seconds += o.gather_seconds;
    return *this;
  }
};

// Runs `loop(k)` on `threads` threads at once; the wall time from a common start to the
// last one's end.
template <typename Loop>
Rate RunParallel(int threads, const Loop& loop) {
  std::vector<LoopTimes> parts(static_cast<size_t>(threads));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int k = 0; k < threads; ++k) {
    pool.emplace_back([&, k] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      parts[static_cast<size_t>(k)] = loop(k);
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  go = true;
  for (std::thread& t : pool) t.join();
  Rate r;
  r.seconds = Since(start);
  r.cpu_seconds = ProcessCpuSeconds() - cpu_start;
  for (const LoopTimes& p : parts) {
    r.samples += p.samples;
    r.gather_seconds += p.gather_seconds;
  }
  r.cpu_samples = r.samples;
  return r;
}

struct SimFigures {
  // fl-sim's train_samples over its train_seconds; per CPU second, the samples of rounds
  // 2 to the last over the CPU time from round 1's record to the last one's (so without
  // the setup, but with the final evaluation of the cut test set).
  Rate rate;
  double wall_seconds = 0;   // the whole RunSimulation, setup and evaluation included
  TaskTimes times;
};

SimFigures RunFlSim(const Config& config) {
  SimFigures f;
  double cpu_after_first = 0;
  Result<SimulationResult> r = RunSimulation(config, [&](const SimProgress& p) {
    if (!p.round_finished) return;
    const double now = ProcessCpuSeconds();
    if (p.round == 1) {
      cpu_after_first = now;
    } else {
      f.rate.cpu_samples += p.record->train_samples;
      f.rate.cpu_seconds = now - cpu_after_first;
    }
  });
  Check(r.status(), "fl-sim");
  f.rate.samples = r->train_samples;
  for (const SimRoundRecord& round : r->rounds) f.rate.seconds += round.train_seconds;
  f.wall_seconds = r->wall_seconds;
  f.times = r->task_times;
  return f;
}

struct Repeat {
  SimFigures sim;
  Rate data_parallel;
  Rate intra_op;
  Rate trainer;
  double load_before = 0, load_after = 0;
  double ratio() const {
    return sim.rate.per_sec() / std::max(data_parallel.per_sec(), intra_op.per_sec());
  }
  double cpu_ratio() const {
    return sim.rate.per_cpu_sec() / std::max(data_parallel.per_cpu_sec(), intra_op.per_cpu_sec());
  }
  double train_share() const { return sim.times.train / (sim.rate.seconds * workers); }
  int workers = 1;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void PrintRow(const char* name, const Rate& r, const Rate& sim) {
  std::printf("| %s | %llu | %.2f | %.0f | %.3f | %.2f | %.0f | %.3f |\n", name,
              static_cast<unsigned long long>(r.samples), r.seconds, r.per_sec(),
              r.per_sec() > 0 ? sim.per_sec() / r.per_sec() : 0.0, r.cpu_seconds,
              r.per_cpu_sec(), r.per_cpu_sec() > 0 ? sim.per_cpu_sec() / r.per_cpu_sec() : 0.0);
}

void PrintBreakdown(const Repeat& r, int workers) {
  const TaskTimes& t = r.sim.times;
  const double capacity = r.sim.rate.seconds * workers;
  const double gather_share =
      r.data_parallel.seconds > 0 ? r.data_parallel.gather_seconds / (r.data_parallel.seconds * workers)
                                  : 0;
  std::printf("\nWhere fl-sim's worker time goes (%d workers x %.2f s train_seconds = %.2f "
              "worker-seconds):\n\n",
              workers, r.sim.rate.seconds, capacity);
  std::printf("| phase | seconds | share |\n|---|---|---|\n");
  auto row = [&](const char* name, double s) {
    std::printf("| %s | %.3f | %.2f%% |\n", name, s, 100 * s / capacity);
  };
  row("model fetch (in process)", t.fetch);
  row("SetParameters (ParamSet -> LibTorch)", t.set_params);
  row("local training (TorchTrainer::Train)", t.train);
  std::printf("| of which batch gather (index_select, as timed centrally: %.1f%%) | %.3f | %.2f%% |\n",
              100 * gather_share, t.train * gather_share, 100 * t.train * gather_share / capacity);
  row("GetParameters (LibTorch -> ParamSet)", t.get_params);
  row("delta, checks, encode, SHA-256", t.encode);
  row("push: verify, decode, fold, round close", t.push);
  row("idle: round tail, polls, dispatch", std::max(0.0, capacity - t.total()));
  // ratio = (share of the workers' time in local training) x (fl-sim's rate while
  // training / the centralised rate): the federation's cost, and the host's load on
  // fl-sim's training against the baseline's (noise where the machine is shared).
  const double train_share = r.train_share();
  const double training_rate = t.train > 0 ? r.sim.rate.samples * workers / t.train : 0;
  const double best = std::max(r.data_parallel.per_sec(), r.intra_op.per_sec());
  std::printf("\nratio %.3f = local training's share %.3f x fl-sim's rate while training "
              "%.0f samples/s / centralised %.0f = %.3f\n",
              r.ratio(), train_share, training_rate, best, best > 0 ? training_rate / best : 0);
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  const Config config = SimConfig(flags);
  const Hyper hyper = HyperOf(config);
  Result<ImageDataset> images =
      LoadMnistFormat(flags.data_dir, DatasetSplit::kTrain);
  Check(images.status(), "Fashion-MNIST");
  Result<std::shared_ptr<const TensorImageData>> data = MakeTensorImageData(*images, "cpu");
  Check(data.status(), "tensors");
  const int w = flags.workers;

  // Warm-up: LibTorch's first passes allocate and pick kernels.
  RunParallel(w, [&](int k) {
    return TrainCentralised(**data, hyper, 20 * hyper.batch, 99 + k, 1, Clock::time_point::max());
  });

  std::vector<Repeat> repeats;
  for (int rep = 0; rep < flags.repeats; ++rep) {
    Repeat r;
    r.workers = w;
    r.load_before = LoadAverage();
    // The data-parallel baseline runs half before fl-sim and half after, so a change in
    // the machine's load during the repeat weighs on both sides alike.
    const int64_t used = flags.train_examples > 0
                             ? std::min(flags.train_examples, images->size())
                             : images->size();
    const uint64_t planned = static_cast<uint64_t>(flags.rounds * used) *
                             static_cast<uint64_t>(flags.clients_per_round) /
                             static_cast<uint64_t>(flags.clients) / static_cast<uint64_t>(w);
    auto data_parallel = [&](uint64_t samples, uint64_t seed) {
      return RunParallel(w, [&](int k) {
        return TrainCentralised(**data, hyper, samples, seed + k, 1, Clock::time_point::max());
      });
    };
    r.data_parallel = data_parallel(planned / 2, hyper.seed);
    r.sim = RunFlSim(config);
    const uint64_t share = r.sim.rate.samples / static_cast<uint64_t>(w);
    r.data_parallel += data_parallel(share - std::min(share, r.data_parallel.samples / w),
                                     hyper.seed + 1000);
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(
                                                 flags.intra_cap * r.data_parallel.seconds));
    r.intra_op = RunParallel(1, [&](int) {
      return TrainCentralised(**data, hyper, share * w, hyper.seed, w, deadline);
    });
    r.trainer = RunParallel(w, [&](int k) {
      return TrainWithTorchTrainer(*data, hyper, share, hyper.seed + k);
    });
    r.load_after = LoadAverage();
    repeats.push_back(r);

    std::printf("\n## repeat %d: fmnist-cnn, %d rounds, %lld clients (%lld per round), %d "
                "workers x 1 thread; load average %.1f -> %.1f\n\n",
                rep + 1, flags.rounds, static_cast<long long>(flags.clients),
                static_cast<long long>(flags.clients_per_round), w, r.load_before, r.load_after);
    std::printf("| run | samples | seconds | samples/s | fl-sim / this | CPU s | samples/CPU s | "
                "fl-sim / this (CPU) |\n|---|---|---|---|---|---|---|---|\n");
    PrintRow("fl-sim (train_samples / train_seconds)", r.sim.rate, r.sim.rate);
    const std::string dp = "centralised, " + std::to_string(w) + " loops x 1 thread";
    const std::string io = "centralised, 1 loop x " + std::to_string(w) + " threads";
    const std::string tt = "TorchTrainer, " + std::to_string(w) + " x 1 thread, no federation";
    PrintRow(dp.c_str(), r.data_parallel, r.sim.rate);
    PrintRow(io.c_str(), r.intra_op, r.sim.rate);
    PrintRow(tt.c_str(), r.trainer, r.sim.rate);
    std::printf("\nfl-sim wall %.2f s (setup, training, final evaluation); "
                "ratio fl-sim / best centralised = %.3f (target >= 0.9)\n",
                r.sim.wall_seconds, r.ratio());
    PrintBreakdown(r, w);
    std::fflush(stdout);
  }
  std::vector<double> ratios, cpu_ratios, shares;
  std::printf("\n| repeat | ratio (wall) | ratio (CPU) | local training's share |\n|---|---|---|---|\n");
  for (size_t i = 0; i < repeats.size(); ++i) {
    const Repeat& r = repeats[i];
    std::printf("| %zu | %.3f | %.3f | %.3f |\n", i + 1, r.ratio(), r.cpu_ratio(), r.train_share());
    ratios.push_back(r.ratio());
    cpu_ratios.push_back(r.cpu_ratio());
    shares.push_back(r.train_share());
  }
  std::printf("| median | %.3f | %.3f | %.3f |\n", Median(ratios), Median(cpu_ratios),
              Median(shares));
  std::filesystem::remove_all(flags.out);
  return 0;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) { return fl::internal::Main(argc, argv); }
