#include "simulations/vit_pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include "data/idx_reader.h"
#include "data/sampling.h"
#include "fl/param_set.h"
#include "rng/splitmix64.h"
#include "simulations/vit_shift_workload.h"
#include "torch/torch_trainer.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

// Steps per Train call: often enough for a progress line, rarely enough that restarting
// the momentum (each call builds its optimizer) does not matter.
constexpr int64_t kStepsPerChunk = 100;

struct PretrainPlan {
  int64_t epochs = 0;  // > 0: one chunk per epoch
  int64_t steps = 0;   // total
  TrainConfig train;   // batch_size, lr, momentum, weight_decay
};

Result<PretrainPlan> PlanFromConfig(const Config& config, int64_t examples) {
  PretrainPlan plan;
  plan.epochs = config.GetInt("pretrain.epochs");
  const int64_t steps = config.GetInt("pretrain.steps");
  const int64_t batch = config.GetInt("pretrain.batch_size");
  const double lr = config.GetDouble("pretrain.lr");
  const double momentum = config.GetDouble("pretrain.momentum");
  const double weight_decay = config.GetDouble("pretrain.weight_decay");
  if (plan.epochs < 0 || plan.epochs > 1000) {
    return Status::InvalidArgument("config key pretrain.epochs must be in [0, 1000]");
  }
  if (plan.epochs == 0 && steps < 1) {
    return Status::InvalidArgument(
        "config key pretrain.steps must be >= 1 (or set pretrain.epochs)");
  }
  if (batch < 1 || batch > 1 << 16) {
    return Status::InvalidArgument("config key pretrain.batch_size must be in [1, 65536]");
  }
  if (!(std::isfinite(lr) && lr > 0))
    return Status::InvalidArgument("config key pretrain.lr must be > 0");
  if (!(momentum >= 0 && momentum < 1)) {
    return Status::InvalidArgument("config key pretrain.momentum must be in [0, 1)");
  }
  if (!(weight_decay >= 0 && std::isfinite(weight_decay))) {
    return Status::InvalidArgument("config key pretrain.weight_decay must be >= 0");
  }
  plan.steps = plan.epochs > 0 ? plan.epochs * ((examples + batch - 1) / batch) : steps;
  plan.train.batch_size = static_cast<int>(batch);
  plan.train.lr = lr;
  plan.train.momentum = momentum;
  plan.train.weight_decay = weight_decay;
  return plan;
}

// One Train call.
struct Chunk {
  std::vector<int64_t> examples;  // bound for this call; empty: keep the binding
  int64_t steps = 0;
};

// Step plans train on all images, kStepsPerChunk steps per call. Epoch plans cut each
// epoch's shuffled order into slices of kStepsPerChunk batches, one call per slice, so
// every image is seen exactly once per epoch and progress still comes every
// kStepsPerChunk steps.
std::vector<Chunk> PlanChunks(const PretrainPlan& plan, int64_t n, uint64_t seed) {
  std::vector<Chunk> out;
  if (plan.epochs == 0) {
    for (int64_t done = 0; done < plan.steps; done += kStepsPerChunk) {
      out.push_back(Chunk{{}, std::min(kStepsPerChunk, plan.steps - done)});
    }
    return out;
  }
  const int64_t batch = plan.train.batch_size;
  const int64_t slice = kStepsPerChunk * batch;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  for (int64_t epoch = 0; epoch < plan.epochs; ++epoch) {
    SeededRng rng(SplitMix64(seed + static_cast<uint64_t>(epoch)));
    rng.Shuffle(order);
    for (int64_t begin = 0; begin < n; begin += slice) {
      const int64_t end = std::min(n, begin + slice);
      out.push_back(Chunk{std::vector<int64_t>(order.begin() + begin, order.begin() + end),
                          (end - begin + batch - 1) / batch});
    }
  }
  return out;
}

using Announce = std::function<void(const std::string& phase, int64_t step, double loss)>;

// Runs `plan` over `n` images on `trainer` (bound to all of them), announcing each
// call's mean loss; adds the examples seen to report->trained_examples.
Status TrainPlan(const PretrainPlan& plan, int64_t n, uint64_t seed, VitTrainer& trainer,
                 const Announce& announce, VitPretrainReport* report) {
  CancelToken never;
  int64_t done = 0;
  std::vector<Chunk> chunks = PlanChunks(plan, n, seed);
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (!chunks[k].examples.empty()) {
      FL_RETURN_IF_ERROR(trainer.BindExamples(std::move(chunks[k].examples)));
    }
    TrainConfig tc = plan.train;
    tc.local_steps = static_cast<int>(chunks[k].steps);
    // Its own stream per call: the run seed also initializes the weights.
    tc.seed = SplitMix64(seed * kGoldenGamma64 + k + 1);
    FL_ASSIGN_OR_RETURN(TrainStats stats, trainer.Train(tc, never));
    report->trained_examples += stats.num_examples;
    done += chunks[k].steps;
    announce("train", done, stats.mean_loss);
  }
  return Status::Ok();
}

// The clean pretraining images: train images [0, kFederatedBegin).
Result<ImageDataset> LoadPretrainImages(const Config& config, Env* env) {
  FL_ASSIGN_OR_RETURN(ImageDataset train,
                      LoadMnistFormat(config.GetString("data.dir"), DatasetSplit::kTrain, env));
  const int64_t n = std::min(train.size(), kFederatedBegin);
  train.images.resize(static_cast<size_t>(n * train.rows * train.cols));
  train.labels.resize(static_cast<size_t>(n));
  return train;
}

Status WriteBackbone(VitTrainer& trainer, const std::string& out, Env* env) {
  ParamSet full;
  FL_RETURN_IF_ERROR(trainer.GetFullModel(&full));
  if (!full.AllFinite()) {
    return Status::FailedPrecondition(
        "pretraining diverged (non-finite parameters); lower pretrain.lr");
  }
  const size_t slash = out.find_last_of('/');
  if (slash != std::string::npos && slash > 0)
    FL_RETURN_IF_ERROR(env->CreateDirs(out.substr(0, slash)));
  return WriteModelFile(out, full);
}

// Scores the parameters of `trained` on another evaluation set.
Result<EvalStats> EvaluateOn(VitTrainer& trained, const VitTrainerOptions& options,
                             std::shared_ptr<const TensorImageData> eval) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<VitTrainer> scorer,
                      VitTrainer::Create(options, nullptr, nullptr, std::move(eval)));
  ParamSet params;
  FL_RETURN_IF_ERROR(trained.GetParameters(&params));
  FL_RETURN_IF_ERROR(scorer->SetParameters(params));
  return scorer->Evaluate();
}

}  // namespace

Result<VitPretrainReport> PretrainVitBackbone(
    const Config& config, const std::function<void(const VitPretrainProgress&)>& progress,
    Env* env) {
  if (env == nullptr) env = Env::Default();
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  VitPretrainReport report;
  report.out = config.GetString("pretrain.out");
  if (report.out.empty()) report.out = config.GetString("model.backbone");
  if (report.out.empty()) {
    return Status::InvalidArgument(
        "no output file: give --out FILE (pretrain.out) or model.backbone");
  }
  const int64_t threads = config.GetInt("pretrain.threads");
  if (threads < 1 || threads > 1024) {
    return Status::InvalidArgument("config key pretrain.threads must be in [1, 1024]");
  }
  FL_ASSIGN_OR_RETURN(std::string device, ResolveTorchDevice(config.GetString("sim.device")));
  FL_ASSIGN_OR_RETURN(VitTrainerOptions options, VitTrainerOptionsFromConfig(config, device));
  options.tuning = VitTuning::kFull;  // the whole ViT, from run.seed

  FL_ASSIGN_OR_RETURN(ImageDataset images, LoadPretrainImages(config, env));
  FL_ASSIGN_OR_RETURN(PretrainPlan plan, PlanFromConfig(config, images.size()));
  FL_ASSIGN_OR_RETURN(ImageDataset clean_test, LoadCleanTestSet(config, env));
  FL_ASSIGN_OR_RETURN(ShiftedTestSet shifted_test, LoadShiftedTestSet(config, env));
  SetTorchThreads(static_cast<int>(threads));
  FL_ASSIGN_OR_RETURN(auto train, MakeTensorImageData(images, device));
  FL_ASSIGN_OR_RETURN(auto clean, MakeTensorImageData(clean_test, device));
  FL_ASSIGN_OR_RETURN(auto shifted, MakeTensorImageData(shifted_test.images, device));
  FL_ASSIGN_OR_RETURN(std::unique_ptr<VitTrainer> trainer,
                      VitTrainer::Create(options, nullptr, train, clean));
  std::vector<int64_t> all(static_cast<size_t>(images.size()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  FL_RETURN_IF_ERROR(trainer->BindExamples(std::move(all)));
  report.model = config.GetString("model.name");
  report.num_parameters = trainer->layout().total_numel();
  report.steps = plan.steps;

  Announce announce = [&](const std::string& phase, int64_t step, double loss) {
    if (!progress) return;
    VitPretrainProgress p;
    p.step = step;
    p.steps = plan.steps;
    p.loss = loss;
    p.elapsed_seconds = elapsed();
    p.phase = phase;
    progress(p);
  };
  announce("evaluating the untrained model (clean test images)", 0, 0);
  FL_ASSIGN_OR_RETURN(report.clean_before, trainer->Evaluate());

  const auto train_start = std::chrono::steady_clock::now();
  FL_RETURN_IF_ERROR(TrainPlan(plan, images.size(),
                               static_cast<uint64_t>(config.GetInt("run.seed")), *trainer, announce,
                               &report));
  report.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();

  announce("evaluating the pretrained model (clean test images)", plan.steps, 0);
  FL_ASSIGN_OR_RETURN(report.clean_after, trainer->Evaluate());
  announce("evaluating the pretrained model (shifted test images)", plan.steps, 0);
  FL_ASSIGN_OR_RETURN(report.shifted_after, EvaluateOn(*trainer, options, shifted));
  FL_RETURN_IF_ERROR(WriteBackbone(*trainer, report.out, env));
  report.total_seconds = elapsed();
  return report;
}

}  // namespace fl::internal
