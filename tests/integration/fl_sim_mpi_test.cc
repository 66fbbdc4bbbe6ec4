// fl-sim under mpirun (simulations/mpi_backend.h): the same federation run in one process
// and spread over 2 and 4 ranks (4 oversubscribe a 2-core machine) ends with the same
// global model, bit for bit, and the same per-round records; an algorithm without
// partial aggregates is refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"

namespace fl::internal {
namespace {

// 8 clients on 2,000 images, 4 per round, 3 rounds: a few seconds per run.
const std::vector<std::string> kRunArgs = {
    "run",  "--preset",    "fmnist-cnn", "--clients",        "8",    "--clients-per-round",
    "4",    "--rounds",    "3",          "--train-examples", "2000", "--test-examples",
    "1000", "--partition", "iid",        "--progress",       "none"};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// metrics.csv without the host-timed columns (wall_seconds, samples_per_sec).
std::string DeterministicMetrics(const std::string& csv) {
  std::istringstream in(csv);
  std::string out, line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::istringstream row(line);
    for (std::string cell; std::getline(row, cell, ',');) cells.push_back(cell);
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i == 8 || i == 10) continue;  // wall_seconds, samples_per_sec
      out += cells[i] + ",";
    }
    out += "\n";
  }
  return out;
}

class FlSimMpiTest : public ProcessTest {
 protected:
  FlSimMpiTest() : ProcessTest("fl_sim_mpi") {}

  void SetUp() override {
    ProcessTest::SetUp();
    // CI runs as root in a container: OpenMPI refuses root without these, and its
    // shared-memory transport's single-copy mechanism (CMA) needs ptrace rights a
    // container may not grant.
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
    ::setenv("OMPI_MCA_btl", "self,vader", 1);
  }

  // fl-sim with `extra` arguments, under mpirun with `ranks` ranks (1: alone), writing
  // to <dir>/<name>; its exit status.
  int RunFlSim(const std::string& name, int ranks, std::vector<std::string> extra = {},
               bool expect_ok = true) {
    std::vector<std::string> argv;
    if (ranks > 1) {
      argv = {FL_MPIEXEC, "-np", std::to_string(ranks), "--oversubscribe"};
    }
    argv.push_back(Binary("simulations/fl-sim"));
    argv.insert(argv.end(), kRunArgs.begin(), kRunArgs.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("--out");
    argv.push_back(Path(name));
    if (expect_ok) return RunToCompletion(name, argv);
    Subprocess* p = Spawn(name, argv);
    std::optional<int> code = p->Wait(std::chrono::seconds(120));
    return code.value_or(-1);
  }
};

TEST_F(FlSimMpiTest, RanksGiveTheSingleProcessModelBitForBit) {
  ASSERT_EQ(RunFlSim("single", 1), 0);
  ASSERT_EQ(RunFlSim("np2", 2), 0);
  ASSERT_EQ(RunFlSim("np4", 4), 0);
  const std::string model = ReadFile(Path("single/models/v3.flps"));
  ASSERT_GT(model.size(), 100000u);  // the CNN's parameters after round 3
  EXPECT_TRUE(ReadFile(Path("np2/models/v3.flps")) == model) << "-np 2 model differs";
  EXPECT_TRUE(ReadFile(Path("np4/models/v3.flps")) == model) << "-np 4 model differs";
  // Every round's accuracy, losses, bytes, clients, samples and simulated time.
  const std::string metrics = DeterministicMetrics(ReadFile(Path("single/metrics.csv")));
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 4);  // header + 3 rounds
  EXPECT_EQ(DeterministicMetrics(ReadFile(Path("np2/metrics.csv"))), metrics);
  EXPECT_EQ(DeterministicMetrics(ReadFile(Path("np4/metrics.csv"))), metrics);
}

TEST_F(FlSimMpiTest, AggregatorWithoutPartialsIsRefusedByName) {
  const int code = RunFlSim("median", 2, {"--set", "algorithm.aggregator=median"}, false);
  EXPECT_NE(code, 0);
  const std::string log = ReadFile(Path("median.log"));
  EXPECT_NE(log.find("algorithm fedavg (aggregator median) has no partial aggregate"),
            std::string::npos)
      << log;
}

}  // namespace
}  // namespace fl::internal
