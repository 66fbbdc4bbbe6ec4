// Runs the built fl-sim binary the way a user does and checks its exit codes and
// messages.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "codec/param_io.h"
#include "data/client_shards.h"
#include "fl/env.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

const std::string kBinary = std::string(FL_BINARY_DIR) + "/simulations/fl-sim";

struct Outcome {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

Outcome RunFlSim(const std::string& args) {
  Outcome o;
  const std::string cmd = kBinary + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return o;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) o.output.append(buf.data(), n);
  int status = ::pclose(pipe);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

size_t Lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

std::filesystem::path Temp(const std::string& name) {
  return std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
}

// README: "A bad config file or flag prints one message naming the key and exits with
// status 2." Every case here checks that status exactly.
TEST(FlSimCliTest, UnknownFlagIsOneMessageAndExitStatus2) {
  Outcome o = RunFlSim("--no-such-flag 3");
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_EQ(Lines(o.output), 1u) << o.output;
  EXPECT_NE(o.output.find("no-such-flag"), std::string::npos) << o.output;
}

TEST(FlSimCliTest, MissingAndBadConfigFiles) {
  Outcome missing = RunFlSim("--config /nonexistent/fl-sim.yaml");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_EQ(Lines(missing.output), 1u) << missing.output;
  EXPECT_NE(missing.output.find("/nonexistent/fl-sim.yaml"), std::string::npos) << missing.output;

  const auto path = Temp("fl_sim_bad_config") += ".yaml";
  std::ofstream(path) << "train:\n  lr: 0.1\n  learning_speed: 3\n";
  Outcome unknown = RunFlSim("--config " + path.string());
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_EQ(Lines(unknown.output), 1u) << unknown.output;
  EXPECT_NE(unknown.output.find("learning_speed"), std::string::npos) << unknown.output;

  std::ofstream(path) << "train:\n  lr: fast\n";
  Outcome mistyped = RunFlSim("--config " + path.string());
  EXPECT_EQ(mistyped.exit_code, 2) << mistyped.output;
  EXPECT_NE(mistyped.output.find("train.lr"), std::string::npos) << mistyped.output;
  std::filesystem::remove(path);
}

TEST(FlSimCliTest, UnknownPresetAndCommand) {
  Outcome preset = RunFlSim("--preset cifar-resnet");
  EXPECT_EQ(preset.exit_code, 2) << preset.output;
  EXPECT_EQ(Lines(preset.output), 1u) << preset.output;
  EXPECT_NE(preset.output.find("fmnist-cnn"), std::string::npos) << preset.output;
  Outcome command = RunFlSim("simulate");
  EXPECT_EQ(command.exit_code, 2) << command.output;
  EXPECT_NE(command.output.find("export-model"), std::string::npos) << command.output;
}

TEST(FlSimCliTest, PrintConfigShowsPresetAndOverrides) {
  Outcome o = RunFlSim("--print-config --lr 0.02 --set data.partition=shards:2");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("preset: fmnist-cnn"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("num_clients: 100"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("clients_per_round: 10"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("lr: 0.02"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("partition: shards:2"), std::string::npos) << o.output;
}

TEST(FlSimCliTest, MissingDatasetNamesThePackage) {
  Outcome o = RunFlSim("--data-dir /nonexistent/fmnist --progress none --out " +
                       Temp("fl_sim_nodata").string());
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_NE(o.output.find("dataset-fashion-mnist"), std::string::npos) << o.output;
  std::filesystem::remove_all(Temp("fl_sim_nodata"));
}

TEST(FlSimCliTest, DeviceErrors) {
  Outcome bad = RunFlSim("--device tpu --progress none");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;  // a bad flag value; no CUDA is status 1
  EXPECT_EQ(Lines(bad.output), 1u) << bad.output;
  EXPECT_NE(bad.output.find("unknown device"), std::string::npos) << bad.output;
  Result<std::string> automatic = ResolveTorchDevice("auto");
  ASSERT_TRUE(automatic.ok());
  if (*automatic == "cpu") {  // no CUDA here: asking for it is one clear error
    Outcome cuda = RunFlSim("--device cuda --progress none");
    EXPECT_EQ(cuda.exit_code, 1);
    EXPECT_EQ(Lines(cuda.output), 1u) << cuda.output;
    EXPECT_NE(cuda.output.find("CUDA"), std::string::npos) << cuda.output;
  }
}

TEST(FlSimCliTest, ExportModelWritesALoadableModel) {
  const auto path = Temp("fl_sim_model") += ".flps";
  Outcome o = RunFlSim("export-model --model cnn --seed 3 --out " + path.string());
  ASSERT_EQ(o.exit_code, 0) << o.output;
  Result<std::string> bytes = Env::Default()->ReadFile(path.string());
  ASSERT_TRUE(bytes.ok());
  Result<ParamSet> params = ParseParamSet(*bytes);
  ASSERT_TRUE(params.ok()) << params.status().ToString();
  EXPECT_EQ(params->size(), 215370u);
  EXPECT_NE(o.output.find("215370"), std::string::npos);
  Outcome unknown = RunFlSim("export-model --model vgg --out " + path.string());
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  std::filesystem::remove(path);
}

TEST(FlSimCliTest, ExportPartitionWritesDrawnShardsForMoreClientsThanImages) {
  const auto path = Temp("fl_sim_partition") += ".json";
  Outcome o = RunFlSim("export-partition --clients 70000 --partition sample:4 --seed 3 --out " +
                       path.string());
  ASSERT_EQ(o.exit_code, 0) << o.output;
  Result<std::string> text = Env::Default()->ReadFile(path.string());
  ASSERT_TRUE(text.ok());
  const nlohmann::json doc = nlohmann::json::parse(*text);
  EXPECT_EQ(doc["partition"], "sample:4");
  EXPECT_EQ(doc["num_clients"], 70000);
  ASSERT_EQ(doc["clients"].size(), 70000u);
  const uint64_t images = doc["num_examples"].get<uint64_t>();
  EXPECT_EQ(images, 60000u);
  // The shards `fl-sim run` and fl-client (--partition-index) train on.
  for (size_t c : {size_t{0}, size_t{1}, size_t{69999}}) {
    EXPECT_EQ(doc["clients"][c].get<std::vector<int64_t>>(), DrawShard(images, 4, 3, c)) << c;
  }
  Outcome too_many = RunFlSim("export-partition --clients 70000 --partition iid --out " +
                              path.string());
  EXPECT_EQ(too_many.exit_code, 2) << too_many.output;
  EXPECT_NE(too_many.output.find("sample:<m>"), std::string::npos) << too_many.output;
  std::filesystem::remove(path);
}

TEST(FlSimCliTest, CompareWritesAPlotAndATableOrNamesTheBadRun) {
  const auto dir = Temp("fl_sim_compare");
  std::filesystem::create_directories(dir / "a");
  std::filesystem::create_directories(dir / "b");
  const char* header = "round,accuracy,test_loss,train_loss,bytes_up,bytes_down,clients\n";
  std::ofstream(dir / "a" / "metrics.csv") << header << "1,0.5,1,1,800,0,2\n2,0.6,1,1,800,0,2\n";
  std::ofstream(dir / "b" / "metrics.csv") << header << "1,0.4,1,1,8,0,2\n2,0.55,1,1,8,0,2\n";
  const std::string svg = (dir / "c.svg").string();
  Outcome ok = RunFlSim("compare --out " + svg + " " + (dir / "a").string() + "=dense " +
                        (dir / "b").string() + "=sketch");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("dense"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("sketch"), std::string::npos) << ok.output;
  EXPECT_TRUE(std::filesystem::file_size(svg) > 0);

  Outcome missing = RunFlSim("compare --out " + svg + " " + (dir / "nope").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("nope"), std::string::npos) << missing.output;
  std::ofstream(dir / "b" / "metrics.csv") << "garbage\n";
  Outcome bad = RunFlSim("compare --out " + svg + " " + (dir / "b").string());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("line 1"), std::string::npos) << bad.output;
  EXPECT_EQ(RunFlSim("compare").exit_code, 2);
  std::filesystem::remove_all(dir);
}

TEST(FlSimCliTest, ShippedConfigsLoad) {
  // The shipped config parses and names only known keys (a renamed key fails here), so
  // the README's command cannot rot unnoticed.
  Outcome o = RunFlSim("run --preset fortunes-gpt --config " + std::string(FL_SOURCE_DIR) +
                       "/configs/fortunes-gpt-ferret.yaml --print-config");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("upload_format: int4"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("name: ferret"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace fl::internal
