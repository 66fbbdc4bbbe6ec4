// Simulator efficiency: fl-sim's training samples per second on the fmnist-cnn preset
// against centralised LibTorch training of the same model (the limit a simulator can
// approach), in one binary and one run, and where fl-sim's remaining time goes.
//
//   sim_efficiency_bench [--rounds 5] [--workers 2] [--repeats 1] [--clients 100]
//                        [--clients-per-round 10] [--train-examples 0] [--intra-cap 1]
//                        [--set key=value ...] [--help]
//
// fl-sim side: RunSimulation with fmnist-cnn's preset (100 clients, Dirichlet 0.5, 10 per
// round, one local epoch of SGD, batch 32, lr 0.1, momentum 0.5), --workers workers x
// sim.threads_per_worker (1) LibTorch threads, on the CPU, evaluation only after the last
// round (it is outside train_seconds anyway; the test set is cut to 200 images so the
// run's time is training). Any fl-sim key can be changed with --set.
// Its rate is fl-sim's own: train_samples / sum of train_seconds, where a round's
// train_seconds runs from the clients' polls to the round's close (pull, train, push,
// aggregation, server step).
//
// Centralised side, the same number of examples, the same model (CreateImageClassifier,
// the same initialization code and seed), batch size, SGD settings and total threads:
//   data-parallel  --workers independent loops, threads_per_worker threads each, each
//                  training its own model on its share of the examples (no
//                  synchronisation: an upper bound for any parallel trainer on these
//                  cores);
//   intra-op       one loop with all the threads (each round's part stopped after
//                  --intra-cap times the data-parallel part's time: on a shared machine
//                  its spinning threads can collapse);
//   TorchTrainer   --workers of fl-sim's own trainers, each bound to all 60,000 images:
//                  the trainer's inner loop without the federation, which separates the
//                  trainer's cost from the federation's.
// Every loop draws full batches from a per-epoch shuffle of all images, gathered with
// index_select as fl-sim's trainer does (fl-sim's last batch of each local epoch is
// smaller, a cost of the partition). The baseline is the faster of the first two;
// ratio = fl-sim / baseline (target >= 0.9).
// The sides alternate round by round: after each fl-sim round (in its progress callback,
// outside train_seconds) every baseline trains as many examples as that round did, each
// loop keeping its model and optimizer from one round to the next. Rates per CPU second
// (the process's user + system time) are printed beside the wall-time ones, as they
// depend less on what else the machine runs.
//
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

#include "algorithms/registry.h"
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

void Check(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// The bench's settings, from a Config of BenchDefaults() (every fl-sim key can be set
// with --set key=value; Aliases() name the usual ones).
struct Flags {
  int rounds = 0;
  int workers = 0;
  int threads = 0;  // LibTorch threads per worker (sim.threads_per_worker)
  int repeats = 0;
  double intra_cap = 0;
  int64_t clients = 0;
  int64_t clients_per_round = 0;
  int64_t train_examples = 0;  // 0 = all
  std::string data_dir;
  std::string out;
};

// fmnist-cnn's preset, 5 rounds, evaluation only at the end on 200 test images, on the
// CPU, into a temporary folder; plus the bench's own keys.
nlohmann::json BenchDefaults() {
  nlohmann::json d = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fmnist-cnn");
  Check(preset.status(), "preset");
  d.merge_patch(*preset);
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("sim_efficiency_bench_" + std::to_string(::getpid())))
                              .string();
  d.merge_patch({{"run", {{"rounds", 5}}},
                 {"data", {{"test_examples", 200}}},
                 {"sim",
                  {{"eval_every", 1000000}, {"progress", "none"}, {"device", "cpu"},
                   {"out_dir", out}}},
                 {"bench", {{"repeats", 1}, {"intra_cap", 1.0}}}});
  return d;
}

std::vector<FlagAlias> Aliases() {
  return {
      {"--rounds", "run.rounds", "fl-sim rounds per repeat"},
      {"--workers", "sim.workers", "fl-sim workers; the baselines' loops or threads"},
      {"--clients", "data.num_clients", "virtual clients"},
      {"--clients-per-round", "coordinator.clients_per_round", "clients selected per round"},
      {"--train-examples", "data.train_examples", "use only the first N training images"},
      {"--data-dir", "data.dir", "Fashion-MNIST folder"},
      {"--repeats", "bench.repeats", "measurements, each fl-sim against the baselines"},
      {"--intra-cap", "bench.intra_cap",
       "stop the intra-op loop after this many times the data-parallel time"},
  };
}

Flags FlagsOf(const Config& c) {
  Flags f;
  f.rounds = static_cast<int>(c.GetInt("run.rounds"));
  f.workers = static_cast<int>(c.GetInt("sim.workers"));
  f.threads = static_cast<int>(c.GetInt("sim.threads_per_worker"));
  f.repeats = static_cast<int>(c.GetInt("bench.repeats"));
  f.intra_cap = c.GetDouble("bench.intra_cap");
  f.clients = c.GetInt("data.num_clients");
  f.clients_per_round = c.GetInt("coordinator.clients_per_round");
  f.train_examples = c.GetInt("data.train_examples");
  f.data_dir = c.GetString("data.dir");
  f.out = c.GetString("sim.out_dir");
  return f;
}

// What every centralised loop trains with: fl-sim's local training (batch size, SGD
// settings) and its model seed.
struct Hyper {
  TrainConfig train;
  int64_t batch = 0;
  uint64_t seed = 0;
};

Hyper HyperOf(const Config& c) {
  Result<TrainConfig> train = ConfigView(c).LocalTraining();
  Check(train.status(), "train");
  Hyper h;
  h.train = *train;
  h.batch = train->batch_size;
  h.seed = static_cast<uint64_t>(c.GetInt("run.seed"));
  return h;
}

struct LoopTimes {
  uint64_t samples = 0;
  double gather_seconds = 0;  // index_select of the batches
};

// The plain LibTorch loop: one model trained with SGD in full batches from a per-epoch
// shuffle of every image; its model, optimizer and shuffle carry over from one Train call
// to the next, as if it never stopped.
class CentralisedLoop {
 public:
  CentralisedLoop(const TensorImageData& data, const Hyper& h, uint64_t seed)
      : data_(data), h_(h), rng_(seed), order_(static_cast<size_t>(data.size())) {
    Result<std::shared_ptr<ImageClassifier>> created = CreateImageClassifier("cnn", h.seed);
    Check(created.status(), "model");
    model_ = *created;
    model_->train();
    optimizer_ = std::make_unique<torch::optim::SGD>(
        model_->parameters(),
        torch::optim::SGDOptions(h.train.lr)
            .momentum(h.train.momentum)
            .weight_decay(h.train.weight_decay));
    std::iota(order_.begin(), order_.end(), 0);
    pos_ = data.size();
  }

  // Trains `samples` more examples (whole batches; the rest is owed to the next call) on
  // `threads` intra-op threads, or fewer once `deadline` passes.
  LoopTimes Train(uint64_t samples, int threads, Clock::time_point deadline) {
    SetTorchThreads(threads);
    owed_ += samples;
    const uint64_t batch = static_cast<uint64_t>(h_.batch);
    LoopTimes t;
    while (owed_ >= batch && Clock::now() < deadline) {
      if (pos_ + h_.batch > data_.size()) {
        std::shuffle(order_.begin(), order_.end(), rng_);
        pos_ = 0;
      }
      const Clock::time_point gather = Clock::now();
      torch::Tensor idx = torch::from_blob(order_.data() + pos_, {h_.batch}, torch::kLong);
      torch::Tensor x = data_.images.index_select(0, idx);
      torch::Tensor y = data_.labels.index_select(0, idx);
      t.gather_seconds += Since(gather);
      optimizer_->zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(model_->forward(x), y);
      loss.backward();
      optimizer_->step();
      pos_ += h_.batch;
      owed_ -= batch;
      t.samples += batch;
    }
    if (owed_ >= batch) owed_ = 0;  // stopped by the deadline: what is left is dropped
    return t;
  }

 private:
  const TensorImageData& data_;
  Hyper h_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  int64_t pos_ = 0;
  uint64_t owed_ = 0;
  std::shared_ptr<ImageClassifier> model_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
};

// fl-sim's TorchTrainer bound to every image: each Train call is one local training of
// the examples owed, in whole batches.
class TrainerLoop {
 public:
  TrainerLoop(std::shared_ptr<const TensorImageData> data, const Hyper& h, uint64_t seed)
      : h_(h), seed_(seed) {
    TorchTrainerOptions options;
    options.init_seed = h.seed;
    Result<std::unique_ptr<TorchTrainer>> trainer = TorchTrainer::Create(options, data, nullptr);
    Check(trainer.status(), "trainer");
    trainer_ = std::move(*trainer);
    std::vector<int64_t> all(static_cast<size_t>(data->size()));
    std::iota(all.begin(), all.end(), 0);
    Check(trainer_->BindExamples(std::move(all)), "bind");
  }

  LoopTimes Train(uint64_t samples, int threads) {
    SetTorchThreads(threads);
    owed_ += samples;
    TrainConfig tc = h_.train;
    tc.local_steps = static_cast<int>(owed_ / static_cast<uint64_t>(h_.batch));
    tc.seed = seed_++;
    LoopTimes t;
    if (tc.local_steps == 0) return t;
    CancelToken cancel;
    Result<TrainStats> stats = trainer_->Train(tc, cancel);
    Check(stats.status(), "TorchTrainer::Train");
    owed_ -= stats->num_examples;
    t.samples = stats->num_examples;
    return t;
  }

 private:
  Hyper h_;
  uint64_t seed_;
  uint64_t owed_ = 0;
  std::unique_ptr<TorchTrainer> trainer_;
};

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
  // 2 to the last over fl-sim's CPU time between round 1's record and the last one's
  // (without the setup and the baselines, with the final evaluation of 200 images).
  Rate rate;
  double wall_seconds = 0;  // RunSimulation without the baselines: setup, training, evaluation
  TaskTimes times;
};

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

// One repeat: an fl-sim run in which every round is followed, in the progress callback
// (which train_seconds leaves out; fl-sim's workers are idle then), by each baseline
// training as many examples as that round did. The two sides alternate every few seconds,
// so a change in the machine's load weighs on both alike.
Repeat Measure(const Config& config, const Flags& flags,
               std::shared_ptr<const TensorImageData> data, const Hyper& hyper, uint64_t seed) {
  const int w = flags.workers, threads = flags.threads;
  std::vector<std::unique_ptr<CentralisedLoop>> loops;
  std::vector<std::unique_ptr<TrainerLoop>> trainers;
  for (int k = 0; k < w; ++k) {
    loops.push_back(std::make_unique<CentralisedLoop>(*data, hyper, seed + k));
    trainers.push_back(std::make_unique<TrainerLoop>(data, hyper, seed + k));
  }
  CentralisedLoop intra(*data, hyper, seed + w);
  Repeat r;
  r.workers = w;
  r.load_before = LoadAverage();
  auto baselines = [&](uint64_t samples) {
    const uint64_t share = samples / static_cast<uint64_t>(w);
    const Rate dp = RunParallel(w, [&](int k) {
      return loops[k]->Train(share, threads, Clock::time_point::max());
    });
    r.data_parallel += dp;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(
                                                 flags.intra_cap * dp.seconds));
    r.intra_op += RunParallel(1, [&](int) {
      return intra.Train(share * static_cast<uint64_t>(w), w * threads, deadline);
    });
    r.trainer += RunParallel(w, [&](int k) { return trainers[k]->Train(share, threads); });
  };
  double cpu_mark = 0, baseline_seconds = 0;
  Result<SimulationResult> result = RunSimulation(config, [&](const SimProgress& p) {
    if (!p.round_finished) return;
    if (p.round > 1) {
      r.sim.rate.cpu_samples += p.record->train_samples;
      r.sim.rate.cpu_seconds += ProcessCpuSeconds() - cpu_mark;
    }
    const Clock::time_point start = Clock::now();
    baselines(p.record->train_samples);
    baseline_seconds += Since(start);
    cpu_mark = ProcessCpuSeconds();
  });
  Check(result.status(), "fl-sim");
  r.sim.rate.samples = result->train_samples;
  for (const SimRoundRecord& round : result->rounds) r.sim.rate.seconds += round.train_seconds;
  r.sim.wall_seconds = result->wall_seconds - baseline_seconds;
  r.sim.times = result->task_times;
  r.load_after = LoadAverage();
  return r;
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
  Result<CommandLine> cl = ParseCommandLine(
      "sim_efficiency_bench",
      "fl-sim's training samples per second on fmnist-cnn against centralised LibTorch "
      "training of the same model and threads, and where fl-sim's time goes.",
      BenchDefaults(), Aliases(), argc, argv);
  if (!cl.ok()) {
    std::fprintf(stderr, "%s\n", cl.status().ToString().c_str());
    return 2;
  }
  if (cl->exit_now) return cl->exit_code;
  const Config& config = cl->config;
  const Flags flags = FlagsOf(config);
  const Hyper hyper = HyperOf(config);
  Result<ImageDataset> images =
      LoadMnistFormat(flags.data_dir, DatasetSplit::kTrain);
  Check(images.status(), "Fashion-MNIST");
  Result<std::shared_ptr<const TensorImageData>> data = MakeTensorImageData(*images, "cpu");
  Check(data.status(), "tensors");
  const int w = flags.workers;

  // Warm-up: LibTorch's first passes allocate and pick kernels.
  RunParallel(w, [&](int k) {
    CentralisedLoop warm(**data, hyper, 99 + k);
    return warm.Train(20 * hyper.batch, flags.threads, Clock::time_point::max());
  });

  std::vector<Repeat> repeats;
  for (int rep = 0; rep < flags.repeats; ++rep) {
    const Repeat r = Measure(config, flags, *data, hyper, hyper.seed + 1000 * rep);
    repeats.push_back(r);

    std::printf("\n## repeat %d: fmnist-cnn, %d rounds, %lld clients (%lld per round), %d "
                "workers x %d thread(s); load average %.1f -> %.1f\n\n",
                rep + 1, flags.rounds, static_cast<long long>(flags.clients),
                static_cast<long long>(flags.clients_per_round), w, flags.threads, r.load_before,
                r.load_after);
    std::printf("| run | samples | seconds | samples/s | fl-sim / this | CPU s | samples/CPU s | "
                "fl-sim / this (CPU) |\n|---|---|---|---|---|---|---|---|\n");
    PrintRow("fl-sim (train_samples / train_seconds)", r.sim.rate, r.sim.rate);
    const std::string t = std::to_string(flags.threads);
    const std::string dp = "centralised, " + std::to_string(w) + " loops x " + t + " thread(s)";
    const std::string io = "centralised, 1 loop x " + std::to_string(w * flags.threads) + " threads";
    const std::string tt = "TorchTrainer, " + std::to_string(w) + " x " + t + ", no federation";
    PrintRow(dp.c_str(), r.data_parallel, r.sim.rate);
    PrintRow(io.c_str(), r.intra_op, r.sim.rate);
    PrintRow(tt.c_str(), r.trainer, r.sim.rate);
    std::printf("\nfl-sim wall %.2f s (setup, training, final evaluation; baselines left out); "
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
