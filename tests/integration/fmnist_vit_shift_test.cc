// W3 fmnist-vit-shift end to end through the fl-sim binary, cut down to seconds: a tiny
// ViT pretrained for a few steps, then 2 rounds of each tuning on real Fashion-MNIST.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <set>
#include <string>
#include <vector>

namespace {

constexpr char kTinyVit[] = "vit:width=32,depth=1,heads=2";

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

std::vector<std::vector<std::string>> ReadCsv(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    rows.push_back(std::move(cells));
  }
  return rows;
}

std::string ReadBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class FmnistVitShiftTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("fmnist_vit_shift_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    backbone_ = (dir_ / "backbone.flps").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Outcome Pretrain() {
    return RunFlSim(std::string("pretrain --preset fmnist-vit-shift --model ") + kTinyVit +
                    " --steps 20 --epochs 0 --threads 1 --out " + backbone_ +
                    " --set data.test_examples=500 --data-dir " FL_FASHION_MNIST_DIR);
  }

  // The model and data flags of Run (and of export-model).
  std::string Flags(const std::string& algorithm, const std::string& tuning) const {
    return std::string("--preset fmnist-vit-shift --model ") + kTinyVit +
           " --set model.backbone=" + backbone_ + " --algorithm " + algorithm +
           " --set model.tuning=" + tuning + " --data-dir " FL_FASHION_MNIST_DIR;
  }

  // 2 rounds of 4 clients on the first 2,000 federated images, scored on 500 test images.
  Outcome Run(const std::string& algorithm, const std::string& tuning, const std::string& out) {
    return RunFlSim("run " + Flags(algorithm, tuning) +
                    " --rounds 2 --clients 4 --clients-per-round 4 --local-steps 3"
                    " --train-examples 2000 --test-examples 500 --eval-every 1 --workers 2"
                    " --progress none --out " +
                    out);
  }

  std::filesystem::path dir_;
  std::string backbone_;
};

TEST_F(FmnistVitShiftTest, PretrainThenEveryTuningRunsTwoRounds) {
  Outcome pre = Pretrain();
  ASSERT_EQ(pre.exit_code, 0) << pre.output;
  EXPECT_NE(pre.output.find("test accuracy, clean:"), std::string::npos) << pre.output;
  ASSERT_TRUE(std::filesystem::exists(backbone_));

  const std::vector<std::pair<std::string, std::string>> methods = {
      {"fedavg", "full"}, {"fedavg", "head"}, {"fedavg", "ssf"}, {"fedins", "fedins"}};
  for (const auto& [algorithm, tuning] : methods) {
    SCOPED_TRACE(algorithm + " + " + tuning);
    const std::filesystem::path out = dir_ / ("run-" + tuning);
    Outcome run = Run(algorithm, tuning, out.string());
    ASSERT_EQ(run.exit_code, 0) << run.output;

    const std::vector<std::vector<std::string>> metrics = ReadCsv(out / "metrics.csv");
    ASSERT_EQ(metrics.size(), 3u);  // header + 2 rounds
    ASSERT_GE(metrics[0].size(), 2u);
    EXPECT_EQ(metrics[0][0], "round");
    EXPECT_EQ(metrics[0][1], "accuracy");
    for (size_t r = 1; r < metrics.size(); ++r) {
      EXPECT_EQ(metrics[r][0], std::to_string(r));
      const double accuracy = std::stod(metrics[r][1]);
      EXPECT_GE(accuracy, 0.0);
      EXPECT_LE(accuracy, 1.0);
    }

    // One row per domain and one for all of them, which is the final metric.
    const std::vector<std::vector<std::string>> per_domain = ReadCsv(out / "per_domain.csv");
    ASSERT_EQ(per_domain.size(), 7u);
    EXPECT_EQ(per_domain[1][0], "clean");
    EXPECT_EQ(per_domain[1][1], "100");
    EXPECT_EQ(per_domain[6][0], "all");
    EXPECT_NEAR(std::stod(per_domain[6][2]), std::stod(metrics[2][1]), 1e-4);

    // export-model with the same flags writes the run's initial model, the file an
    // fl-server of this federation starts from.
    const std::string exported = (dir_ / ("initial-" + tuning + ".flps")).string();
    Outcome exp = RunFlSim("export-model " + Flags(algorithm, tuning) + " --out " + exported);
    ASSERT_EQ(exp.exit_code, 0) << exp.output;
    EXPECT_EQ(ReadBytes(exported), ReadBytes(out / "models" / "v0.flps"));

    // Only FedIns has pool entries to count: top_k = 3 of them per test image.
    const bool fedins = tuning == "fedins";
    EXPECT_EQ(std::filesystem::exists(out / "selection.csv"), fedins);
    if (fedins) {
      const std::vector<std::vector<std::string>> selection = ReadCsv(out / "selection.csv");
      ASSERT_EQ(selection.size(), 6u);
      ASSERT_EQ(selection[0].size(), 11u);  // domain + 10 entries
      long long picks = 0;
      for (size_t e = 1; e < selection[1].size(); ++e) picks += std::stoll(selection[1][e]);
      EXPECT_EQ(picks, 3 * 100);
    }
  }
}

// export-partition with a run's data flags lists that run's clients: the federated
// images 30,000 + [0, 2,000) once each, every client with its 3 domains.
TEST_F(FmnistVitShiftTest, ExportPartitionListsTheShiftedSplit) {
  const std::string out = (dir_ / "partition.json").string();
  Outcome exp = RunFlSim("export-partition --preset fmnist-vit-shift --clients 4 "
                         "--train-examples 2000 --data-dir " FL_FASHION_MNIST_DIR " --out " + out);
  ASSERT_EQ(exp.exit_code, 0) << exp.output;
  const nlohmann::json doc = nlohmann::json::parse(ReadBytes(out));
  ASSERT_EQ(doc["clients"].size(), 4u);
  ASSERT_EQ(doc["domains"].size(), 4u);
  EXPECT_EQ(doc["num_examples"], 2000);
  std::set<int64_t> images;
  for (size_t c = 0; c < 4; ++c) {
    const nlohmann::json& client = doc["clients"][c];
    ASSERT_EQ(client.size(), doc["domains"][c].size());
    for (int64_t image : client) {
      EXPECT_GE(image, 30000);
      EXPECT_LT(image, 32000);
      EXPECT_TRUE(images.insert(image).second) << image << " given twice";
    }
    const std::set<std::string> domains = doc["domains"][c].get<std::set<std::string>>();
    EXPECT_EQ(domains.size(), 3u) << "client " << c;
  }
  EXPECT_EQ(images.size(), 2000u);
}

TEST_F(FmnistVitShiftTest, ErrorsSayWhatToDo) {
  Outcome missing = Run("fedavg", "head", (dir_ / "missing").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("fl-sim pretrain --preset fmnist-vit-shift"), std::string::npos)
      << missing.output;

  Outcome mismatch = Run("fedins", "head", (dir_ / "mismatch").string());
  EXPECT_NE(mismatch.exit_code, 0);
  EXPECT_NE(mismatch.output.find("model.tuning=fedins"), std::string::npos) << mismatch.output;

  Outcome not_vit = RunFlSim("run --preset fmnist-vit-shift --model cnn --progress none --out " +
                             (dir_ / "cnn").string());
  EXPECT_NE(not_vit.exit_code, 0);
  EXPECT_NE(not_vit.output.find("needs a ViT"), std::string::npos) << not_vit.output;
}

}  // namespace
