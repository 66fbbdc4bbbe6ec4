// Tree aggregation (agg/aggregator_tree.h) with the real FedAvg aggregator, and the
// Coordinator folding concurrent pushes into its leaves. The float guarantee under test:
// the reported float32 mean is bitwise the serial fold's, for any arrival order, leaf
// count or thread count, except where the fp64 sum lies within rounding error of a
// float32 rounding boundary; such an element is accepted only if it is one.

#include "agg/aggregator_tree.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "algorithms/fedavg/dense_round_aggregator.h"
#include "algorithms/registry.h"
#include "codec/dense_codec.h"
#include "core/config.h"
#include "crypto/sha256.h"
#include "server/coordinator.h"

namespace fl::internal {
namespace {

// Two tensors of data-like deltas: a weight matrix and a bias, with different scales.
Layout TestLayout() {
  Layout layout;
  layout.Add("w", {64, 48});
  layout.Add("b", {48});
  return layout;
}

// Update i: zero-mean normal deltas (as SGD steps look), with a per-client scale and an
// example count between 20 and 600 as its weight; full float32 mantissas.
Payload DataLikeUpdate(const Layout& layout, int i) {
  std::mt19937_64 rng(1000 + i);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> examples(20, 600);
  const float scale = 1e-3f * static_cast<float>(1 + i % 7);
  std::vector<float> delta(ParamSet(layout).size());
  for (float& v : delta) v = scale * normal(rng);
  Payload p;
  EXPECT_TRUE(EncodeDense(delta, Encoding::kDenseF32, &p.bytes).ok());
  p.meta.num_examples = static_cast<uint64_t>(examples(rng));
  p.meta.weight = static_cast<double>(p.meta.num_examples);
  p.meta.train_loss = 0.5;
  p.meta.layout_hash = layout.hash();
  p.meta.encoding = Encoding::kDenseF32;
  p.meta.sha256 = Sha256(p.bytes);
  return p;
}

// The mean the test computes itself, serially in fp64, with the bound on its rounding
// error for each element (n additions of error <= 2^-53 * sum |w x|).
struct ReferenceMean {
  std::vector<double> mean;
  std::vector<double> error;
  double total_weight = 0;
};

ReferenceMean Reference(const std::vector<Payload>& updates) {
  ReferenceMean r;
  std::vector<double> sum, abs_sum;
  for (const Payload& p : updates) {
    std::vector<float> x(p.bytes.size() / 4);
    EXPECT_TRUE(DecodeDense(p.bytes, Encoding::kDenseF32, x).ok());
    sum.resize(x.size(), 0.0);
    abs_sum.resize(x.size(), 0.0);
    for (size_t j = 0; j < x.size(); ++j) {
      sum[j] += p.meta.weight * static_cast<double>(x[j]);
      abs_sum[j] += std::abs(p.meta.weight * static_cast<double>(x[j]));
    }
    r.total_weight += p.meta.weight;
  }
  const double n = static_cast<double>(updates.size());
  for (size_t j = 0; j < sum.size(); ++j) {
    r.mean.push_back(sum[j] / r.total_weight);
    r.error.push_back(4 * n * std::ldexp(abs_sum[j], -53) / r.total_weight);
  }
  return r;
}

// Elements of `got` that are not float(reference) and not explained by the caveat: a
// neighbouring float32 with the rounding midpoint between them within the reference's
// error bound.
int UnexplainedDifferences(const ParamSet& got, const ReferenceMean& ref, int* at_boundary) {
  int bad = 0;
  *at_boundary = 0;
  for (size_t j = 0; j < got.size(); ++j) {
    const float want = static_cast<float>(ref.mean[j]);
    const float g = got.data()[j];
    if (std::bit_cast<uint32_t>(g) == std::bit_cast<uint32_t>(want)) continue;
    const double mid = (static_cast<double>(g) + static_cast<double>(want)) / 2;
    if (std::nextafter(want, g) == g && std::abs(ref.mean[j] - mid) <= ref.error[j]) {
      ++*at_boundary;
    } else {
      ++bad;
    }
  }
  return bad;
}

// Folds `p` into the leaf AccumulateSerial picks.
std::function<Status(RoundAggregator&)> Fold(const Payload& p) {
  return [&p](RoundAggregator& leaf) { return leaf.Accumulate(p); };
}

class AggregatorTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 40; ++i) updates_.push_back(DataLikeUpdate(*layout_, i));
    reference_ = Reference(updates_);
  }

  AggregatorTree MakeTree(size_t leaves) {
    return AggregatorTree(leaves, [this] {
      return std::make_unique<DenseRoundAggregator>(layout_, /*round=*/0);
    });
  }

  // Reports `tree` and checks it against the reference.
  void ExpectReference(AggregatorTree& tree, const std::string& what) {
    Result<std::unique_ptr<RoundAggregator>> root = tree.TakeMerged();
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    ASSERT_NE(*root, nullptr);
    Result<AggregateReport> report = std::move(**root).Report();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->count, updates_.size()) << what;
    EXPECT_EQ(report->total_weight, reference_.total_weight) << what;  // integers: exact
    int at_boundary = 0;
    EXPECT_EQ(UnexplainedDifferences(report->mean_delta, reference_, &at_boundary), 0) << what;
    if (at_boundary > 0) std::printf("%s: %d elements at a float32 boundary\n", what.c_str(), at_boundary);
  }

  std::shared_ptr<const Layout> layout_ = std::make_shared<const Layout>(TestLayout());
  std::vector<Payload> updates_;
  ReferenceMean reference_;
};

TEST_F(AggregatorTreeTest, MeanDoesNotDependOnArrivalOrderOrLeafCount) {
  for (size_t leaves : {1, 2, 3, 4, 8, 64}) {
    for (uint64_t order_seed : {0, 1, 2}) {
      std::vector<size_t> order(updates_.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      if (order_seed > 0) std::shuffle(order.begin(), order.end(), std::mt19937_64(order_seed));
      AggregatorTree tree = MakeTree(leaves);
      for (size_t i : order) ASSERT_TRUE(tree.AccumulateSerial(Fold(updates_[i])).ok());
      EXPECT_EQ(tree.count(), updates_.size());
      ExpectReference(tree, "leaves " + std::to_string(leaves) + ", order " +
                                std::to_string(order_seed));
    }
  }
}

TEST_F(AggregatorTreeTest, ConcurrentFoldsMatchTheSerialFold) {
  for (size_t leaves : {2, 4}) {
    for (int threads : {2, 8}) {
      AggregatorTree tree = MakeTree(leaves);
      std::mutex mu;
      std::condition_variable freed;
      size_t next = 0;
      auto worker = [&] {
        std::unique_lock<std::mutex> lock(mu);
        while (next < updates_.size()) {
          std::optional<size_t> leaf = tree.Acquire();
          if (!leaf.has_value()) {
            freed.wait(lock);
            continue;
          }
          const Payload& p = updates_[next++];
          lock.unlock();
          Status s = tree.leaf(*leaf).Accumulate(p);
          lock.lock();
          EXPECT_TRUE(s.ok()) << s.ToString();
          tree.Release(*leaf);
          freed.notify_all();
        }
      };
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
      for (std::thread& t : pool) t.join();
      ASSERT_TRUE(tree.idle());
      ExpectReference(tree, "leaves " + std::to_string(leaves) + ", threads " +
                                std::to_string(threads));
    }
  }
}

TEST_F(AggregatorTreeTest, ARefusedUpdateLeavesTheTreeUnchanged) {
  AggregatorTree tree = MakeTree(2);
  Payload bad = updates_[0];
  float nan = std::nanf("");
  std::memcpy(bad.bytes.data() + 40, &nan, 4);
  EXPECT_EQ(tree.AccumulateSerial(Fold(bad)).code(), StatusCode::kInvalidArgument);
  for (const Payload& p : updates_) ASSERT_TRUE(tree.AccumulateSerial(Fold(p)).ok());
  ExpectReference(tree, "after a refused update");
}

// Merges record their order: (0+1), (2+3), then (01+23), then (+4).
class RecordingAggregator : public RoundAggregator {
 public:
  RecordingAggregator(std::string name, std::vector<std::string>* log)
      : name_(std::move(name)), log_(log) {}
  Status Accumulate(const Payload&) override {
    ++count_;
    return Status::Ok();
  }
  Status MergeWith(RoundAggregator&& other) override {
    auto& o = dynamic_cast<RecordingAggregator&>(other);
    log_->push_back(name_ + "+" + o.name_);
    name_ = "(" + name_ + "+" + o.name_ + ")";
    count_ += o.count_;
    return Status::Ok();
  }
  uint64_t count() const override { return count_; }
  bool CanReport() const override { return count_ > 0; }
  Result<AggregateReport> Report() && override { return AggregateReport{}; }

 private:
  std::string name_;
  std::vector<std::string>* log_;
  uint64_t count_ = 0;
};

TEST(AggregatorTreeOrderTest, LeavesMergePairwiseInIndexOrder) {
  std::vector<std::string> log;
  int made = 0;
  AggregatorTree tree(5, [&] {
    return std::make_unique<RecordingAggregator>(std::to_string(made++), &log);
  });
  // Acquire every leaf (creating 0..4 in order), fold into them out of order.
  std::vector<size_t> held;
  for (int i = 0; i < 5; ++i) held.push_back(*tree.Acquire());
  EXPECT_FALSE(tree.Acquire().has_value());
  for (size_t i : {4, 2, 0, 3, 1}) ASSERT_TRUE(tree.leaf(i).Accumulate(Payload{}).ok());
  for (size_t i : held) tree.Release(i);
  Result<std::unique_ptr<RoundAggregator>> root = tree.TakeMerged();
  ASSERT_TRUE(root.ok());
  EXPECT_EQ((*root)->count(), 5u);
  EXPECT_EQ(log, (std::vector<std::string>{"0+1", "2+3", "(0+1)+(2+3)", "((0+1)+(2+3))+4"}));
}

// The Coordinator with concurrent pushers against a serial run with one leaf.
class TreeCoordinatorTest : public ::testing::Test {
 protected:
  static constexpr int kClients = 24;

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_tree_coordinator_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    for (int i = 0; i < kClients; ++i) updates_.push_back(DataLikeUpdate(layout_, i));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CoordinatorOptions Options(CoordinatorMode mode, uint32_t leaves, const std::string& name) {
    CoordinatorOptions o;
    o.mode = mode;
    o.state_dir = (dir_ / name).string();
    o.durable = true;  // spool + ledger, as fl-server
    o.num_rounds = 100;
    o.min_clients = kClients;
    o.clients_per_round = kClients;
    o.aggregation_leaves = leaves;
    o.async.concurrency = kClients;
    o.async.buffer_size = 6;
    o.async.max_staleness = 100;
    return o;
  }

  struct Run {
    std::vector<RoundSummary> summaries;
    ModelSnapshot last;
  };

  // One round (sync) or kClients updates (async) pushed by `threads` threads.
  Run Federate(CoordinatorOptions o, int threads) {
    Result<Config> config = Config::Build(AlgorithmConfigDefaults(), "", {});
    Result<std::unique_ptr<Strategy>> strategy = CreateStrategy(*config);
    Result<std::unique_ptr<Coordinator>> c =
        Coordinator::Create(o, std::move(strategy).value(), ParamSet(layout_));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    Coordinator& coordinator = **c;
    Run run;
    std::mutex mu;
    coordinator.SetRoundCallback([&](const RoundSummary& s, const ModelSnapshot& m) {
      std::lock_guard<std::mutex> lock(mu);
      run.summaries.push_back(s);
      run.last = m;
    });
    std::vector<Session> sessions;
    for (int i = 0; i < kClients; ++i) {
      Result<JoinReply> joined = coordinator.Join("", "client-" + std::to_string(i));
      sessions.push_back(*coordinator.Authenticate(joined->session_token));
    }
    std::vector<Payload> pushes = updates_;
    for (int i = 0; i < kClients; ++i) {
      Result<Task> task = coordinator.PullTask(sessions[i], std::chrono::milliseconds(0));
      EXPECT_TRUE(task.ok() && task->kind == TaskKind::kTrain);
      pushes[i].meta.round = task->round;
      pushes[i].meta.base_version = task->model_version;
    }
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = t; i < kClients; i += threads) {
          Result<PushAck> ack = coordinator.PushUpdate(sessions[i], pushes[i]);
          EXPECT_TRUE(ack.ok() && !ack->duplicate) << ack.status().ToString();
        }
      });
    }
    for (std::thread& t : pool) t.join();
    open_buffer_ = coordinator.GetStatus().updates_in_round;
    return run;
  }

  Layout layout_ = TestLayout();
  std::filesystem::path dir_;
  std::vector<Payload> updates_;
  uint64_t open_buffer_ = 0;  // updates in the open round or buffer after Federate
};

TEST_F(TreeCoordinatorTest, ConcurrentPushesFoldEachUpdateOnceWithTheSerialMean) {
  Run serial = Federate(Options(CoordinatorMode::kSync, 1, "serial"), 1);
  ASSERT_EQ(serial.summaries.size(), 1u);
  const ReferenceMean reference = Reference(updates_);
  // FedAvg's server step adds the mean to the (zero) initial model.
  int at_boundary = 0;
  EXPECT_EQ(UnexplainedDifferences(*serial.last.params, reference, &at_boundary), 0);
  for (uint32_t leaves : {2, 4, 8}) {
    Run tree = Federate(Options(CoordinatorMode::kSync, leaves, "leaves" + std::to_string(leaves)), 8);
    ASSERT_EQ(tree.summaries.size(), 1u);
    EXPECT_EQ(tree.summaries[0].num_updates, static_cast<uint64_t>(kClients));
    EXPECT_EQ(tree.summaries[0].total_weight, reference.total_weight);
    EXPECT_EQ(tree.summaries[0].total_weight, serial.summaries[0].total_weight);
    EXPECT_EQ(UnexplainedDifferences(*tree.last.params, reference, &at_boundary), 0)
        << leaves << " leaves";
  }
}

// Every acknowledged update is in exactly one flush or in the open buffer, and parallel
// folds do not overfill a buffer (only pushes arriving while a flush waits for the
// previous model file join the full buffer, by design).
TEST_F(TreeCoordinatorTest, AsyncFlushesHoldEveryUpdateOnceUnderConcurrentPushes) {
  for (uint32_t leaves : {1, 4}) {
    SCOPED_TRACE(std::to_string(leaves) + " leaves");
    Run run = Federate(Options(CoordinatorMode::kAsync, leaves, "async" + std::to_string(leaves)), 8);
    ASSERT_FALSE(run.summaries.empty());
    uint64_t flushed = 0;
    for (const RoundSummary& s : run.summaries) {
      EXPECT_GE(s.num_updates, 6u) << "buffer " << s.round;
      EXPECT_GT(s.total_weight, 0);
      flushed += s.num_updates;
    }
    EXPECT_EQ(flushed + open_buffer_, static_cast<uint64_t>(kClients));
  }
}

}  // namespace
}  // namespace fl::internal
