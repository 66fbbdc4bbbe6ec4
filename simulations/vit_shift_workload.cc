#include "simulations/vit_shift_workload.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <optional>
#include <vector>

#include "codec/param_io.h"
#include "data/domain_shift.h"
#include "data/idx_reader.h"
#include "data/prediction_csv.h"
#include "data/shifted_split_config.h"
#include "torch/torch_trainer.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

constexpr char kBackboneHint[] =
    "(write it first with `fl-sim pretrain --preset fmnist-vit-shift --out FILE` and point "
    "model.backbone at it)";
// Predictions per call when the final report scores the test set.
constexpr int64_t kReportChunk = 1000;

// The first `n` examples (all if n is 0 or larger than the dataset).
void Truncate(ImageDataset* ds, int64_t n) {
  if (n <= 0 || n >= ds->size()) return;
  ds->images.resize(static_cast<size_t>(n * ds->rows * ds->cols));
  ds->labels.resize(static_cast<size_t>(n));
}

// ",entry_0,...,entry_<n-1>"
std::string EntryColumns(int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    out += ",entry_";
    out += std::to_string(i);
  }
  return out;
}

// What the final report tallies from the predictions on the test set.
struct DomainTally {
  std::vector<int64_t> examples, correct;
  std::vector<std::vector<int64_t>> selected;  // [domain][entry]
  std::string predictions;                     // predictions.csv
};

std::string PerDomainCsv(const std::vector<Domain>& domains, const DomainTally& t) {
  std::string csv = "domain,examples,accuracy\n";
  int64_t all = 0, all_correct = 0;
  char buf[128];
  for (size_t d = 0; d < domains.size(); ++d) {
    std::snprintf(buf, sizeof(buf), "%s,%lld,%.6f\n", std::string(DomainName(domains[d])).c_str(),
                  static_cast<long long>(t.examples[d]),
                  t.examples[d] > 0 ? static_cast<double>(t.correct[d]) / t.examples[d] : 0.0);
    csv += buf;
    all += t.examples[d];
    all_correct += t.correct[d];
  }
  std::snprintf(buf, sizeof(buf), "all,%lld,%.6f\n", static_cast<long long>(all),
                all > 0 ? static_cast<double>(all_correct) / all : 0.0);
  return csv + buf;
}

std::string SelectionCsv(const std::vector<Domain>& domains, const DomainTally& t,
                         int64_t entries) {
  std::string csv = "domain" + EntryColumns(entries) + "\n";
  for (size_t d = 0; d < domains.size(); ++d) {
    csv += DomainName(domains[d]);
    for (int64_t count : t.selected[d]) {
      csv += ',';
      csv += std::to_string(count);
    }
    csv += "\n";
  }
  return csv;
}

// W3: the shifted split's clients, a ViT tuned on a frozen pretrained backbone.
// The link a worker's sfprompt trainers open their split sessions through: the link of
// the client whose task the worker runs (WorkloadWorker::UseLink).
using LinkSlot = std::shared_ptr<std::atomic<ServerLink*>>;

class VitShiftWorkload final : public Workload {
 public:
  class Worker final : public WorkloadWorker {
   public:
    Worker(const VitShiftWorkload* workload, std::unique_ptr<VitTrainer> trainer, LinkSlot link)
        : workload_(workload), trainer_(std::move(trainer)), link_(std::move(link)) {}

    void UseLink(ServerLink* link) override { link_->store(link); }

    Result<Trainer*> BindClient(size_t client) override {
      FL_RETURN_IF_ERROR(workload_->CheckClient(client));
      FL_RETURN_IF_ERROR(trainer_->BindExamples(workload_->split_.clients[client]));
      return static_cast<Trainer*>(trainer_.get());
    }

    Result<Trainer*> BindClientFlippedLabels(size_t client) override {
      FL_RETURN_IF_ERROR(workload_->CheckClient(client));
      if (flipped_trainer_ == nullptr) {  // built on first use: honest runs never pay for it
        FL_ASSIGN_OR_RETURN(std::shared_ptr<const TensorImageData> flipped,
                            WithFlippedLabels(*workload_->train_));
        FL_ASSIGN_OR_RETURN(flipped_trainer_,
                            workload_->NewTrainer(flipped, workload_->test_, link_));
      }
      FL_RETURN_IF_ERROR(flipped_trainer_->BindExamples(workload_->split_.clients[client]));
      return static_cast<Trainer*>(flipped_trainer_.get());
    }

    Result<EvalStats> EvaluatePart(const ParamSet& params, size_t part, size_t num_parts) override {
      return EvaluateTrainerPart(*trainer_, params, part, num_parts);
    }

   private:
    const VitShiftWorkload* workload_;
    std::unique_ptr<VitTrainer> trainer_;
    std::unique_ptr<VitTrainer> flipped_trainer_;  // label_flip attackers only
    LinkSlot link_;
  };

  Status Load(const Config& config, const std::string& device, Env* env) {
    // Options and the backbone first: a typo or a missing checkpoint fails before the
    // data is read and shifted.
    FL_ASSIGN_OR_RETURN(options_, VitTrainerOptionsFromConfig(config, device));
    FL_ASSIGN_OR_RETURN(backbone_, ReadVitBackbone(config, options_.vit));
    const std::string dir = config.GetString("data.dir");
    FL_ASSIGN_OR_RETURN(ImageDataset train, LoadMnistFormat(dir, DatasetSplit::kTrain, env));
    FL_ASSIGN_OR_RETURN(ShiftedSplitOptions split_options,
                        ShiftedSplitOptionsFromConfig(config, train.size()));
    FL_ASSIGN_OR_RETURN(split_, BuildShiftedSplit(train, split_options));
    FL_ASSIGN_OR_RETURN(ShiftedTestSet test, LoadShiftedTestSet(config, env));
    domains_ = split_options.domains;
    test_domain_ = std::move(test.domain);
    test_labels_ = test.images.labels;
    FL_ASSIGN_OR_RETURN(train_, MakeTensorImageData(split_.images, device));
    FL_ASSIGN_OR_RETURN(test_, MakeTensorImageData(test.images, device));
    describe_ =
        std::to_string(split_.clients.size()) + " clients (" + config.GetString("data.partition") +
        " over train images " + std::to_string(split_options.begin) + "-" +
        std::to_string(split_options.begin + split_.images.size() - 1) + ", " +
        std::to_string(split_options.domains_per_client) + " of " + DomainListToString(domains_) +
        " each; tuning " + VitTuningName(options_.tuning) + ")";
    return Status::Ok();
  }

  size_t num_clients() const override { return split_.clients.size(); }
  uint64_t ClientSize(size_t client) const override { return split_.clients[client].size(); }
  std::string Describe() const override { return describe_; }
  const WorkloadMetric& metric() const override { return metric_; }
  double MetricOf(const EvalStats& pooled) const override { return pooled.accuracy; }

  Result<ParamSet> InitialModel(const Config& config) const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<VitTrainer> probe, NewTrainer(nullptr, nullptr));
    if (!config.GetString("model.init_file").empty()) {
      return InitialModelForLayout(config, probe->layout(), "", Env::Default());
    }
    ParamSet initial;
    FL_RETURN_IF_ERROR(probe->GetParameters(&initial));
    return initial;
  }

  Result<std::unique_ptr<WorkloadWorker>> NewWorker() const override {
    auto link = std::make_shared<std::atomic<ServerLink*>>(nullptr);
    FL_ASSIGN_OR_RETURN(std::unique_ptr<VitTrainer> trainer, NewTrainer(train_, test_, link));
    return std::unique_ptr<WorkloadWorker>(
        std::make_unique<Worker>(this, std::move(trainer), std::move(link)));
  }

  std::optional<SplitBodySpec> SplitBody() const override {
    if (options_.tuning != VitTuning::kPrompt) return std::nullopt;
    SplitBodySpec spec;
    spec.body.vit = options_.vit;
    spec.body.begin = options_.sfprompt.head_blocks;
    spec.body.end = options_.vit.depth - options_.sfprompt.tail_blocks;
    spec.body.device = options_.device;
    spec.body.init_seed = options_.init_seed;
    spec.backbone = &backbone_;
    return spec;
  }

  Status WriteFinalReport(const ParamSet& global, const std::string& out_dir,
                          Env* env) const override {
    FL_ASSIGN_OR_RETURN(DomainTally tally, TallyTestSet(global));
    FL_RETURN_IF_ERROR(
        env->WriteFileAtomic(out_dir + "/" + kPerDomainCsv, PerDomainCsv(domains_, tally), false));
    FL_RETURN_IF_ERROR(
        env->WriteFileAtomic(out_dir + "/" + kPredictionsCsv, tally.predictions, false));
    // The model file format of WriteModelFile, through the run's Env.
    FL_RETURN_IF_ERROR(
        env->WriteFileAtomic(out_dir + "/" + kFinalModelFile, SerializeParamSet(global), false));
    const std::string selection = out_dir + "/" + kSelectionCsv;
    if (options_.tuning != VitTuning::kSsfPool) {
      // A fedins run earlier in the same directory must not leave its table behind.
      if (env->FileExists(selection)) return env->DeleteFile(selection);
      return Status::Ok();
    }
    return env->WriteFileAtomic(selection, SelectionCsv(domains_, tally, options_.pool.entries),
                                false);
  }

 private:
  Status CheckClient(size_t client) const {
    if (client < split_.clients.size()) return Status::Ok();
    return Status::InvalidArgument("client index " + std::to_string(client) + " out of range");
  }

  // `link`: where tuning sfprompt opens its split sessions (null: nowhere; the trainer
  // then only evaluates).
  Result<std::unique_ptr<VitTrainer>> NewTrainer(std::shared_ptr<const TensorImageData> train,
                                                 std::shared_ptr<const TensorImageData> eval,
                                                 LinkSlot link = nullptr) const {
    VitTrainerOptions options = options_;
    if (link != nullptr) {
      options.sfprompt.open_split_session =
          [link](const SplitSessionOptions& o) -> Result<std::unique_ptr<SplitSession>> {
        ServerLink* to = link->load();
        if (to == nullptr) return Status::FailedPrecondition("no client link for a split session");
        return to->OpenSplitSession(o);
      };
    }
    return VitTrainer::Create(options, &backbone_, std::move(train), std::move(eval));
  }

  // Scores `global` on the whole test set, image by image, by domain.
  Result<DomainTally> TallyTestSet(const ParamSet& global) const {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<VitTrainer> trainer, NewTrainer(nullptr, test_));
    FL_RETURN_IF_ERROR(trainer->SetParameters(global));
    DomainTally t;
    t.examples.assign(domains_.size(), 0);
    t.correct.assign(domains_.size(), 0);
    t.selected.assign(domains_.size(), std::vector<int64_t>(options_.pool.entries, 0));
    t.predictions = kPredictionCsvHeader;
    const int64_t n = trainer->eval_size();
    for (int64_t begin = 0; begin < n; begin += kReportChunk) {
      const int64_t end = std::min(n, begin + kReportChunk);
      FL_ASSIGN_OR_RETURN(std::vector<VitPrediction> predictions,
                          trainer->PredictEvalRange(begin, end));
      for (int64_t i = begin; i < end; ++i) {
        const VitPrediction& p = predictions[i - begin];
        const size_t d = DomainIndex(test_domain_[i]);
        ++t.examples[d];
        t.correct[d] += p.label == test_labels_[i] ? 1 : 0;
        for (int32_t e : p.entries) {
          if (e >= 0 && e < options_.pool.entries) ++t.selected[d][e];
        }
        AppendPredictionRow(i, p.label, p.entries, &t.predictions);
      }
    }
    return t;
  }

  size_t DomainIndex(Domain d) const {
    return static_cast<size_t>(std::find(domains_.begin(), domains_.end(), d) - domains_.begin());
  }

  VitTrainerOptions options_;
  ParamSet backbone_;
  ShiftedSplit split_;
  std::vector<Domain> domains_;
  std::vector<Domain> test_domain_;
  std::vector<uint8_t> test_labels_;
  std::shared_ptr<const TensorImageData> train_;
  std::shared_ptr<const TensorImageData> test_;
  std::string describe_;
  WorkloadMetric metric_{"accuracy", "test accuracy", /*higher_is_better=*/true,
                         /*is_fraction=*/true};
};

}  // namespace

Result<VitTrainerOptions> VitTrainerOptionsFromConfig(const Config& config,
                                                      const std::string& device) {
  VitTrainerOptions o;
  Result<VitOptions> vit = ParseVitModelName(config.GetString("model.name"));
  if (!vit.ok()) {
    return Status::InvalidArgument("model.name: data.dataset " + std::string(kFashionMnistShift) +
                                   " needs a ViT (" + vit.status().message() + ")");
  }
  o.vit = *vit;
  Result<VitTuning> tuning = ParseVitTuning(config.GetString("model.tuning"));
  if (!tuning.ok()) return tuning.status().WithContext("model.tuning");
  o.tuning = *tuning;
  if (config.GetString("algorithm.name") == "fedins" && o.tuning != VitTuning::kSsfPool) {
    return Status::InvalidArgument(
        "algorithm fedins trains FedIns's SSF pool: set model.tuning=fedins (got " +
        config.GetString("model.tuning") +
        "); the head, ssf and full baselines run with "
        "algorithm.name=fedavg");
  }
  const bool sfprompt = config.GetString("algorithm.name") == "sfprompt";
  if (sfprompt != (o.tuning == VitTuning::kPrompt)) {
    return Status::InvalidArgument(
        "model.tuning=sfprompt and algorithm.name=sfprompt go together (got tuning " +
        config.GetString("model.tuning") + ", algorithm " + config.GetString("algorithm.name") +
        ")");
  }
  o.sfprompt.head_blocks = config.GetInt("model.head_blocks");
  o.sfprompt.tail_blocks = config.GetInt("model.tail_blocks");
  // The fedins algorithm declares these keys; other algorithms keep the pool's defaults.
  if (config.Has("fedins.entries")) o.pool.entries = config.GetInt("fedins.entries");
  if (config.Has("fedins.top_k")) o.pool.top_k = config.GetInt("fedins.top_k");
  if (config.Has("fedins.lambda")) o.pool.lambda = config.GetDouble("fedins.lambda");
  if (config.Has("fedins.batch_shared_ssf")) {
    o.pool.batch_shared_ssf = config.GetBool("fedins.batch_shared_ssf");
  }
  o.device = device;
  o.init_seed = static_cast<uint64_t>(config.GetInt("run.seed"));
  return o;
}

Result<ParamSet> ReadVitBackbone(const Config& config, const VitOptions& vit) {
  const std::string path = config.GetString("model.backbone");
  if (path.empty()) {
    return Status::InvalidArgument("model.backbone is empty; W3 fine-tunes a pretrained ViT " +
                                   std::string(kBackboneHint));
  }
  Result<ParamSet> backbone = ReadVitBackbone(path, vit, config.GetString("model.name"));
  if (backbone.status().code() == StatusCode::kNotFound) {
    return Status::NotFound("model.backbone " + path + " does not exist " + kBackboneHint);
  }
  if (backbone.status().code() == StatusCode::kInvalidArgument) {
    return Status::InvalidArgument("model.backbone " + backbone.status().message() +
                                   "; pretrain it with the same model.name");
  }
  if (!backbone.ok()) return backbone.status().WithContext("model.backbone " + path);
  return backbone;
}

Result<ShiftedTestSet> LoadShiftedTestSet(const Config& config, Env* env) {
  FL_ASSIGN_OR_RETURN(std::vector<Domain> domains, DomainsFromConfig(config));
  FL_ASSIGN_OR_RETURN(ImageDataset test, LoadCleanTestSet(config, env));
  return BuildShiftedTestSet(test, domains, kTestShiftSeed);
}

Result<ImageDataset> LoadCleanTestSet(const Config& config, Env* env) {
  const int64_t limit = config.GetInt("data.test_examples");
  if (limit < 0) return Status::InvalidArgument("config key data.test_examples must be >= 0");
  FL_ASSIGN_OR_RETURN(ImageDataset test,
                      LoadMnistFormat(config.GetString("data.dir"), DatasetSplit::kTest, env));
  Truncate(&test, limit);
  return test;
}

Result<std::unique_ptr<Workload>> LoadVitShiftWorkload(const Config& config,
                                                       const std::string& device, Env* env) {
  auto workload = std::make_unique<VitShiftWorkload>();
  FL_RETURN_IF_ERROR(workload->Load(config, device, env));
  return std::unique_ptr<Workload>(std::move(workload));
}

}  // namespace fl::internal
