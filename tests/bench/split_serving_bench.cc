// SFPrompt's server side under load: vit-tiny's body (blocks [1, 3) of width 128, depth
// 4, heads 4) served by SplitBodyServer to 1, 8 and 32 concurrent sessions, each sending
// batches of 8 samples (Forward, then Backward, repeated), with batching on and off.
//
//   split_serving_bench [--steps=10] [--sessions=1,8,32] [--batch=8] [--max_batch=64]
//                       [--max_wait_us=2000] [--threads=1]
//
// The cut [1, 3) is SFPrompt's shape: the client keeps the embedding with its prompts and
// block 0 (so the prompts mix with the image tokens before anything leaves the client),
// and the last block plus the classifier as its tail (so local-loss training has a block
// to update); the server holds the middle half of the blocks.
//
// Reports body samples per second (each sample's forward and backward counted once), and
// the p50 / p99 latency of one session's step (Forward + Backward). --threads: LibTorch
// intra-op threads (0: every core). One by default: the body's passes run on one worker,
// and on a small shared machine a second intra-op thread spin-waits against the session
// threads and anything else running, which slows the small unbatched passes most.
//
// On a shared 2-core AMD EPYC with one intra-op thread, 8-sample passes already keep the
// core busy (~1,750 body samples/s, ~70 GFLOP/s counting each step as three body forward
// passes: forward, the recomputation, the input-gradient backward), and batching on/off
// at 32 sessions measured ~1.0x. With two intra-op threads it measured 2.35x, but only
// because the unbatched passes collapsed to ~370 samples/s; the batched ones reached ~870,
// half the one-thread rate.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "torch/split_body.h"

namespace fl::internal {
namespace {

struct Flags {
  int steps = 10;
  std::vector<int> sessions = {1, 8, 32};
  int64_t batch = 8;
  int64_t max_batch = 64;
  int64_t max_wait_us = 2000;
  int threads = 1;
};

bool Take(const std::string& arg, const std::string& name, std::string* value) {
  const std::string prefix = "--" + name + "=";
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], v;
    if (Take(arg, "steps", &v)) f.steps = std::stoi(v);
    else if (Take(arg, "batch", &v)) f.batch = std::stoll(v);
    else if (Take(arg, "max_batch", &v)) f.max_batch = std::stoll(v);
    else if (Take(arg, "max_wait_us", &v)) f.max_wait_us = std::stoll(v);
    else if (Take(arg, "threads", &v)) f.threads = std::stoi(v);
    else if (Take(arg, "sessions", &v)) {
      f.sessions.clear();
      std::stringstream list(v);
      for (std::string n; std::getline(list, n, ',');) f.sessions.push_back(std::stoi(n));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return f;
}

TokenTensor RandomTokens(int64_t batch, int64_t tokens, int64_t width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  TokenTensor t{batch, tokens, width, std::vector<float>(batch * tokens * width)};
  for (float& v : t.values) v = normal(rng);
  return t;
}

struct RunResult {
  double samples_per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  BodyPassCounts counts;
};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// `sessions` threads each run one untimed step, wait for all, then `steps` timed steps.
RunResult Serve(const Flags& flags, int sessions, bool batching) {
  SplitBodyOptions o;  // vit-tiny
  o.begin = 1;
  o.end = 3;
  o.init_seed = 7;
  o.batching = {batching, flags.max_batch, flags.max_wait_us};
  o.torch_threads =
      flags.threads > 0 ? flags.threads : static_cast<int>(std::thread::hardware_concurrency());
  auto server = SplitBodyServer::Create(o, nullptr);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    std::exit(1);
  }
  SplitBodyServer& body = **server;
  std::vector<std::vector<double>> latencies(sessions);
  std::atomic<int> warm{0};
  std::atomic<bool> go{false};
  auto step = [&](uint64_t id, const TokenTensor& a, const TokenTensor& g) {
    if (!body.Forward(id, a).ok() || !body.Backward(id, g).ok()) std::abort();
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < sessions; ++k) {
    threads.emplace_back([&, k] {
      TokenTensor a = RandomTokens(flags.batch, body.tokens(), body.width(), 2 * k + 1);
      TokenTensor g = RandomTokens(flags.batch, body.tokens(), body.width(), 2 * k + 2);
      step(k, a, g);
      warm.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      for (int s = 0; s < flags.steps; ++s) {
        auto t0 = std::chrono::steady_clock::now();
        step(k, a, g);
        latencies[k].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    });
  }
  while (warm.load() < sessions) std::this_thread::yield();
  BodyPassCounts before = body.counts();
  auto start = std::chrono::steady_clock::now();
  go.store(true);
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RunResult r;
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  r.samples_per_second = static_cast<double>(sessions) * flags.steps * flags.batch / seconds;
  r.p50_ms = Percentile(all, 0.50);
  r.p99_ms = Percentile(all, 0.99);
  r.counts = body.counts();
  r.counts.forward_passes -= before.forward_passes;
  r.counts.backward_passes -= before.backward_passes;
  r.counts.requests -= before.requests;
  return r;
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  std::printf("vit-tiny body blocks [1, 3), batch %lld per session, %d steps, max_batch %lld, "
              "max_wait_us %lld\n",
              static_cast<long long>(flags.batch), flags.steps,
              static_cast<long long>(flags.max_batch), static_cast<long long>(flags.max_wait_us));
  std::printf("%8s %8s %14s %10s %10s %18s\n", "sessions", "batching", "samples/s", "p50 ms",
              "p99 ms", "requests/pass");
  double last_on = 0, last_off = 0;
  for (int sessions : flags.sessions) {
    for (bool batching : {false, true}) {
      RunResult r = Serve(flags, sessions, batching);
      const int64_t passes = r.counts.forward_passes + r.counts.backward_passes;
      std::printf("%8d %8s %14.1f %10.2f %10.2f %18.2f\n", sessions, batching ? "on" : "off",
                  r.samples_per_second, r.p50_ms, r.p99_ms,
                  passes > 0 ? static_cast<double>(r.counts.requests) / passes : 0.0);
      std::fflush(stdout);
      (batching ? last_on : last_off) = r.samples_per_second;
    }
  }
  std::printf("batching on/off at %d sessions: %.2fx\n", flags.sessions.back(),
              last_off > 0 ? last_on / last_off : 0.0);
  return 0;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) { return fl::internal::Main(argc, argv); }
