// Predictions per second of W3's vit-tiny (width 128, depth 4, heads 4) on a batch of 64
// Fashion-MNIST test images, single-threaded, in one binary:
//
//   BM_Predictor/fedins:0/simd:1  fl::AdaptivePredictor (Eigen, no LibTorch), backbone alone
//   BM_Predictor/fedins:1/simd:1  fl::AdaptivePredictor with a 10-entry FedIns pool, top_k 3
//   BM_Predictor/.../simd:0       the same on the baseline copy of the kernel (SSE2 on x86-64)
//   BM_Torch/fedins:0      VitTrainer::Predict (LibTorch), tuning full: one plain forward
//   BM_Torch/fedins:1      VitTrainer::Predict with the same pool: query pass + SSF pass
//
//   predict_bench --benchmark_min_time=2
//
// items_per_second is images per second. A FedIns prediction costs two forward passes
// (the query without SSF, then the per-instance SSF one), so fedins:1/fedins:0 ~ 1/2.
// simd:1 is the copy the CPU gets by default: AVX2 + FMA where it has them (vit_kernel.h).

#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "data/idx_reader.h"
#include "fl/adaptive_predictor.h"
#include "infer/vit_kernel.h"
#include "torch/torch_trainer.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

constexpr int64_t kBatch = 64;

struct Setup {
  std::vector<uint8_t> pixels;    // kBatch raw images
  std::vector<float> normalized;  // the same, as VitTrainer::Predict takes them
  ParamSet backbone;
  ParamSet pool;
  std::unique_ptr<VitTrainer> torch_full;
  std::unique_ptr<VitTrainer> torch_pool;
};

VitTrainerOptions Options(VitTuning tuning) {
  VitTrainerOptions o;  // vit-tiny
  o.tuning = tuning;
  o.pool.entries = 10;
  o.pool.top_k = 3;
  o.eval_batch_size = kBatch;
  return o;
}

// Built once: the images, a vit-tiny backbone (initialized from seed 7; throughput does
// not depend on training) and a 10-entry pool.
Setup* Shared() {
  static Setup* setup = [] {
    SetTorchThreads(1);
    auto s = new Setup;
    Result<ImageDataset> test = LoadMnistFormat(FL_FASHION_MNIST_DIR, DatasetSplit::kTest);
    if (!test.ok()) std::abort();
    s->pixels.assign(test->images.begin(), test->images.begin() + kBatch * 28 * 28);
    for (uint8_t p : s->pixels)
      s->normalized.push_back((static_cast<float>(p) / 255.0f - 0.2860f) / 0.3530f);
    VitTrainerOptions full = Options(VitTuning::kFull);
    full.init_seed = 7;
    s->torch_full = std::move(VitTrainer::Create(full, nullptr, nullptr, nullptr)).value();
    if (!s->torch_full->GetFullModel(&s->backbone).ok()) std::abort();
    s->torch_pool =
        std::move(VitTrainer::Create(Options(VitTuning::kSsfPool), &s->backbone, nullptr, nullptr))
            .value();
    if (!s->torch_pool->GetParameters(&s->pool).ok()) std::abort();
    return s;
  }();
  return setup;
}

void BM_Predictor(benchmark::State& state) {
  Setup* s = Shared();
  const bool fedins = state.range(0) == 1;
  auto predictor =
      AdaptivePredictor::Create(s->backbone, fedins ? s->pool : ParamSet(), PredictorOptions{});
  if (!predictor.ok()) {
    state.SkipWithError(predictor.status().ToString().c_str());
    return;
  }
  LimitInferIsa(state.range(1) == 1 ? InferIsa::kAvx2 : InferIsa::kBaseline);
  for (auto _ : state) {
    auto out = (*predictor)->Predict(s->pixels.data(), kBatch);
    benchmark::DoNotOptimize(out);
  }
  LimitInferIsa(InferIsa::kAvx2);
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Predictor)
    ->ArgNames({"fedins", "simd"})
    ->ArgsProduct({{0, 1}, {1, 0}})
    ->Unit(benchmark::kMillisecond);

void BM_Torch(benchmark::State& state) {
  Setup* s = Shared();
  VitTrainer* trainer = state.range(0) == 1 ? s->torch_pool.get() : s->torch_full.get();
  for (auto _ : state) {
    auto out = trainer->Predict(s->normalized.data(), kBatch);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Torch)->ArgName("fedins")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fl::internal

BENCHMARK_MAIN();
