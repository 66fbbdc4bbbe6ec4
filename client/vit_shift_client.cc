#include "client/vit_shift_client.h"

#include <charconv>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "core/logging.h"
#include "data/domain_shift.h"
#include "data/idx_reader.h"
#include "data/shifted_split_config.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

// The pool entries of a keyed update's tensor names ("pool.<i>.…"), ascending.
std::set<int> UploadedEntries(const TrainStats& stats) {
  std::set<int> entries;
  constexpr std::string_view kPrefix = "pool.";
  for (const auto& [name, fraction] : stats.tensor_weights) {
    if (!(fraction > 0) || name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    const char* first = name.data() + kPrefix.size();
    int entry = 0;
    auto [end, ec] = std::from_chars(first, name.data() + name.size(), entry);
    if (ec == std::errc() && end != first && *end == '.') entries.insert(entry);
  }
  return entries;
}

// Logs which pool entries each FedIns task uploads (the ones it trained, less those
// below fedins.upload_min_fraction), so an operator can tell a client's reach from its
// log.
class EntryLoggingTrainer final : public Trainer {
 public:
  explicit EntryLoggingTrainer(VitTrainer* target) : target_(target) {}
  const Layout& layout() const override { return target_->layout(); }
  Status GetParameters(ParamSet* out) override { return target_->GetParameters(out); }
  Status SetParameters(const ParamSet& params) override { return target_->SetParameters(params); }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override {
    Result<TrainStats> stats = target_->Train(config, cancel);
    if (stats.ok() && !stats->tensor_weights.empty()) {
      std::string list;
      for (int e : UploadedEntries(*stats)) {
        if (!list.empty()) list += ',';
        list += std::to_string(e);
      }
      FL_LOG(INFO) << "task of round " << config.round << " uploads pool entries " << list;
    }
    if (stats.ok() && !stats->metrics.empty()) {
      std::string figures;
      for (const auto& [name, value] : stats->metrics) {
        figures += (figures.empty() ? "" : " ") + name + "=" + FormatConfigNumber(value);
      }
      FL_LOG(INFO) << "task of round " << config.round << ": " << figures;
    }
    return stats;
  }
  Result<EvalStats> Evaluate() override { return target_->Evaluate(); }

 private:
  VitTrainer* target_;
};

Result<VitTrainerOptions> TrainerOptions(const Config& config, const std::string& device) {
  VitTrainerOptions o;
  Result<VitOptions> vit = ParseVitModelName(config.GetString("model.name"));
  if (!vit.ok()) return vit.status().WithContext("model.name");
  o.vit = *vit;
  Result<VitTuning> tuning = ParseVitTuning(config.GetString("model.tuning"));
  if (!tuning.ok()) return tuning.status().WithContext("model.tuning");
  o.tuning = *tuning;
  o.pool.entries = config.GetInt("fedins.entries");
  o.pool.top_k = config.GetInt("fedins.top_k");
  o.pool.lambda = config.GetDouble("fedins.lambda");
  o.pool.batch_shared_ssf = config.GetBool("fedins.batch_shared_ssf");
  if (o.pool.entries < 1 || o.pool.entries > 1024) {
    return ConfigValueError("fedins.entries", "in [1, 1024]", std::to_string(o.pool.entries));
  }
  o.sfprompt.head_blocks = config.GetInt("model.head_blocks");
  o.sfprompt.tail_blocks = config.GetInt("model.tail_blocks");
  o.device = device;
  o.init_seed = static_cast<uint64_t>(config.GetInt("data.seed"));
  return o;
}

// The provisioned backbone: a model file of exactly the model.name ViT's layout.
Result<ParamSet> ReadBackbone(const Config& config, const VitOptions& vit) {
  const std::string path = config.GetString("model.backbone");
  if (path.empty()) {
    return ConfigValueError("model.backbone", "the pretrained ViT file (--backbone FILE)", "\"\"");
  }
  Result<ParamSet> backbone = ReadVitBackbone(path, vit, config.GetString("model.name"));
  if (!backbone.ok()) return backbone.status().WithContext("model.backbone");
  return backbone;
}

// Client data.partition_index's examples of the split, ascending (the order fl-sim binds
// them in, so batches are the ones fl-sim draws for the same training seed).
Result<ImageDataset> LoadShard(const Config& config, ShiftedSplitOptions* options) {
  FL_ASSIGN_OR_RETURN(ImageDataset train,
                      LoadMnistFormat(config.GetString("data.dir"), DatasetSplit::kTrain));
  FL_ASSIGN_OR_RETURN(*options, ShiftedSplitOptionsFromConfig(
                                    config, train.size(),
                                    {.num_clients = "data.num_partitions", .seed = "data.seed"}));
  FL_ASSIGN_OR_RETURN(ShiftedSplit split, BuildShiftedSplit(train, *options));
  const int64_t index = config.GetInt("data.partition_index");
  const std::vector<int64_t>& mine = split.clients[static_cast<size_t>(index)];
  ImageDataset shard;
  shard.rows = split.images.rows;
  shard.cols = split.images.cols;
  shard.num_classes = split.images.num_classes;
  const size_t pixels = static_cast<size_t>(shard.rows * shard.cols);
  shard.images.reserve(mine.size() * pixels);
  for (int64_t i : mine) {
    const uint8_t* image = split.images.image(i);
    shard.images.insert(shard.images.end(), image, image + pixels);
    shard.labels.push_back(split.images.labels[static_cast<size_t>(i)]);
  }
  return shard;
}

}  // namespace

nlohmann::json VitShiftClientDefaults() {
  const SsfPoolOptions pool;
  return {
      {"data",
       {{"dataset", "fashion-mnist"},
        {"domains", DomainListToString(AllDomains())},
        {"domains_per_client", 3}}},
      {"model", {{"tuning", "fedins"}, {"backbone", ""}, {"head_blocks", 0}, {"tail_blocks", 0}}},
      {"fedins",
       {{"entries", pool.entries},
        {"top_k", pool.top_k},
        {"lambda", pool.lambda},
        {"batch_shared_ssf", pool.batch_shared_ssf}}},
  };
}

bool IsVitShiftConfig(const Config& config) {
  return config.GetString("data.dataset") == kFashionMnistShiftDataset;
}

Status CheckDatasetAndModel(const Config& config) {
  const std::string dataset = config.GetString("data.dataset");
  const std::string model = config.GetString("model.name");
  if (dataset != "fashion-mnist" && dataset != kFashionMnistShiftDataset) {
    return ConfigValueError("data.dataset", "fashion-mnist or fashion-mnist-shift",
                            "\"" + dataset + "\"");
  }
  if (IsVitShiftConfig(config) && !IsVitModelName(model)) {
    return Status::InvalidArgument(
        "model.name: data.dataset fashion-mnist-shift needs a ViT "
        "(vit-tiny or vit:key=value,...), got \"" +
        model + "\"");
  }
  if (!IsVitShiftConfig(config) && IsVitModelName(model)) {
    return Status::InvalidArgument("model.name " + model +
                                   " is W3's ViT: set data.dataset=fashion-mnist-shift "
                                   "(--dataset) and model.backbone (--backbone)");
  }
  return Status::Ok();
}

Result<VitShiftClient> NewVitShiftClient(const Config& config, const std::string& device,
                                         ServerLink* link) {
  // Options and the backbone first: a typo or a wrong file fails before the data is
  // read and shifted.
  FL_ASSIGN_OR_RETURN(VitTrainerOptions options, TrainerOptions(config, device));
  options.sfprompt.open_split_session = [link](const SplitSessionOptions& o) {
    return link->OpenSplitSession(o);
  };
  FL_ASSIGN_OR_RETURN(ParamSet backbone, ReadBackbone(config, options.vit));
  ShiftedSplitOptions split;
  FL_ASSIGN_OR_RETURN(ImageDataset shard, LoadShard(config, &split));
  VitShiftClient c;
  c.shard_size = shard.size();
  FL_ASSIGN_OR_RETURN(std::shared_ptr<const TensorImageData> data,
                      MakeTensorImageData(shard, device));
  FL_ASSIGN_OR_RETURN(c.vit, VitTrainer::Create(options, &backbone, std::move(data), nullptr));
  std::vector<int64_t> indices(static_cast<size_t>(c.shard_size));
  for (int64_t i = 0; i < c.shard_size; ++i) indices[static_cast<size_t>(i)] = i;
  FL_RETURN_IF_ERROR(c.vit->BindExamples(std::move(indices)));
  c.trainer = std::make_unique<EntryLoggingTrainer>(c.vit.get());
  c.description = "W3 " + DomainListToString(split.domains) + " (" +
                  std::to_string(split.domains_per_client) + " per client, train images " +
                  std::to_string(split.begin) + "-" + std::to_string(split.end - 1) + "), tuning " +
                  VitTuningName(options.tuning) + " on backbone " +
                  config.GetString("model.backbone");
  // The trained part's size is what must match the server's model (--pool-entries).
  if (options.tuning == VitTuning::kSsfPool) {
    c.description += ", a pool of " + std::to_string(options.pool.entries) + " entries";
  }
  c.description += ", " + std::to_string(c.vit->layout().total_numel()) + " trained parameters";
  return c;
}

}  // namespace fl::internal
