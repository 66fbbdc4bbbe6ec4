// W2 fortunes-gpt end to end on the real fortune files, cut down to seconds: a tiny GPT
// pretrained for a few steps, then a few rounds of FedAvg over a few fortune files.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "codec/param_io.h"
#include "data/fortunes.h"
#include "simulations/fortunes_workload.h"
#include "simulations/simulator.h"
#include "store/store.h"
#include "torch/lm_trainer.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kTinyGpt[] = "gpt:layers=1,width=32,heads=2,context=32";

std::filesystem::path TempPath(const std::string& name) {
  return std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
}

std::string ReadText(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The fortunes-gpt preset with a tiny model, 4 clients, 2 rounds of 3 clients.
Result<Config> TinyConfig(const std::string& out_dir, const std::string& init_file) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  Result<nlohmann::json> preset = PresetValues("fortunes-gpt");
  if (!preset.ok()) return preset.status();
  defaults.merge_patch(*preset);
  return Config::Build(
      defaults, "",
      {std::string("model.name=") + kTinyGpt, "model.init_file=" + init_file, "data.num_clients=4",
       "data.eval_bytes_per_client=256", "coordinator.clients_per_round=3", "run.rounds=2",
       "run.seed=3", "train.local_steps=4", "train.batch_size=4", "train.lr=0.003",
       "lm.optimizer=adam", "pretrain.steps=30", "pretrain.batch_size=8", "pretrain.lr=0.01",
       "pretrain.warmup_steps=0", "pretrain.threads=1", "sim.workers=2", "sim.progress=none",
       "sim.out_dir=" + out_dir});
}

class FortunesGptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempPath("fortunes_gpt");
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    checkpoint_ = (dir_ / "pretrained.flps").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::string checkpoint_;
};

TEST_F(FortunesGptTest, PresetDefaults) {
  Result<nlohmann::json> w2 = PresetValues("fortunes-gpt");
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ((*w2)["data"]["dataset"], "fortunes");
  EXPECT_EQ((*w2)["model"]["name"], "gpt-tiny");
  EXPECT_FALSE((*w2)["model"]["init_file"].get<std::string>().empty());
  EXPECT_EQ((*w2)["coordinator"]["clients_per_round"], 10);
  const std::vector<std::string> names = PresetNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "fortunes-gpt"), names.end());
}

TEST_F(FortunesGptTest, PretrainThenFederateAndTheMetricIsTheHeldOutBitsPerByte) {
  Result<Config> config = TinyConfig((dir_ / "run").string(), checkpoint_);
  ASSERT_TRUE(config.ok()) << config.status().ToString();

  // Without the checkpoint the run says how to make it.
  Result<SimulationResult> missing = RunSimulation(*config, nullptr);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("fl-sim pretrain"), std::string::npos)
      << missing.status().message();

  int64_t steps_seen = 0;
  Result<PretrainReport> pre = PretrainLanguageModel(*config, [&](const PretrainProgress& p) {
    if (p.phase == "train") steps_seen = p.step;
  });
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  EXPECT_EQ(steps_seen, 30);
  EXPECT_EQ(pre->out, checkpoint_);
  EXPECT_NEAR(pre->source_before.loss / kLn2, 8.0, 0.2);  // untrained: ~uniform bytes
  EXPECT_LT(pre->source_after.loss, pre->source_before.loss - 0.5);
  EXPECT_LT(pre->target_after.loss, pre->target_before.loss);
  Result<std::string> bytes = Env::Default()->ReadFile(checkpoint_);
  ASSERT_TRUE(bytes.ok());
  Result<ParamSet> pretrained = ParseParamSet(*bytes);
  ASSERT_TRUE(pretrained.ok()) << pretrained.status().ToString();
  EXPECT_EQ(pretrained->size(), pre->num_parameters);

  uint64_t finished = 0;
  Result<SimulationResult> result = RunSimulation(*config, [&](const SimProgress& p) {
    ASSERT_NE(p.metric, nullptr);
    EXPECT_EQ(p.metric->name, "bits_per_byte");
    if (p.round_finished) ++finished;
  });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(finished, 2u);
  ASSERT_EQ(result->rounds.size(), 2u);
  EXPECT_EQ(result->metric.name, "bits_per_byte");
  for (const SimRoundRecord& r : result->rounds) {
    EXPECT_EQ(r.metrics.clients, 3u);
    EXPECT_EQ(r.metrics.bytes_up, 3u * pretrained->size() * 4u);  // dense f32 updates
    EXPECT_NEAR(r.metric, r.metrics.test_loss / kLn2, 1e-9);
    EXPECT_GT(r.metric, 1.0);
    EXPECT_LT(r.metric, 8.5);
  }

  // The reported metric is the held-out bits per byte of the final global model on the
  // chosen clients' files, recomputed here independently of the simulator.
  Result<std::string> v2 = Env::Default()->ReadFile((dir_ / "run" / "models" / "v2.flps").string());
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  Result<ParamSet> final_model = ParseParamSet(*v2);
  ASSERT_TRUE(final_model.ok());
  Result<FortuneCorpus> corpus =
      LoadFortuneCorpus(std::string(kFortunesDefaultDir), {"de", "es", "it"}, 0.1);
  ASSERT_TRUE(corpus.ok());
  FortuneCorpus chosen;
  const size_t n = corpus->files.size();
  for (size_t i = 0; i < 4; ++i) chosen.files.push_back(corpus->files[i * n / 4]);
  LmTrainerOptions options;
  options.model = kTinyGpt;
  Result<std::unique_ptr<LmTrainer>> trainer = LmTrainer::Create(options);
  ASSERT_TRUE(trainer.ok());
  const std::vector<std::string_view> heldout = HeldoutEvalWindows(chosen, 256, 32);
  ASSERT_TRUE((*trainer)->SetParameters(*final_model).ok());
  Result<EvalStats> direct = (*trainer)->EvaluateTexts(heldout);
  ASSERT_TRUE(direct.ok());
  EXPECT_NEAR(result->final_metric, direct->loss / kLn2, 1e-4);

  // Federated training helps: the held-out bits per byte of the final model are below
  // those of the pretrained model it started from, on the same windows.
  ASSERT_TRUE((*trainer)->SetParameters(*pretrained).ok());
  Result<EvalStats> before = (*trainer)->EvaluateTexts(heldout);
  ASSERT_TRUE(before.ok());
  const double bits_before = before->loss / kLn2;
  EXPECT_LT(result->final_metric, bits_before)
      << "bits/byte after 2 rounds " << result->final_metric << ", before " << bits_before;

  // Outputs name the metric.
  const std::string csv = ReadText(dir_ / "run" / "metrics.csv");
  EXPECT_EQ(csv.rfind("round,bits_per_byte,test_loss,train_loss,bytes_up,", 0), 0u) << csv;
  std::istringstream jsonl(ReadText(dir_ / "run" / "metrics.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(jsonl, line));
  EXPECT_NEAR(nlohmann::json::parse(line)["bits_per_byte"].get<double>(), result->rounds[0].metric,
              1e-12);
  EXPECT_NE(ReadText(dir_ / "run" / "accuracy_bytes.svg").find("held-out bits per byte"),
            std::string::npos);
  StoreOptions so;
  so.path = (dir_ / "run" / "run.db").string();
  Result<std::unique_ptr<Store>> store = Store::Open(so);
  ASSERT_TRUE(store.ok());
  Result<std::optional<std::string>> metric = (*store)->GetMeta("metric");
  ASSERT_TRUE(metric.ok() && metric->has_value());
  EXPECT_EQ(**metric, "bits_per_byte");
}

TEST_F(FortunesGptTest, ConfigErrors) {
  Result<Config> config = TinyConfig((dir_ / "run").string(), "");
  ASSERT_TRUE(config.ok());
  Config cnn = *config;
  ASSERT_TRUE(cnn.Set("model.name", "cnn", "test").ok());
  Result<SimulationResult> r = RunSimulation(cnn, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("GPT"), std::string::npos) << r.status().message();

  Config too_many = *config;
  ASSERT_TRUE(too_many.Set("data.num_clients", "1000", "test").ok());
  EXPECT_EQ(RunSimulation(too_many, nullptr).status().code(), StatusCode::kInvalidArgument);

  Config no_data = *config;
  ASSERT_TRUE(no_data.Set("data.dir", (dir_ / "nothing").string(), "test").ok());
  Result<SimulationResult> m = RunSimulation(no_data, nullptr);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("fortunes-de fortunes-es fortunes-it"), std::string::npos)
      << m.status().message();

  Config bad_dataset = *config;
  ASSERT_TRUE(bad_dataset.Set("data.dataset", "cifar", "test").ok());
  EXPECT_EQ(RunSimulation(bad_dataset, nullptr).status().code(), StatusCode::kInvalidArgument);
}

struct Outcome {
  int exit_code = -1;
  std::string output;
};

Outcome RunFlSim(const std::string& args) {
  Outcome o;
  const std::string cmd = std::string(FL_BINARY_DIR) + "/simulations/fl-sim " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return o;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) o.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

TEST_F(FortunesGptTest, CommandLine) {
  Outcome pre = RunFlSim(std::string("pretrain --preset fortunes-gpt --model ") + kTinyGpt +
                         " --steps 5 --threads 1 --out " + checkpoint_ +
                         " --set data.eval_bytes_per_client=128");
  ASSERT_EQ(pre.exit_code, 0) << pre.output;
  EXPECT_NE(pre.output.find("held-out bits per byte"), std::string::npos) << pre.output;
  EXPECT_TRUE(std::filesystem::exists(checkpoint_));

  Outcome fmnist = RunFlSim("pretrain --out " + checkpoint_);
  EXPECT_EQ(fmnist.exit_code, 2);
  EXPECT_NE(fmnist.output.find("fortunes-gpt"), std::string::npos) << fmnist.output;

  Outcome missing = RunFlSim("--preset fortunes-gpt --progress none --init-model " +
                             (dir_ / "absent.flps").string() + " --out " + (dir_ / "r").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("fl-sim pretrain --preset fortunes-gpt"), std::string::npos)
      << missing.output;

  Outcome print = RunFlSim("--preset fortunes-gpt --print-config");
  EXPECT_EQ(print.exit_code, 0) << print.output;
  EXPECT_NE(print.output.find("dataset: fortunes"), std::string::npos) << print.output;
}

}  // namespace
}  // namespace fl::internal
