// Updates folded per second by the Coordinator, asynchronous mode against synchronous
// rounds in the same run, for a ~10M-parameter model and no training: what the server
// itself can absorb. Each iteration is one model version made of kClients updates:
//
//   sync:  kClients clients pull the round's task and push; the last push closes the
//          round (one FedAvg server step).
//   async: kClients pulls and pushes against a buffer of kClients (concurrency
//          kClients): the last push flushes it (one server step, a new version).
//
// Every push goes through the whole PushUpdate path (session, SHA-256, layout, finite
// values, weight policy, fold; async adds the staleness weight). The second argument
// selects the store: 0 keeps everything in memory (fl-sim), 1 is fl-server's durable
// path (each update spooled and fsync'd, SQLite synchronous=FULL) on the temp directory.
//
//   fold_bench --benchmark_filter=BM_Fold --benchmark_min_time=2
//
// Counter updates/s (items_per_second) is the figure; README puts async next to sync.
// BM_FoldConcurrent pushes the kClients updates of a version from kClients threads at
// once, with the coordinator's leaves (coordinator.aggregation_leaves) as argument:
// 1 folds every update into one aggregator in turn, L folds up to L in parallel.
//
// BM_FoldVsCopy is the fold kernel against the machine's memory bandwidth, in the same
// run: FedAvg's fold (WeightedAccumulator, fp64 sums) of 100 float32 updates of
// d = 10,000,000 parameters, and a STREAM-style copy of a d-float array with the same
// threads. Both figures count the d-float array once (4d bytes):
//
//   fold_GBps = 100 * 4d bytes of updates folded / fold time
//   copy_GBps = 4d bytes copied (read 4d, write 4d) / copy time
//   ratio     = fold_GBps / copy_GBps
//
// A copy is the least a server can do with an update that arrived in memory (touch each
// byte once, write it elsewhere), so the ratio says how close folding comes to merely
// moving the update. A fold of one update reads it twice (validate, then fold, so a bad
// value leaves the sums unchanged) and reads and writes the 8d-byte fp64 sums: 24
// bytes per parameter against the copy's 8. Folding `batch` updates per sweep over
// the sums (AccumulateBatch: for each chunk of the sums, held in registers, every
// update's values in turn) amortises the sums to 16/batch bytes; the batch holds
// batch received updates (4d bytes each), which the server holds anyway while they wait. Threads fold into their own leaf (one
// accumulator each, as the coordinator's leaves) and split the copy's array.
//
//   fold_bench --benchmark_filter=BM_FoldVsCopy

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"
#include "agg/weighted_accumulator.h"
#include "crypto/sha256.h"
#include "server/coordinator.h"

namespace fl::internal {
namespace {

constexpr int kClients = 10;

// 10 tensors of 1M parameters: 10,000,000 in all.
Layout TenMillionLayout() {
  Layout layout;
  for (int i = 0; i < 10; ++i) layout.Add("w" + std::to_string(i), {1000, 1000});
  return layout;
}

// One client's dense update; small values, so every mode folds the same finite numbers.
Payload MakeUpdate(const Layout& layout, int client) {
  std::vector<float> delta(ParamSet(layout).size());
  for (size_t i = 0; i < delta.size(); ++i) {
    delta[i] = 1e-4f * static_cast<float>(static_cast<int>((i + client) % 13) - 6);
  }
  Payload p;
  if (!EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok()) std::abort();
  p.meta.weight = 100;
  p.meta.num_examples = 100;
  p.meta.layout_hash = layout.hash();
  p.meta.encoding = Encoding::kDenseF32;
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

struct Federation {
  std::filesystem::path dir;
  std::unique_ptr<Coordinator> coordinator;
  std::vector<Session> sessions;
  std::vector<Payload> updates;

  ~Federation() {
    coordinator.reset();
    std::filesystem::remove_all(dir);
  }
};

std::unique_ptr<Federation> Start(CoordinatorMode mode, bool durable, uint32_t leaves = 1) {
  auto f = std::make_unique<Federation>();
  f->dir = std::filesystem::temp_directory_path() /
           ("fl_fold_bench_" + std::to_string(::getpid()) + "_" +
            std::string(CoordinatorModeName(mode)));
  std::filesystem::remove_all(f->dir);
  CoordinatorOptions o;
  o.mode = mode;
  o.state_dir = f->dir.string();
  if (!durable) o.store_path = ":memory:";
  o.durable = durable;
  o.aggregation_leaves = leaves;
  o.num_rounds = 1u << 30;
  o.min_clients = kClients;
  o.clients_per_round = kClients;
  o.keep_models = 2;
  o.async.concurrency = kClients;
  o.async.buffer_size = kClients;
  Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", {});
  Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(*config);
  const Layout layout = TenMillionLayout();
  Result<std::unique_ptr<Coordinator>> c =
      Coordinator::Create(o, std::move(strategy).value(), ParamSet(layout));
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    std::abort();
  }
  f->coordinator = std::move(c).value();
  for (int i = 0; i < kClients; ++i) {
    Result<JoinReply> joined = f->coordinator->Join("", "client-" + std::to_string(i));
    f->sessions.push_back(*f->coordinator->Authenticate(joined->session_token));
    f->updates.push_back(MakeUpdate(layout, i));
  }
  return f;
}

// One version: every client pulls, then every client pushes (all at once from their own
// threads when `concurrent`).
void OneVersion(Federation& f, bool concurrent = false) {
  std::vector<Task> tasks;
  for (const Session& s : f.sessions) {
    Result<Task> task = f.coordinator->PullTask(s, std::chrono::milliseconds(0));
    if (!task.ok() || task->kind != TaskKind::kTrain) std::abort();
    tasks.push_back(*task);
  }
  auto push = [&](int i) {
    Payload& p = f.updates[i];
    p.meta.round = tasks[i].round;
    p.meta.base_version = tasks[i].model_version;
    Result<PushAck> ack = f.coordinator->PushUpdate(f.sessions[i], p);
    if (!ack.ok()) {
      std::fprintf(stderr, "%s\n", ack.status().ToString().c_str());
      std::abort();
    }
  };
  if (!concurrent) {
    for (int i = 0; i < kClients; ++i) push(i);
    return;
  }
  std::vector<std::thread> pushers;
  for (int i = 0; i < kClients; ++i) pushers.emplace_back(push, i);
  for (std::thread& t : pushers) t.join();
}

void BM_Fold(benchmark::State& state) {
  const auto mode = state.range(0) == 0 ? CoordinatorMode::kSync : CoordinatorMode::kAsync;
  std::unique_ptr<Federation> f = Start(mode, state.range(1) != 0);
  OneVersion(*f);  // warm-up: first allocations, first model file
  for (auto _ : state) OneVersion(*f);
  state.SetItemsProcessed(state.iterations() * kClients);
  state.SetLabel(std::string(CoordinatorModeName(mode)) +
                 (state.range(1) != 0 ? " durable" : " in memory"));
}
BENCHMARK(BM_Fold)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"async", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_FoldConcurrent(benchmark::State& state) {
  const auto mode = state.range(0) == 0 ? CoordinatorMode::kSync : CoordinatorMode::kAsync;
  const auto leaves = static_cast<uint32_t>(state.range(1));
  std::unique_ptr<Federation> f = Start(mode, /*durable=*/false, leaves);
  OneVersion(*f, true);
  for (auto _ : state) OneVersion(*f, true);
  state.SetItemsProcessed(state.iterations() * kClients);
  state.SetLabel(std::string(CoordinatorModeName(mode)) + " in memory, " +
                 std::to_string(kClients) + " concurrent pushes");
}
BENCHMARK(BM_FoldConcurrent)
    ->ArgsProduct({{0, 1}, {1, 2, 4}})
    ->ArgNames({"async", "leaves"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- Fold kernel against copy bandwidth (see the top of the file) ----

constexpr size_t kFoldParams = 10'000'000;
constexpr int kFoldUpdates = 100;
constexpr int kDistinctUpdates = 8;  // cycled; 320 MB, far beyond the caches

// Seconds `threads` threads take to run body(t) each, started together.
template <typename Body>
double TimeThreads(int threads, Body body) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
  for (std::thread& th : pool) th.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void BM_FoldVsCopy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  const size_t d = kFoldParams;
  Layout layout;
  layout.Add("w", {static_cast<int64_t>(d)});
  auto shared_layout = std::make_shared<const Layout>(layout);
  std::vector<std::string> updates(kDistinctUpdates);
  for (int u = 0; u < kDistinctUpdates; ++u) {
    std::vector<float> delta(d);
    for (size_t i = 0; i < d; ++i) delta[i] = 1e-4f * static_cast<float>(int((i * 7 + u) % 13) - 6);
    if (!EncodeDense(delta, Encoding::kDenseF32, &updates[u]).ok()) std::abort();
  }
  std::vector<float> src(d, 1.0f), dst(d, 0.0f);
  std::vector<WeightedAccumulator> leaves;
  for (int t = 0; t < threads; ++t) leaves.emplace_back(shared_layout);

  double copy_seconds = 0, fold_seconds = 0;
  int64_t copies = 0;
  for (auto _ : state) {
    // Copy: the d-float array split over the threads; a few repetitions, the best one.
    double best = 1e30;
    for (int r = 0; r < 5; ++r) {
      best = std::min(best, TimeThreads(threads, [&](int t) {
                        const size_t lo = d * t / threads, hi = d * (t + 1) / threads;
                        std::memcpy(dst.data() + lo, src.data() + lo, (hi - lo) * sizeof(float));
                      }));
    }
    copy_seconds += best;
    ++copies;
    benchmark::DoNotOptimize(dst.data());
    // Fold: update i goes to leaf i mod threads, `batch` per sweep of the sums.
    fold_seconds += TimeThreads(threads, [&](int t) {
      std::vector<DenseTerm> terms;
      auto flush = [&] {
        std::vector<Status> results(terms.size());
        leaves[t].AccumulateBatch(terms, results);
        for (const Status& s : results) {
          if (!s.ok()) std::abort();
        }
        terms.clear();
      };
      for (int i = t; i < kFoldUpdates; i += threads) {
        terms.push_back({updates[i % kDistinctUpdates], Encoding::kDenseF32, 1.0});
        if (static_cast<int>(terms.size()) == batch) flush();
      }
      if (!terms.empty()) flush();
    });
  }
  const double bytes = 4.0 * static_cast<double>(d);
  const double copy_gbps = bytes * copies / copy_seconds / 1e9;
  const double fold_gbps = bytes * kFoldUpdates * copies / fold_seconds / 1e9;
  state.counters["copy_GBps"] = copy_gbps;
  state.counters["fold_GBps"] = fold_gbps;
  state.counters["ratio"] = fold_gbps / copy_gbps;
  state.counters["updates_per_s"] = kFoldUpdates * copies / fold_seconds;
  state.SetLabel("d=10M f32, 100 updates, " + std::to_string(threads) + " thread(s), batch " +
                 std::to_string(batch));
}
BENCHMARK(BM_FoldVsCopy)
    ->ArgsProduct({{1, 2}, {1, 4, 10, 20}})
    ->ArgNames({"threads", "batch"})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace fl::internal

BENCHMARK_MAIN();
