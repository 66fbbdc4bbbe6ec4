// fl-client: trains one of the SDK's built-in LibTorch models on a Fashion-MNIST shard
// as a member of an fl-server federation, and predicts with a federated tiny ViT.
//
//   fl-client --server host:port --tls-ca ca.pem --enrollment-token TOKEN
//             --num-partitions 100 --partition-index 3 [--config client.yaml]
//
// The shard is exactly the one fl-sim's virtual client "client-<i>" holds when
// data.partition, data.num_partitions, data.seed and data.train_examples equal fl-sim's
// data.partition, data.num_clients, run.seed and data.train_examples: both call the
// same partitioner. The client name defaults to "client-<partition_index>" for the same
// reason (the coordinator derives training seeds from it).
//
// W3 `fmnist-vit-shift` (client/vit_shift_client.h): with --dataset fashion-mnist-shift
// and a ViT --model, the shard is fl-sim's W3 client i (same domains, same shifts) and
// fl-client fine-tunes --tuning (fedins: an SSF pool of fedins.entries) on the frozen
// backbone file --backbone, which is provisioned with the client (sfprompt: prompts and
// tail trained against fl-server's body over a SplitStep stream per task, --model
// vit:prompts=N, --tail-blocks as the server's --split-cut):
//
//   fl-client --server host:port --tls-ca ca.pem --enrollment-token TOKEN
//             --dataset fashion-mnist-shift --model vit-tiny --tuning fedins
//             --backbone vit-backbone.flps --num-partitions 10 --partition-index 3
//
// `fl-client predict` (client/predict_command.h) writes predictions for an IDX images
// file through fl::AdaptivePredictor:
//
//   fl-client predict --backbone vit-backbone.flps --model final_model.flps
//                     --images t10k-images-idx3-ubyte.gz --shifted-test --out p.csv
//
// Exit status: 0 when the federation finished (or on SIGINT/SIGTERM), 2 for a bad
// command line or config, 1 for any other failure (enrollment refused, server gone,
// dataset missing, ...).

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client_runtime.h"
#include "client/grpc_link.h"
#include "client/predict_command.h"
#include "client/vit_shift_client.h"
#include "core/config.h"
#include "core/logging.h"
#include "data/idx_reader.h"
#include "data/partition.h"
#include "fl/trainer.h"
#include "torch/model_zoo.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kProgram[] = "fl-client";
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Set once before the handlers are installed; the handler only performs a relaxed
// store on a lock-free atomic, which is async-signal-safe.
CancelToken* g_cancel = nullptr;

void OnStopSignal(int) {
  if (g_cancel != nullptr) g_cancel->Cancel();
}

// SA_RESETHAND: a second signal terminates at once if the graceful stop hangs.
void InstallStopHandlers(CancelToken* cancel) {
  g_cancel = cancel;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

nlohmann::json ClientDefaults() {
  const ClientRuntimeOptions runtime;
  nlohmann::json defaults = {
      {"client",
       {
           {"server", "localhost:50051"},
           {"name", ""},
           {"enrollment_token", ""},
           {"tls", {{"ca", ""}, {"cert", ""}, {"key", ""}}},
           {"insecure", false},
           {"device", "auto"},
           {"threads", 0},
           {"poll_wait_s", static_cast<double>(runtime.poll_wait.count()) / 1000.0},
           {"max_failures", runtime.max_consecutive_failures},
           {"slowdown_s", 0.0},
           {"overlap", runtime.overlap},
       }},
      {"data",
       {
           {"dir", std::string(kFashionMnistDefaultDir)},
           {"partition", "dirichlet:0.5"},
           {"num_partitions", 100},
           {"partition_index", -1},
           {"seed", 1},
           {"train_examples", 0},
       }},
      {"model", {{"name", "cnn"}}},
  };
  defaults.merge_patch(VitShiftClientDefaults());
  return defaults;
}

std::vector<FlagAlias> ClientAliases() {
  return {
      {"--server", "client.server", "fl-server address (host:port)"},
      {"--name", "client.name", "stable client name (default client-<partition index>)"},
      {"--enrollment-token", "client.enrollment_token", "token the server expects at enrollment"},
      {"--tls-ca", "client.tls.ca", "PEM CA bundle the server certificate must chain to"},
      {"--tls-cert", "client.tls.cert", "PEM client certificate (mutual TLS)"},
      {"--tls-key", "client.tls.key", "PEM client private key (mutual TLS)"},
      {"--insecure", "client.insecure", "plaintext connection (no TLS); explicit opt-in"},
      {"--overlap", "client.overlap",
       "upload each update while the next task trains (CO2; for async servers)"},
      {"--device", "client.device", "auto | cpu | cuda"},
      {"--threads", "client.threads", "LibTorch intra-op threads (0 = LibTorch's default)"},
      {"--data-dir", "data.dir", "folder with the Fashion-MNIST IDX files"},
      {"--partition", "data.partition", "iid | dirichlet:<alpha> | shards:<k> | sample:<m>"},
      {"--num-partitions", "data.num_partitions", "shards the training set is split into"},
      {"--partition-index", "data.partition_index", "this client's shard, in [0, num_partitions)"},
      {"--seed", "data.seed", "partition seed (the federation's run seed)"},
      {"--train-examples", "data.train_examples",
       "use only the first N training images (W3: of the federated ones; 0 = all)"},
      {"--model", "model.name",
       "model from the zoo, or a ViT (vit-tiny, vit:width=..) for W3 (must match the server's)"},
      {"--dataset", "data.dataset", "fashion-mnist | fashion-mnist-shift (W3, a ViT model)"},
      {"--domains", "data.domains", "W3: the domains clients draw from (comma list)"},
      {"--domains-per-client", "data.domains_per_client", "W3: distinct domains per client"},
      {"--tuning", "model.tuning", "W3: the trained part, full | head | ssf | fedins | sfprompt"},
      {"--tail-blocks", "model.tail_blocks",
       "W3 sfprompt: blocks this client runs after the server's body (as the server's cut)"},
      {"--backbone", "model.backbone", "W3: the frozen pretrained ViT file (.flps)"},
      {"--pool-entries", "fedins.entries", "W3 fedins: pool entries (the server's pool)"},
  };
}

struct ClientSettings {
  GrpcLinkOptions link;
  ClientRuntimeOptions runtime;
  std::string device;  // as requested: auto | cpu | cuda
  int threads = 0;
  double slowdown_s = 0;
  std::string data_dir;
  PartitionSpec partition;
  int num_partitions = 0;
  int partition_index = 0;
  uint64_t seed = 0;
  int64_t train_examples = 0;
  std::string model;
  bool vit_shift = false;  // W3: data.dataset fashion-mnist-shift, a ViT model
};

// Everything that can be checked without touching the network or the dataset.
// InvalidArgument naming the key for any bad value.
Result<ClientSettings> SettingsFromConfig(const Config& config) {
  ClientSettings s;
  s.link.target = config.GetString("client.server");
  if (s.link.target.empty()) return ConfigValueError("client.server", "host:port", "\"\"");
  s.link.root_ca_path = config.GetString("client.tls.ca");
  s.link.client_cert_path = config.GetString("client.tls.cert");
  s.link.client_key_path = config.GetString("client.tls.key");
  s.link.insecure = config.GetBool("client.insecure");

  s.device = config.GetString("client.device");
  if (s.device != "auto" && s.device != "cpu" && s.device != "cuda") {
    return ConfigValueError("client.device", "auto, cpu or cuda", "\"" + s.device + "\"");
  }
  const int64_t threads = config.GetInt("client.threads");
  if (threads < 0 || threads > 1024) {
    return ConfigValueError("client.threads", "in [0, 1024]", std::to_string(threads));
  }
  s.threads = static_cast<int>(threads);
  const double poll_wait_s = config.GetDouble("client.poll_wait_s");
  if (!(poll_wait_s > 0 && poll_wait_s <= 3600)) {
    return ConfigValueError("client.poll_wait_s", "in (0, 3600]", std::to_string(poll_wait_s));
  }
  s.runtime.poll_wait = std::chrono::milliseconds(static_cast<int64_t>(poll_wait_s * 1000));
  const int64_t max_failures = config.GetInt("client.max_failures");
  if (max_failures < 0 || max_failures > 1000000) {
    return ConfigValueError("client.max_failures", "in [0, 1000000]", std::to_string(max_failures));
  }
  s.runtime.max_consecutive_failures = static_cast<int>(max_failures);
  s.runtime.overlap = config.GetBool("client.overlap");
  s.slowdown_s = config.GetDouble("client.slowdown_s");
  if (!(s.slowdown_s >= 0 && s.slowdown_s <= 3600)) {
    return ConfigValueError("client.slowdown_s", "in [0, 3600]", std::to_string(s.slowdown_s));
  }
  s.runtime.enrollment_token = config.GetString("client.enrollment_token");

  s.data_dir = config.GetString("data.dir");
  Result<PartitionSpec> spec = ParsePartitionSpec(config.GetString("data.partition"));
  if (!spec.ok()) return spec.status().WithContext("config key data.partition");
  s.partition = *spec;
  const int64_t num_partitions = config.GetInt("data.num_partitions");
  if (num_partitions < 1 || num_partitions > 10000000) {
    return ConfigValueError("data.num_partitions", "in [1, 10000000]", std::to_string(num_partitions));
  }
  s.num_partitions = static_cast<int>(num_partitions);
  const int64_t index = config.GetInt("data.partition_index");
  if (index < 0 || index >= num_partitions) {
    return ConfigValueError("data.partition_index",
                      "in [0, " + std::to_string(num_partitions) + ") (--partition-index)",
                      std::to_string(index));
  }
  s.partition_index = static_cast<int>(index);
  const int64_t seed = config.GetInt("data.seed");
  if (seed < 0) return ConfigValueError("data.seed", ">= 0", std::to_string(seed));
  s.seed = static_cast<uint64_t>(seed);
  s.train_examples = config.GetInt("data.train_examples");
  if (s.train_examples < 0) {
    return ConfigValueError("data.train_examples", ">= 0", std::to_string(s.train_examples));
  }

  s.model = config.GetString("model.name");
  FL_RETURN_IF_ERROR(CheckDatasetAndModel(config));
  s.vit_shift = IsVitShiftConfig(config);
  const std::vector<std::string> models = ModelNames();
  if (!s.vit_shift && std::find(models.begin(), models.end(), s.model) == models.end()) {
    std::string known;
    for (const std::string& m : models) known += (known.empty() ? "" : ", ") + m;
    return ConfigValueError("model.name", "one of " + known, "\"" + s.model + "\"");
  }

  s.runtime.client_name = config.GetString("client.name");
  if (s.runtime.client_name.empty()) {
    s.runtime.client_name = "client-" + std::to_string(s.partition_index);
  }
  return s;
}

// This client's shard: the training set cut to data.train_examples, partitioned as
// fl-sim partitions it, restricted to data.partition_index (ascending example order, so
// batches are the ones fl-sim draws for the same training seed).
Result<ImageDataset> LoadShard(const ClientSettings& s) {
  FL_ASSIGN_OR_RETURN(ImageDataset all, LoadMnistFormat(s.data_dir, DatasetSplit::kTrain));
  if (s.train_examples > 0 && s.train_examples < all.size()) {
    all.labels.resize(static_cast<size_t>(s.train_examples));
    all.images.resize(static_cast<size_t>(s.train_examples * all.rows * all.cols));
  }
  Result<ClientShards> partition =
      ShardExamples(s.partition, all.labels, s.num_partitions, s.seed);
  if (!partition.ok()) return partition.status().WithContext("data.partition");
  const std::vector<int64_t> mine = partition->Indices(static_cast<size_t>(s.partition_index));
  ImageDataset shard;
  shard.rows = all.rows;
  shard.cols = all.cols;
  shard.num_classes = all.num_classes;
  const size_t pixels = static_cast<size_t>(all.rows * all.cols);
  shard.images.reserve(mine.size() * pixels);
  shard.labels.reserve(mine.size());
  for (int64_t i : mine) {
    const uint8_t* image = all.image(i);
    shard.images.insert(shard.images.end(), image, image + pixels);
    shard.labels.push_back(all.labels[static_cast<size_t>(i)]);
  }
  return shard;
}

// The trainer fl-client drives, with what owns it.
struct ClientTrainer {
  std::unique_ptr<TorchTrainer> zoo;  // a model of the zoo
  VitShiftClient vit_shift;           // W3
  Trainer* active = nullptr;
  int64_t shard_size = 0;
  std::string description;  // appended to the model name in the start-up log line
};

Result<ClientTrainer> NewZooTrainer(const ClientSettings& s, const std::string& device) {
  FL_ASSIGN_OR_RETURN(ImageDataset shard, LoadShard(s));
  ClientTrainer t;
  t.shard_size = shard.size();
  FL_ASSIGN_OR_RETURN(std::shared_ptr<const TensorImageData> data,
                      MakeTensorImageData(shard, device));
  shard = ImageDataset();  // the tensors hold their own copy
  TorchTrainerOptions options;
  options.model = s.model;
  options.device = device;
  options.init_seed = s.seed;
  FL_ASSIGN_OR_RETURN(t.zoo, TorchTrainer::Create(options, data, nullptr));
  std::vector<int64_t> indices(static_cast<size_t>(t.shard_size));
  for (int64_t i = 0; i < t.shard_size; ++i) indices[static_cast<size_t>(i)] = i;
  FL_RETURN_IF_ERROR(t.zoo->BindExamples(std::move(indices)));
  t.active = t.zoo.get();
  return t;
}

Result<ClientTrainer> NewVitShiftTrainer(const Config& config, const std::string& device,
                                         ServerLink* link) {
  ClientTrainer t;
  FL_ASSIGN_OR_RETURN(t.vit_shift, NewVitShiftClient(config, device, link));
  t.active = t.vit_shift.trainer.get();
  t.shard_size = t.vit_shift.shard_size;
  t.description = " (" + t.vit_shift.description + ")";
  return t;
}

// Emulates a slow device: each training task first waits `delay` (cancellable). Lets
// demos and tests see a round in which some updates have arrived and others have not.
class SlowTrainer final : public Trainer {
 public:
  SlowTrainer(Trainer* target, std::chrono::milliseconds delay) : target_(target), delay_(delay) {}
  const Layout& layout() const override { return target_->layout(); }
  Status GetParameters(ParamSet* out) override { return target_->GetParameters(out); }
  Status SetParameters(const ParamSet& params) override { return target_->SetParameters(params); }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override {
    const auto end = std::chrono::steady_clock::now() + delay_;
    while (std::chrono::steady_clock::now() < end) {
      if (cancel.cancelled()) return Status::Cancelled("training cancelled");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return target_->Train(config, cancel);
  }
  Result<EvalStats> Evaluate() override { return target_->Evaluate(); }

 private:
  Trainer* target_;
  std::chrono::milliseconds delay_;
};

int Fail(const char* what, const Status& status) {
  std::fprintf(stderr, "%s: %s: %s\n", kProgram, what, status.ToString().c_str());
  return status.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
}

int Run(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "predict") return RunPredictCommand(argc, argv);
  Result<CommandLine> command_line = ParseCommandLine(
      kProgram,
      "Federated learning client: trains a built-in LibTorch model on a Fashion-MNIST shard "
      "for an fl-server federation (TLS by default). W3: --dataset fashion-mnist-shift with a "
      "ViT --model, --tuning and the frozen --backbone file trains on fl-sim's shifted shard. "
      "`fl-client predict --help`: predictions with a federated ViT.",
      ClientDefaults(), ClientAliases(), argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "%s: %s\n", kProgram, command_line.status().message().c_str());
    return kExitUsage;
  }
  if (command_line->exit_now) return command_line->exit_code;
  Result<ClientSettings> settings = SettingsFromConfig(command_line->config);
  if (!settings.ok()) return Fail("config", settings.status());
  const ClientSettings& s = *settings;

  // The link validates the TLS settings; do it before the slow dataset load.
  Result<std::unique_ptr<GrpcLink>> link = GrpcLink::Create(s.link);
  if (!link.ok()) return Fail("connection settings", link.status());
  Result<std::string> device = ResolveTorchDevice(s.device);
  if (!device.ok()) return Fail("device", device.status());
  if (s.threads > 0) SetTorchThreads(s.threads);

  Result<ClientTrainer> trainer = s.vit_shift ? NewVitShiftTrainer(command_line->config, *device, link->get())
                                             : NewZooTrainer(s, *device);
  if (!trainer.ok()) return Fail("trainer", trainer.status());

  Trainer* active = trainer->active;
  std::unique_ptr<SlowTrainer> slow;
  if (s.slowdown_s > 0) {
    slow = std::make_unique<SlowTrainer>(
        active, std::chrono::milliseconds(static_cast<int64_t>(s.slowdown_s * 1000)));
    active = slow.get();
  }

  FL_LOG(INFO) << kProgram << " " << s.runtime.client_name << ": " << trainer->shard_size
               << " examples (partition " << PartitionSpecToString(s.partition) << ", shard "
               << s.partition_index << " of " << s.num_partitions << ", seed " << s.seed
               << "), model " << s.model << trainer->description << " on " << *device
               << ", server " << s.link.target << (s.link.insecure ? " (plaintext)" : " (TLS)");

  CancelToken cancel;
  InstallStopHandlers(&cancel);
  ClientRuntime runtime(link->get(), s.runtime);
  const Status result = runtime.Run(*active, cancel);
  if (result.ok()) {
    std::printf("%s %s: federation finished\n", kProgram, s.runtime.client_name.c_str());
    return 0;
  }
  if (result.code() == StatusCode::kCancelled && cancel.cancelled()) {
    FL_LOG(INFO) << kProgram << " " << s.runtime.client_name << ": stopped by signal";
    return 0;
  }
  if (result.code() == StatusCode::kUnauthenticated) {
    std::fprintf(stderr,
                 "%s: the server refused enrollment of %s: wrong enrollment token "
                 "(client.enrollment_token / --enrollment-token): %s\n",
                 kProgram, s.runtime.client_name.c_str(), result.ToString().c_str());
    return kExitFailure;
  }
  std::fprintf(stderr, "%s %s: %s\n", kProgram, s.runtime.client_name.c_str(),
               result.ToString().c_str());
  return kExitFailure;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) { return fl::internal::Run(argc, argv); }
