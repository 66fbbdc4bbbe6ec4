#include "simulations/workload.h"

#include <algorithm>
#include <vector>

#include "data/idx_reader.h"
#include "server/coordinator_config.h"
#include "simulations/simulator.h"
#include "simulations/vit_shift_workload.h"
#include "torch/model_zoo.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kFashionMnist[] = "fashion-mnist";
constexpr char kFortunes[] = "fortunes";

// The first `n` examples (all if n is 0 or larger than the dataset).
void Truncate(ImageDataset* ds, int64_t n) {
  if (n <= 0 || n >= ds->size()) return;
  ds->images.resize(static_cast<size_t>(n * ds->rows * ds->cols));
  ds->labels.resize(static_cast<size_t>(n));
}

Status CheckNonNegative(const Config& config, const char* key) {
  if (config.GetInt(key) < 0) {
    return Status::InvalidArgument("config key " + std::string(key) + " must be >= 0 (got " +
                                   std::to_string(config.GetInt(key)) + ")");
  }
  return Status::Ok();
}

// W1: Fashion-MNIST images, a label-skewed partition, an image classifier.
class FashionMnistWorkload final : public Workload {
 public:
  class Worker final : public WorkloadWorker {
   public:
    Worker(const FashionMnistWorkload* workload, std::unique_ptr<TorchTrainer> trainer)
        : workload_(workload), trainer_(std::move(trainer)) {}

    Result<Trainer*> BindClient(size_t client) override {
      if (client >= workload_->partition_.num_clients()) {
        return Status::InvalidArgument("client index " + std::to_string(client) + " out of range");
      }
      FL_RETURN_IF_ERROR(trainer_->BindExamples(workload_->partition_.Indices(client)));
      return static_cast<Trainer*>(trainer_.get());
    }

    Result<Trainer*> BindClientFlippedLabels(size_t client) override {
      if (client >= workload_->partition_.num_clients()) {
        return Status::InvalidArgument("client index " + std::to_string(client) + " out of range");
      }
      if (flipped_trainer_ == nullptr) {  // built on first use: honest runs never pay for it
        FL_ASSIGN_OR_RETURN(std::shared_ptr<const TensorImageData> flipped,
                            WithFlippedLabels(*workload_->train_));
        FL_ASSIGN_OR_RETURN(flipped_trainer_,
                            TorchTrainer::Create(workload_->options_, flipped, workload_->test_));
      }
      FL_RETURN_IF_ERROR(flipped_trainer_->BindExamples(workload_->partition_.Indices(client)));
      return static_cast<Trainer*>(flipped_trainer_.get());
    }

    Result<EvalStats> EvaluatePart(const ParamSet& params, size_t part, size_t num_parts) override {
      return EvaluateTrainerPart(*trainer_, params, part, num_parts);
    }

   private:
    const FashionMnistWorkload* workload_;
    std::unique_ptr<TorchTrainer> trainer_;
    std::unique_ptr<TorchTrainer> flipped_trainer_;  // label_flip attackers only
  };

  Status Load(const Config& config, const std::string& device, Env* env) {
    FL_RETURN_IF_ERROR(CheckNonNegative(config, "data.train_examples"));
    FL_RETURN_IF_ERROR(CheckNonNegative(config, "data.test_examples"));
    // Checked before the data is loaded, so a typo fails fast.
    Result<PartitionSpec> spec = ParsePartitionSpec(config.GetString("data.partition"));
    if (!spec.ok()) return spec.status().WithContext("data.partition");
    const std::string dir = config.GetString("data.dir");
    FL_ASSIGN_OR_RETURN(ImageDataset train, LoadMnistFormat(dir, DatasetSplit::kTrain, env));
    FL_ASSIGN_OR_RETURN(ImageDataset test, LoadMnistFormat(dir, DatasetSplit::kTest, env));
    Truncate(&train, config.GetInt("data.train_examples"));
    Truncate(&test, config.GetInt("data.test_examples"));
    FL_ASSIGN_OR_RETURN(partition_, PartitionFromConfig(config, train.labels));
    describe_ = std::to_string(partition_.num_clients()) + " clients (" +
                config.GetString("data.partition") + " over " + std::to_string(train.size()) +
                " images)";
    FL_ASSIGN_OR_RETURN(train_, MakeTensorImageData(train, device));
    FL_ASSIGN_OR_RETURN(test_, MakeTensorImageData(test, device));
    options_.model = config.GetString("model.name");
    options_.device = device;
    options_.init_seed = static_cast<uint64_t>(config.GetInt("run.seed"));
    return Status::Ok();
  }

  size_t num_clients() const override { return partition_.num_clients(); }
  uint64_t ClientSize(size_t client) const override { return partition_.size(client); }
  std::string Describe() const override { return describe_; }
  const WorkloadMetric& metric() const override { return metric_; }
  double MetricOf(const EvalStats& pooled) const override { return pooled.accuracy; }

  Result<ParamSet> InitialModel(const Config& config) const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<TorchTrainer> probe,
                        TorchTrainer::Create(options_, nullptr, nullptr));
    return InitialModelForLayout(config, probe->layout(), "(write one with `fl-sim export-model`)",
                                 Env::Default());
  }

  Result<std::unique_ptr<WorkloadWorker>> NewWorker() const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<TorchTrainer> trainer,
                        TorchTrainer::Create(options_, train_, test_));
    return std::unique_ptr<WorkloadWorker>(std::make_unique<Worker>(this, std::move(trainer)));
  }

 private:
  ClientShards partition_;
  std::string describe_;
  std::shared_ptr<const TensorImageData> train_;
  std::shared_ptr<const TensorImageData> test_;
  TorchTrainerOptions options_;
  WorkloadMetric metric_{"accuracy", "test accuracy", /*higher_is_better=*/true,
                         /*is_fraction=*/true};
};

}  // namespace

nlohmann::json WorkloadConfigDefaults() {
  return {
      {"data",
       {{"dataset", kFashionMnist},
        {"languages", "de,es,it"},
        {"heldout_fraction", 0.1},
        {"eval_bytes_per_client", 0},
        {"domains", "clean,inverted,rot90,noise,blur"},
        {"domains_per_client", 3}}},
      {"model", {{"tuning", "full"}, {"backbone", ""}, {"head_blocks", 0}, {"tail_blocks", 0}}},
      {"lm", {{"optimizer", "sgd"}, {"clip_norm", 0.0}, {"eval_batch_size", 32}}},
      {"pretrain",
       {{"languages", "en"},
        {"steps", 600},
        {"batch_size", 16},
        {"lr", 3e-3},
        {"optimizer", "adam"},
        {"schedule", "cosine"},
        {"warmup_steps", 30},
        {"clip_norm", 1.0},
        {"threads", 2},
        {"out", ""},
        // W3's SGD (vit_pretrain.h); epochs > 0 replaces steps.
        {"epochs", 0},
        {"momentum", 0.0},
        {"weight_decay", 0.0}}},
  };
}

std::string DescribeClients(const Config& config) {
  if (config.GetString("data.dataset") == kFortunes) {
    const int64_t n = config.GetInt("data.num_clients");
    const std::string langs = config.GetString("data.languages");
    return n > 0 ? std::to_string(n) + " clients (fortune files of " + langs + ")"
                 : "one client per fortune file of " + langs;
  }
  if (config.GetString("data.dataset") == kFashionMnistShift) {
    return std::to_string(config.GetInt("data.num_clients")) + " clients (" +
           config.GetString("data.partition") + ", " +
           std::to_string(config.GetInt("data.domains_per_client")) + " of " +
           config.GetString("data.domains") + " each, tuning " +
           config.GetString("model.tuning") + ")";
  }
  return std::to_string(config.GetInt("data.num_clients")) + " clients (" +
         config.GetString("data.partition") + ")";
}

Result<std::unique_ptr<Workload>> LoadWorkload(const Config& config, const std::string& device,
                                               Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string dataset = config.GetString("data.dataset");
  if (dataset == kFashionMnist) return LoadFashionMnistWorkload(config, device, env);
  if (dataset == kFortunes) return LoadFortunesWorkload(config, device, env);
  if (dataset == kFashionMnistShift) return LoadVitShiftWorkload(config, device, env);
  return Status::InvalidArgument("data.dataset: unknown dataset \"" + dataset + "\" (known: " +
                                 kFashionMnist + ", " + kFortunes + ", " + kFashionMnistShift +
                                 ")");
}

Result<std::unique_ptr<Workload>> LoadFashionMnistWorkload(const Config& config,
                                                           const std::string& device, Env* env) {
  auto workload = std::make_unique<FashionMnistWorkload>();
  FL_RETURN_IF_ERROR(workload->Load(config, device, env));
  return std::unique_ptr<Workload>(std::move(workload));
}

Result<ParamSet> InitialModelForLayout(const Config& config, const Layout& layout,
                                       const std::string& missing_hint, Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string file = config.GetString("model.init_file");
  const std::string name = config.GetString("model.name");
  if (file.empty()) {
    return InitialModelParameters(name, static_cast<uint64_t>(config.GetInt("run.seed")));
  }
  if (!env->FileExists(file)) {
    return Status::NotFound("model.init_file " + file + " does not exist " + missing_hint);
  }
  FL_ASSIGN_OR_RETURN(ParamSet initial, InitialModelFromConfig(config));
  if (initial.layout().hash() != layout.hash()) {
    return Status::InvalidArgument("model.init_file " + file + " does not hold a " + name +
                                   " model (" + std::to_string(initial.size()) +
                                   " parameters, expected " + std::to_string(layout.total_numel()) +
                                   ")");
  }
  return initial;
}

}  // namespace fl::internal
