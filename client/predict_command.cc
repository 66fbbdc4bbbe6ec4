#include "client/predict_command.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/domain_shift.h"
#include "data/idx_reader.h"
#include "data/prediction_csv.h"
#include "data/shifted_split_config.h"
#include "fl/adaptive_predictor.h"
#include "fl/env.h"
#include "fl/param_set.h"

namespace fl::internal {
namespace {

constexpr char kProgram[] = "fl-client predict";
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

nlohmann::json PredictDefaults() {
  const PredictorOptions predictor;
  return {
      {"predict",
       {
           {"backbone", ""},
           {"model", ""},
           {"images", ""},
           {"out", ""},
           {"count", 0},
           {"shifted_test", false},
           {"heads", predictor.heads},
           {"top_k", predictor.top_k},
           {"batch_shared_ssf", predictor.batch_shared_ssf},
           // Images per Predict call; with batch_shared_ssf it decides which images
           // share a combination. 500 is VitTrainer's evaluation batch, as in fl-sim.
           {"batch", 500},
       }},
      {"data", {{"domains", DomainListToString(AllDomains())}}},
  };
}

std::vector<FlagAlias> PredictAliases() {
  return {
      {"--backbone", "predict.backbone", "the frozen ViT backbone (.flps) the client holds"},
      {"--model", "predict.model", "the federated tuned part (.flps); empty: backbone only"},
      {"--images", "predict.images", "IDX images file (N x 28 x 28), gzip or not"},
      {"--out", "predict.out", "predictions CSV to write (index,label,entries); empty: stdout"},
      {"--count", "predict.count", "predict only the first N images (0 = all)"},
      {"--shifted-test", "predict.shifted_test",
       "apply W3's test shifts (data.domains) to the images first, as fl-sim does"},
      {"--domains", "data.domains", "W3 domains for --shifted-test (comma list)"},
      {"--heads", "predict.heads", "attention heads of the backbone"},
      {"--top-k", "predict.top_k", "pool entries each image combines (fedins.top_k)"},
      {"--batch-shared-ssf", "predict.batch_shared_ssf",
       "one pool combination per batch (FedIns's original reference)"},
      {"--batch", "predict.batch", "images per batch"},
  };
}

struct PredictSettings {
  std::string backbone, model, images, out;
  int64_t count = 0;
  int64_t batch = 500;
  bool shifted_test = false;
  std::vector<Domain> domains;
  PredictorOptions predictor;
};

Result<PredictSettings> SettingsFromConfig(const Config& config) {
  PredictSettings s;
  s.backbone = config.GetString("predict.backbone");
  if (s.backbone.empty()) return ConfigValueError("predict.backbone", "a model file", "\"\"");
  s.images = config.GetString("predict.images");
  if (s.images.empty()) return ConfigValueError("predict.images", "an IDX file", "\"\"");
  s.model = config.GetString("predict.model");
  s.out = config.GetString("predict.out");
  s.count = config.GetInt("predict.count");
  if (s.count < 0) return ConfigValueError("predict.count", ">= 0", std::to_string(s.count));
  s.batch = config.GetInt("predict.batch");
  if (s.batch < 1 || s.batch > 1000000) {
    return ConfigValueError("predict.batch", "in [1, 1000000]", std::to_string(s.batch));
  }
  const int64_t heads = config.GetInt("predict.heads");
  const int64_t top_k = config.GetInt("predict.top_k");
  if (heads < 1 || heads > 4096) {
    return ConfigValueError("predict.heads", "in [1, 4096]", std::to_string(heads));
  }
  if (top_k < 1 || top_k > 4096) {
    return ConfigValueError("predict.top_k", "in [1, 4096]", std::to_string(top_k));
  }
  s.predictor.heads = static_cast<int>(heads);
  s.predictor.top_k = static_cast<int>(top_k);
  s.predictor.batch_shared_ssf = config.GetBool("predict.batch_shared_ssf");
  s.shifted_test = config.GetBool("predict.shifted_test");
  FL_ASSIGN_OR_RETURN(s.domains, DomainsFromConfig(config));
  return s;
}

// The images of `path` as a dataset (labels are not needed: all 0), cut to `count`.
Result<ImageDataset> ReadImages(const std::string& path, int64_t count) {
  Result<IdxArray> idx = ReadIdxFile(path);
  if (!idx.ok()) return idx.status().WithContext("--images " + path);
  if (idx->dims.size() != 3) {
    return Status::InvalidArgument("--images " + path + " is not an N x rows x cols images file (" +
                                   std::to_string(idx->dims.size()) + " dimensions)");
  }
  ImageDataset ds;
  const int64_t n = count > 0 ? std::min(count, idx->dims[0]) : idx->dims[0];
  ds.rows = idx->dims[1];
  ds.cols = idx->dims[2];
  idx->data.resize(static_cast<size_t>(n * ds.rows * ds.cols));
  ds.images = std::move(idx->data);
  ds.labels.assign(static_cast<size_t>(n), 0);
  return ds;
}

Result<std::unique_ptr<AdaptivePredictor>> LoadPredictor(const PredictSettings& s) {
  Result<ParamSet> backbone = ReadModelFile(s.backbone);
  if (!backbone.ok()) return backbone.status().WithContext("--backbone");
  ParamSet tuned;
  if (!s.model.empty()) {
    Result<ParamSet> model = ReadModelFile(s.model);
    if (!model.ok()) return model.status().WithContext("--model");
    tuned = std::move(model).value();
  }
  return AdaptivePredictor::Create(*backbone, tuned, s.predictor);
}

// The CSV of every image's prediction, `batch` images per Predict call.
Result<std::string> PredictAll(const AdaptivePredictor& predictor, const ImageDataset& images,
                               int64_t batch) {
  if (images.rows != predictor.image_size() || images.cols != predictor.image_size()) {
    return Status::InvalidArgument("the images are " + std::to_string(images.rows) + " x " +
                                   std::to_string(images.cols) + ", the backbone takes " +
                                   std::to_string(predictor.image_size()) + " x " +
                                   std::to_string(predictor.image_size()));
  }
  std::string csv = kPredictionCsvHeader;
  const int64_t n = images.size();
  for (int64_t begin = 0; begin < n; begin += batch) {
    const int64_t count = std::min(batch, n - begin);
    FL_ASSIGN_OR_RETURN(std::vector<Prediction> predictions,
                        predictor.Predict(images.image(begin), static_cast<size_t>(count)));
    for (int64_t i = 0; i < count; ++i) {
      const Prediction& p = predictions[static_cast<size_t>(i)];
      AppendPredictionRow(begin + i, p.label, p.entries, &csv);
    }
  }
  return csv;
}

int Fail(const Status& status, int exit_code = kExitFailure) {
  std::fprintf(stderr, "%s: %s\n", kProgram, status.ToString().c_str());
  return exit_code;
}

}  // namespace

int RunPredictCommand(int argc, char** argv) {
  Result<CommandLine> cl = ParseCommandLine(
      kProgram,
      "Predicts labels (and FedIns pool entries) for the images of an IDX file with a tiny "
      "ViT backbone and its federated tuned part, through fl::AdaptivePredictor.",
      PredictDefaults(), PredictAliases(), argc - 1, argv + 1);
  if (!cl.ok()) {
    std::fprintf(stderr, "%s: %s\n", kProgram, cl.status().message().c_str());
    return kExitUsage;
  }
  if (cl->exit_now) return cl->exit_code;
  Result<PredictSettings> settings = SettingsFromConfig(cl->config);
  if (!settings.ok()) return Fail(settings.status(), kExitUsage);
  const PredictSettings& s = *settings;

  Result<std::unique_ptr<AdaptivePredictor>> predictor = LoadPredictor(s);
  if (!predictor.ok()) return Fail(predictor.status());
  Result<ImageDataset> images = ReadImages(s.images, s.count);
  if (!images.ok()) return Fail(images.status());
  if (s.shifted_test) {
    Result<ShiftedTestSet> shifted = BuildShiftedTestSet(*images, s.domains, kTestShiftSeed);
    if (!shifted.ok()) return Fail(shifted.status());
    images = std::move(shifted->images);
  }
  Result<std::string> csv = PredictAll(**predictor, *images, s.batch);
  if (!csv.ok()) return Fail(csv.status());
  if (s.out.empty()) {
    std::fwrite(csv->data(), 1, csv->size(), stdout);
    return 0;
  }
  const Status written = Env::Default()->WriteFileAtomic(s.out, *csv, false);
  if (!written.ok()) return Fail(written.WithContext("--out"));
  std::fprintf(stderr, "%s: %lld predictions (%d pool entries, top_k %d) to %s\n", kProgram,
               static_cast<long long>(images->size()), (*predictor)->pool_entries(),
               s.predictor.top_k, s.out.c_str());
  return 0;
}

}  // namespace fl::internal
