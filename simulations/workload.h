#ifndef FL_SIMULATIONS_WORKLOAD_H_
#define FL_SIMULATIONS_WORKLOAD_H_

// What fl-sim trains and measures, behind one interface so that the engine
// (sim_run.cc) knows nothing of images or text: the clients' local data, the model,
// one trainer per worker thread and the evaluation of a global model. data.dataset picks
// the workload:
//   "fashion-mnist" (W1 fmnist-cnn): the training images partitioned among
//       data.num_clients clients by data.partition; metric: test accuracy.
//   "fortunes" (W2 fortunes-gpt): one client per fortune file of data.languages, each
//       with a fixed held-out slice; metric: held-out bits per byte over all files.
//   "fashion-mnist-shift" (W3 fmnist-vit-shift, vit_shift_workload.h): clients holding
//       a mix of domain-shifted images; a ViT tuned on a pretrained backbone; metric:
//       accuracy on the shifted test images.
//
// LibTorch stays out of this header (fl_torch's torch-free headers only).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "fl/env.h"
#include "fl/param_set.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/trainer.h"
#include "torch/split_body.h"

namespace fl::internal {

// How a workload's per-round metric is named and shown.
struct WorkloadMetric {
  std::string name;   // metrics.csv/jsonl column: "accuracy", "bits_per_byte"
  std::string label;  // plot axis and progress line: "test accuracy", ...
  bool higher_is_better = true;
  bool is_fraction = true;  // in [0, 1], shown in percent
};

// The state one worker thread needs: a trainer and whatever binds it to a client.
// Thread-compatible: used by one thread at a time.
class WorkloadWorker {
 public:
  virtual ~WorkloadWorker() = default;
  // Points the worker's trainer at `client`'s local data and returns it. The trainer is
  // owned by the worker and stays bound until the next call. InvalidArgument for a client
  // index out of range.
  virtual Result<Trainer*> BindClient(size_t client) = 0;
  // Like BindClient, on `client`'s examples with every label y replaced by
  // (classes - 1 - y): the data of a label-flipping Byzantine client (byzantine.h).
  // Unimplemented for workloads without class labels.
  virtual Result<Trainer*> BindClientFlippedLabels(size_t client) {
    return Status::Unimplemented("byzantine.attack label_flip: this workload has no class labels");
  }
  // The link of the client whose task runs next on this worker: split learning
  // (Workload::SplitBody) opens its sessions with the server's body through it. The
  // default ignores it.
  virtual void UseLink(ServerLink* link) {}
  // Evaluates `params` on part `part` of `num_parts` of the evaluation set (the parts
  // are disjoint and cover it; EvalStats::num_examples weighs them when pooled).
  // REQUIRES: part < num_parts.
  virtual Result<EvalStats> EvaluatePart(const ParamSet& params, size_t part, size_t num_parts) = 0;
};

// A loaded workload. Immutable once loaded: its const methods and NewWorker may be
// called from any thread, and the workers share its data.
class Workload {
 public:
  virtual ~Workload() = default;
  virtual size_t num_clients() const = 0;
  // The size of a client's local data (images, training bytes); the engine starts the
  // largest clients of a round first. REQUIRES: client < num_clients().
  virtual uint64_t ClientSize(size_t client) const = 0;
  // One line for logs, e.g. "84 clients: one per fortune file (de,es,it), 4.9 MB".
  virtual std::string Describe() const = 0;
  virtual const WorkloadMetric& metric() const = 0;
  // The metric of evaluation stats pooled over all parts.
  virtual double MetricOf(const EvalStats& pooled) const = 0;
  // The initial global model: model.init_file if set (checked against the model's
  // layout), else model.name initialized from run.seed. NotFound/DataLoss/
  // InvalidArgument from the file, naming how to produce it where the workload knows.
  virtual Result<ParamSet> InitialModel(const Config& config) const = 0;
  // A worker with its own model replica on the workload's device.
  virtual Result<std::unique_ptr<WorkloadWorker>> NewWorker() const = 0;
  // Called once after the run's last evaluation with the model it scored: writes
  // whatever finer report the workload has (e.g. accuracy per domain) into `out_dir`.
  // The default writes nothing. Errors fail the run.
  virtual Status WriteFinalReport(const ParamSet& global, const std::string& out_dir,
                                  Env* env) const {
    return Status::Ok();
  }
  // Split learning (SFPrompt): the frozen body the coordinator's side serves to this
  // workload's trainers, with its weights (owned by the workload); nullopt when the
  // trainers need no body (the default).
  struct SplitBodySpec {
    SplitBodyOptions body;
    const ParamSet* backbone = nullptr;
  };
  virtual std::optional<SplitBodySpec> SplitBody() const { return std::nullopt; }
};

// The workload keys beyond the algorithm/coordinator ones, with defaults:
//   data:     dataset ("fashion-mnist" | "fortunes" | "fashion-mnist-shift"), languages,
//             heldout_fraction, eval_bytes_per_client (0 = the whole held-out slice),
//             domains, domains_per_client (W3)
//   model:    tuning, backbone, head_blocks, tail_blocks (W3, vit_shift_workload.h)
//   lm:       optimizer (sgd|adam), clip_norm, eval_batch_size: the language-model
//             trainer's defaults where a task's TrainConfig::extra says nothing
//   pretrain: `fl-sim pretrain` (see fortunes_workload.h and vit_pretrain.h)
// The "data" keys shared with fashion-mnist (dir, num_clients, ...) come from
// SimulatorConfigDefaults().
nlohmann::json WorkloadConfigDefaults();

// A one-line description of the clients from the config alone (before any data is
// read), for the run summary: "100 clients (dirichlet:0.5)" or "one client per fortune
// file in de,es,it".
std::string DescribeClients(const Config& config);

// Loads data.dataset's data from data.dir and prepares it on `device` (a resolved
// device, see ResolveTorchDevice). InvalidArgument for bad config values (an unknown
// dataset lists the known ones); NotFound naming the Debian package for missing data;
// DataLoss for corrupt files.
Result<std::unique_ptr<Workload>> LoadWorkload(const Config& config, const std::string& device,
                                               Env* env);

// The implementations LoadWorkload picks from.
Result<std::unique_ptr<Workload>> LoadFashionMnistWorkload(const Config& config,
                                                           const std::string& device, Env* env);
Result<std::unique_ptr<Workload>> LoadFortunesWorkload(const Config& config,
                                                       const std::string& device, Env* env);

// Shared by the image workloads: sets `params` on `trainer` (a TorchTrainer or VitTrainer)
// and evaluates part `part` of `num_parts` of its eval set, as EvaluatePart describes.
template <typename ImageTrainer>
Result<EvalStats> EvaluateTrainerPart(ImageTrainer& trainer, const ParamSet& params, size_t part,
                                      size_t num_parts) {
  FL_RETURN_IF_ERROR(trainer.SetParameters(params));
  const int64_t n = trainer.eval_size();
  const int64_t k = static_cast<int64_t>(part), parts = static_cast<int64_t>(num_parts);
  return trainer.EvaluateRange(n * k / parts, n * (k + 1) / parts);
}

// Shared by the implementations: the initial model as Workload::InitialModel describes,
// checked against `layout`. `missing_hint` is appended to the NotFound of a missing
// init_file (e.g. the command that writes it).
Result<ParamSet> InitialModelForLayout(const Config& config, const Layout& layout,
                                       const std::string& missing_hint, Env* env);

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_WORKLOAD_H_
