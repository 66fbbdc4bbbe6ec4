#include "simulations/fortunes_workload.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "codec/param_io.h"
#include "rng/splitmix64.h"
#include "simulations/workload.h"
#include "torch/lm_trainer.h"
#include "torch/model_zoo.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kPretrainHint[] =
    "(write it first with `fl-sim pretrain --preset fortunes-gpt --out FILE`, or set "
    "model.init_file to \"\" to start from a random model)";

std::string Megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

Status CheckInRange(const Config& config, const char* key, double lo, double hi) {
  const double v = config.GetDouble(key);
  if (!(v >= lo && v <= hi)) {
    return Status::InvalidArgument("config key " + std::string(key) + " must be in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                                   std::to_string(v) + ")");
  }
  return Status::Ok();
}

Result<FortuneCorpus> LoadCorpus(const Config& config, const char* languages_key, Env* env) {
  Result<std::vector<std::string>> languages = ParseLanguageList(config.GetString(languages_key));
  if (!languages.ok()) return languages.status().WithContext(languages_key);
  const double fraction = config.GetDouble("data.heldout_fraction");
  if (!(fraction > 0 && fraction < 1)) {
    return Status::InvalidArgument("config key data.heldout_fraction must be in (0, 1) (got " +
                                   std::to_string(fraction) + ")");
  }
  return LoadFortuneCorpus(config.GetString("data.dir"), *languages, fraction, env);
}

// The trainer options of model.name / lm.* on `device`; InvalidArgument for a model that
// is not a GPT or a bad lm.* value.
Result<LmTrainerOptions> TrainerOptions(const Config& config, const std::string& device) {
  LmTrainerOptions o;
  o.model = config.GetString("model.name");
  Result<GptOptions> gpt = ParseGptModelName(o.model);
  if (!gpt.ok()) {
    return Status::InvalidArgument("model.name: data.dataset fortunes needs a GPT (" +
                                   gpt.status().message() + ")");
  }
  o.device = device;
  o.init_seed = static_cast<uint64_t>(config.GetInt("run.seed"));
  Result<LmOptimizer> optimizer = ParseLmOptimizer(config.GetString("lm.optimizer"));
  if (!optimizer.ok()) return optimizer.status().WithContext("lm.optimizer");
  o.optimizer = *optimizer;
  FL_RETURN_IF_ERROR(CheckInRange(config, "lm.clip_norm", 0, 1e9));
  o.clip_norm = config.GetDouble("lm.clip_norm");
  const int64_t eval_batch = config.GetInt("lm.eval_batch_size");
  if (eval_batch < 1 || eval_batch > 4096) {
    return Status::InvalidArgument("config key lm.eval_batch_size must be in [1, 4096]");
  }
  o.eval_batch_size = static_cast<int>(eval_batch);
  return o;
}

Result<uint64_t> EvalBytesPerFile(const Config& config) {
  const int64_t v = config.GetInt("data.eval_bytes_per_client");
  if (v < 0) return Status::InvalidArgument("config key data.eval_bytes_per_client must be >= 0");
  return static_cast<uint64_t>(v);
}

class FortunesWorkload final : public Workload {
 public:
  class Worker final : public WorkloadWorker {
   public:
    Worker(const FortunesWorkload* workload, std::unique_ptr<LmTrainer> trainer)
        : workload_(workload), trainer_(std::move(trainer)) {}

    Result<Trainer*> BindClient(size_t client) override {
      if (client >= workload_->corpus_.files.size()) {
        return Status::InvalidArgument("client index " + std::to_string(client) + " out of range");
      }
      const FortuneFile& f = workload_->corpus_.files[client];
      trainer_->BindText(f.train_bytes(), {f.heldout_bytes()});
      return static_cast<Trainer*>(trainer_.get());
    }

    Result<EvalStats> EvaluatePart(const ParamSet& params, size_t part, size_t num_parts) override {
      FL_RETURN_IF_ERROR(trainer_->SetParameters(params));
      const std::vector<std::string_view>& w = workload_->eval_windows_;
      const size_t begin = w.size() * part / num_parts, end = w.size() * (part + 1) / num_parts;
      return trainer_->EvaluateTexts(
          std::vector<std::string_view>(w.begin() + begin, w.begin() + end));
    }

   private:
    const FortunesWorkload* workload_;
    std::unique_ptr<LmTrainer> trainer_;
  };

  Status Load(const Config& config, const std::string& device, Env* env) {
    FL_ASSIGN_OR_RETURN(options_, TrainerOptions(config, device));
    FL_ASSIGN_OR_RETURN(uint64_t eval_bytes, EvalBytesPerFile(config));
    const int64_t wanted = config.GetInt("data.num_clients");
    if (wanted < 0) return Status::InvalidArgument("config key data.num_clients must be >= 0");
    FL_ASSIGN_OR_RETURN(corpus_, LoadCorpus(config, "data.languages", env));
    const size_t available = corpus_.files.size();
    if (wanted > static_cast<int64_t>(available)) {
      return Status::InvalidArgument("data.num_clients is " + std::to_string(wanted) + " but " +
                                     config.GetString("data.languages") + " has " +
                                     std::to_string(available) + " usable fortune files");
    }
    if (wanted > 0) {
      // Spread over the sorted list, so a cut-down run still mixes the languages.
      std::vector<FortuneFile> chosen;
      for (int64_t i = 0; i < wanted; ++i) {
        chosen.push_back(std::move(
            corpus_.files[static_cast<size_t>(i) * available / static_cast<size_t>(wanted)]));
      }
      corpus_.files = std::move(chosen);
    }
    FL_ASSIGN_OR_RETURN(GptOptions gpt, ParseGptModelName(options_.model));
    eval_windows_ = HeldoutEvalWindows(corpus_, eval_bytes, gpt.context);
    uint64_t evaluated = 0;
    for (std::string_view w : eval_windows_) evaluated += w.size() - 1;
    describe_ = std::to_string(corpus_.files.size()) + " clients, one per fortune file of " +
                config.GetString("data.languages") + " (" + Megabytes(corpus_.TrainBytes()) +
                " training, " + Megabytes(corpus_.HeldoutBytes()) + " held-out, " +
                std::to_string(evaluated) + " bytes evaluated per round";
    if (!corpus_.skipped.empty()) {
      describe_ += "; " + std::to_string(corpus_.skipped.size()) + " single-entry files skipped";
    }
    describe_ += ")";
    return Status::Ok();
  }

  size_t num_clients() const override { return corpus_.files.size(); }
  uint64_t ClientSize(size_t client) const override {
    return corpus_.files[client].train_bytes().size();
  }
  std::string Describe() const override { return describe_; }
  const WorkloadMetric& metric() const override { return metric_; }
  double MetricOf(const EvalStats& pooled) const override { return pooled.loss / kLn2; }

  Result<ParamSet> InitialModel(const Config& config) const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<LmTrainer> probe, LmTrainer::Create(options_));
    return InitialModelForLayout(config, probe->layout(), kPretrainHint, Env::Default());
  }

  Result<std::unique_ptr<WorkloadWorker>> NewWorker() const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<LmTrainer> trainer, LmTrainer::Create(options_));
    return std::unique_ptr<WorkloadWorker>(std::make_unique<Worker>(this, std::move(trainer)));
  }

 private:
  LmTrainerOptions options_;
  FortuneCorpus corpus_;
  std::vector<std::string_view> eval_windows_;  // into corpus_
  std::string describe_;
  WorkloadMetric metric_{"bits_per_byte", "held-out bits per byte", /*higher_is_better=*/false,
                         /*is_fraction=*/false};
};

}  // namespace

std::vector<std::string_view> HeldoutEvalWindows(const FortuneCorpus& corpus,
                                                 uint64_t bytes_per_file, int64_t context) {
  std::vector<std::string_view> windows;
  const size_t step = static_cast<size_t>(std::max<int64_t>(context, 1));
  for (const FortuneFile& f : corpus.files) {
    std::string_view text = f.heldout_bytes();
    if (bytes_per_file > 0 && text.size() > bytes_per_file) text = text.substr(0, bytes_per_file);
    for (size_t begin = 0; begin + 1 < text.size(); begin += step) {
      windows.push_back(text.substr(begin, step + 1));
    }
  }
  return windows;
}

Result<std::unique_ptr<Workload>> LoadFortunesWorkload(const Config& config,
                                                       const std::string& device, Env* env) {
  auto workload = std::make_unique<FortunesWorkload>();
  FL_RETURN_IF_ERROR(workload->Load(config, device, env));
  return std::unique_ptr<Workload>(std::move(workload));
}

Result<PretrainReport> PretrainLanguageModel(
    const Config& config, const std::function<void(const PretrainProgress&)>& progress, Env* env) {
  if (env == nullptr) env = Env::Default();
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  PretrainReport report;
  report.out = config.GetString("pretrain.out");
  if (report.out.empty()) report.out = config.GetString("model.init_file");
  if (report.out.empty()) {
    return Status::InvalidArgument(
        "no output file: give --out FILE (pretrain.out) or model.init_file");
  }
  const int64_t steps = config.GetInt("pretrain.steps");
  const int64_t batch = config.GetInt("pretrain.batch_size");
  const int64_t threads = config.GetInt("pretrain.threads");
  const int64_t warmup = config.GetInt("pretrain.warmup_steps");
  if (steps < 1) return Status::InvalidArgument("config key pretrain.steps must be >= 1");
  if (batch < 1 || batch > 1 << 16) {
    return Status::InvalidArgument("config key pretrain.batch_size must be in [1, 65536]");
  }
  if (threads < 1 || threads > 1024) {
    return Status::InvalidArgument("config key pretrain.threads must be in [1, 1024]");
  }
  if (warmup < 0) return Status::InvalidArgument("config key pretrain.warmup_steps must be >= 0");
  const double lr = config.GetDouble("pretrain.lr");
  if (!(std::isfinite(lr) && lr > 0)) {
    return Status::InvalidArgument("config key pretrain.lr must be > 0");
  }
  FL_RETURN_IF_ERROR(CheckInRange(config, "pretrain.clip_norm", 0, 1e9));
  Result<LmOptimizer> optimizer = ParseLmOptimizer(config.GetString("pretrain.optimizer"));
  if (!optimizer.ok()) return optimizer.status().WithContext("pretrain.optimizer");
  Result<LmSchedule> schedule = ParseLmSchedule(config.GetString("pretrain.schedule"));
  if (!schedule.ok()) return schedule.status().WithContext("pretrain.schedule");
  FL_ASSIGN_OR_RETURN(std::string device, ResolveTorchDevice(config.GetString("sim.device")));
  FL_ASSIGN_OR_RETURN(LmTrainerOptions options, TrainerOptions(config, device));
  FL_ASSIGN_OR_RETURN(uint64_t eval_bytes, EvalBytesPerFile(config));
  FL_ASSIGN_OR_RETURN(GptOptions gpt, ParseGptModelName(options.model));

  FL_ASSIGN_OR_RETURN(FortuneCorpus source, LoadCorpus(config, "pretrain.languages", env));
  FL_ASSIGN_OR_RETURN(FortuneCorpus target, LoadCorpus(config, "data.languages", env));
  std::string text;
  text.reserve(source.TrainBytes());
  for (const FortuneFile& f : source.files) text.append(f.train_bytes());
  const std::vector<std::string_view> source_eval =
      HeldoutEvalWindows(source, eval_bytes, gpt.context);
  const std::vector<std::string_view> target_eval =
      HeldoutEvalWindows(target, eval_bytes, gpt.context);

  SetTorchThreads(static_cast<int>(threads));
  FL_ASSIGN_OR_RETURN(std::unique_ptr<LmTrainer> trainer, LmTrainer::Create(options));
  trainer->BindText(text, {});
  report.model = options.model;
  report.num_parameters = trainer->layout().total_numel();
  report.steps = steps;
  report.train_bytes = text.size();

  auto evaluate = [&](const std::vector<std::string_view>& windows,
                      const std::string& what) -> Result<EvalStats> {
    if (progress) {
      PretrainProgress p;
      p.steps = steps;
      p.elapsed_seconds = elapsed();
      p.phase = what;
      progress(p);
    }
    return trainer->EvaluateTexts(windows);
  };
  FL_ASSIGN_OR_RETURN(report.source_before,
                      evaluate(source_eval, "evaluating the untrained model (" +
                                                config.GetString("pretrain.languages") + ")"));
  FL_ASSIGN_OR_RETURN(report.target_before,
                      evaluate(target_eval, "evaluating the untrained model (" +
                                                config.GetString("data.languages") + ")"));

  const auto train_start = std::chrono::steady_clock::now();
  trainer->set_step_callback([&](int64_t step, double loss) {
    if (!progress) return;
    PretrainProgress p;
    p.step = step + 1;
    p.steps = steps;
    p.loss = loss;
    p.elapsed_seconds = elapsed();
    p.phase = "train";
    progress(p);
  });
  TrainConfig tc;
  tc.local_steps = static_cast<int>(steps);
  tc.batch_size = static_cast<int>(batch);
  tc.lr = lr;
  // Its own stream: the same run seed also initializes the weights.
  tc.seed = static_cast<uint64_t>(config.GetInt("run.seed")) * kGoldenGamma64 + 1;
  tc.extra["optimizer"] = static_cast<int>(*optimizer);
  tc.extra["clip_norm"] = config.GetDouble("pretrain.clip_norm");
  tc.extra["lr_schedule"] = static_cast<int>(*schedule);
  tc.extra["warmup_steps"] = warmup;
  CancelToken never;
  FL_ASSIGN_OR_RETURN(TrainStats stats, trainer->Train(tc, never));
  trainer->set_step_callback(nullptr);
  report.trained_bytes = stats.num_examples;
  report.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();

  FL_ASSIGN_OR_RETURN(report.source_after,
                      evaluate(source_eval, "evaluating the pretrained model (" +
                                                config.GetString("pretrain.languages") + ")"));
  FL_ASSIGN_OR_RETURN(report.target_after,
                      evaluate(target_eval, "evaluating the pretrained model (" +
                                                config.GetString("data.languages") + ")"));
  ParamSet params;
  FL_RETURN_IF_ERROR(trainer->GetParameters(&params));
  if (!params.AllFinite()) {
    return Status::FailedPrecondition(
        "pretraining diverged (non-finite parameters); lower pretrain.lr");
  }
  const size_t slash = report.out.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    FL_RETURN_IF_ERROR(env->CreateDirs(report.out.substr(0, slash)));
  }
  FL_RETURN_IF_ERROR(env->WriteFileAtomic(report.out, SerializeParamSet(params), /*sync=*/true));
  report.total_seconds = elapsed();
  return report;
}

}  // namespace fl::internal
