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

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"
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

std::unique_ptr<Federation> Start(CoordinatorMode mode, bool durable) {
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

// One version: every client pulls, then every client pushes.
void OneVersion(Federation& f) {
  std::vector<Task> tasks;
  for (const Session& s : f.sessions) {
    Result<Task> task = f.coordinator->PullTask(s, std::chrono::milliseconds(0));
    if (!task.ok() || task->kind != TaskKind::kTrain) std::abort();
    tasks.push_back(*task);
  }
  for (int i = 0; i < kClients; ++i) {
    Payload& p = f.updates[i];
    p.meta.round = tasks[i].round;
    p.meta.base_version = tasks[i].model_version;
    Result<PushAck> ack = f.coordinator->PushUpdate(f.sessions[i], p);
    if (!ack.ok()) {
      std::fprintf(stderr, "%s\n", ack.status().ToString().c_str());
      std::abort();
    }
  }
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

}  // namespace
}  // namespace fl::internal

BENCHMARK_MAIN();
