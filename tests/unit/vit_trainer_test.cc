#include "torch/vit_trainer.h"

#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "data/idx_reader.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kSmallVit[] = "vit:width=32,depth=2,heads=2";

ImageDataset Slice(DatasetSplit split, int64_t n) {
  Result<ImageDataset> full = LoadMnistFormat(FL_FASHION_MNIST_DIR, split);
  EXPECT_TRUE(full.ok()) << full.status().ToString();
  if (!full.ok()) return {};
  ImageDataset out = *full;
  out.images.resize(static_cast<size_t>(n * out.rows * out.cols));
  out.labels.resize(static_cast<size_t>(n));
  return out;
}

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

class VitTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetTorchThreads(1);
    auto train = MakeTensorImageData(Slice(DatasetSplit::kTrain, 600), "cpu");
    auto test = MakeTensorImageData(Slice(DatasetSplit::kTest, 200), "cpu");
    ASSERT_TRUE(train.ok() && test.ok());
    train_ = new std::shared_ptr<const TensorImageData>(*train);
    test_ = new std::shared_ptr<const TensorImageData>(*test);
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
  }

  static VitTrainerOptions Options(VitTuning tuning) {
    VitTrainerOptions o;
    o.vit = *ParseVitModelName(kSmallVit);
    o.tuning = tuning;
    o.pool.entries = 5;
    o.pool.top_k = 2;
    o.eval_batch_size = 64;
    return o;
  }

  static std::unique_ptr<VitTrainer> New(const VitTrainerOptions& o, const ParamSet* backbone) {
    auto t = VitTrainer::Create(o, backbone, *train_, *test_);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

  // A backbone: the whole small ViT after a little training from seed 7.
  static ParamSet Backbone() {
    VitTrainerOptions o = Options(VitTuning::kFull);
    o.init_seed = 7;
    std::unique_ptr<VitTrainer> t = New(o, nullptr);
    EXPECT_TRUE(t->BindExamples(Range(600)).ok());
    TrainConfig c;
    c.local_steps = 30;
    c.lr = 0.05;
    c.momentum = 0.9;
    EXPECT_TRUE(t->Train(c, CancelToken()).ok());
    ParamSet full;
    EXPECT_TRUE(t->GetFullModel(&full).ok());
    return full;
  }

  static std::shared_ptr<const TensorImageData>* train_;
  static std::shared_ptr<const TensorImageData>* test_;
};

std::shared_ptr<const TensorImageData>* VitTrainerTest::train_ = nullptr;
std::shared_ptr<const TensorImageData>* VitTrainerTest::test_ = nullptr;

TEST(VitModelNameTest, ParsesShapesAndRefusesBadOnes) {
  Result<VitOptions> tiny = ParseVitModelName("vit-tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->width, 128);
  EXPECT_EQ(tiny->depth, 4);
  Result<VitOptions> small = ParseVitModelName("vit:width=64,depth=6,heads=8");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->width, 64);
  EXPECT_EQ(small->depth, 6);
  EXPECT_EQ(small->heads, 8);
  EXPECT_FALSE(ParseVitModelName("vit:width=30,heads=4").ok());  // heads must divide width
  EXPECT_FALSE(ParseVitModelName("vit:patch=5").ok());           // 5 does not divide 28
  EXPECT_FALSE(ParseVitModelName("vit:colour=3").ok());
  EXPECT_FALSE(ParseVitModelName("cnn").ok());
}

TEST_F(VitTrainerTest, EachTuningFederatesItsOwnPart) {
  const VitOptions vit = *ParseVitModelName(kSmallVit);
  const size_t points = 1 + 6 * static_cast<size_t>(vit.depth) + 1;
  std::unique_ptr<VitTrainer> full = New(Options(VitTuning::kFull), nullptr);
  EXPECT_EQ(full->layout().hash(), FullVitLayout(vit)->hash());
  std::unique_ptr<VitTrainer> head = New(Options(VitTuning::kHead), nullptr);
  ASSERT_EQ(head->layout().num_tensors(), 2u);
  EXPECT_EQ(head->layout().tensors()[0].name, "head.weight");
  std::unique_ptr<VitTrainer> ssf = New(Options(VitTuning::kSsf), nullptr);
  EXPECT_EQ(ssf->layout().num_tensors(), 2 * points + 2);
  EXPECT_GE(ssf->layout().Find("ssf.blocks.1.fc1.gamma"), 0);
  std::unique_ptr<VitTrainer> pool = New(Options(VitTuning::kSsfPool), nullptr);
  EXPECT_EQ(pool->layout().num_tensors(), 5 * (2 * points + 3));
  EXPECT_GE(pool->layout().Find("pool.4.key"), 0);
  EXPECT_GE(pool->layout().Find("pool.0.head.bias"), 0);
  // The pool is a small fraction of the model it adapts.
  EXPECT_LT(pool->layout().total_numel(), full->layout().total_numel());
}

TEST_F(VitTrainerTest, PoolKeysAreTruncatedNormalNotClamped) {
  VitTrainerOptions o = Options(VitTuning::kSsfPool);
  o.pool.entries = 40;
  std::unique_ptr<VitTrainer> t = New(o, nullptr);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  size_t keys = 0;
  for (size_t i = 0; i < pool.layout().num_tensors(); ++i) {
    if (!pool.layout().tensors()[i].name.ends_with(".key")) continue;
    ++keys;
    for (float v : pool.tensor(i)) {
      EXPECT_LT(std::fabs(v), 0.04f);  // strictly inside: nothing piled on the bound
    }
  }
  EXPECT_EQ(keys, 40u);
}

TEST_F(VitTrainerTest, RefusesABackboneOfAnotherShape) {
  VitTrainerOptions other = Options(VitTuning::kFull);
  other.vit.width = 16;
  std::unique_ptr<VitTrainer> t = New(other, nullptr);
  ParamSet wrong;
  ASSERT_TRUE(t->GetFullModel(&wrong).ok());
  auto refused = VitTrainer::Create(Options(VitTuning::kSsf), &wrong, *train_, *test_);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(VitTrainerTest, PoolTrainingLeavesTheBackboneAndUnselectedEntriesAlone) {
  const ParamSet backbone = Backbone();
  std::unique_ptr<VitTrainer> t = New(Options(VitTuning::kSsfPool), &backbone);
  ParamSet before;
  ASSERT_TRUE(t->GetParameters(&before).ok());
  ASSERT_TRUE(t->BindExamples(Range(200)).ok());
  TrainConfig c;
  c.local_steps = 5;
  c.lr = 0.05;
  Result<TrainStats> stats = t->Train(c, CancelToken());
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  ParamSet after, full_after;
  ASSERT_TRUE(t->GetParameters(&after).ok());
  ASSERT_TRUE(t->GetFullModel(&full_after).ok());
  EXPECT_TRUE(std::equal(backbone.values().begin(), backbone.values().end(),
                         full_after.values().begin()));
  // Every selected entry's tensors carry a weight; each example picks top_k entries.
  std::set<int> weighted_entries;
  double sum = 0;
  for (const auto& [name, fraction] : stats->tensor_weights) {
    EXPECT_GT(fraction, 0);
    EXPECT_LE(fraction, 1);
    if (name.ends_with(".key")) {
      weighted_entries.insert(std::stoi(name.substr(5)));
      sum += fraction;
    }
  }
  EXPECT_NEAR(sum, 2.0, 1e-9);
  for (size_t i = 0; i < before.layout().num_tensors(); ++i) {
    const std::string& name = before.layout().tensors()[i].name;
    const bool weighted = stats->tensor_weights.count(name) > 0;
    std::span<const float> a = before.tensor(i), b = after.tensor(i);
    const bool changed = !std::equal(a.begin(), a.end(), b.begin());
    if (!weighted) EXPECT_FALSE(changed) << name << " changed without being selected";
    if (weighted && name.ends_with(".key")) EXPECT_TRUE(changed) << name;
  }
}

TEST_F(VitTrainerTest, RarelySelectedEntriesStayHomeBelowTheUploadThreshold) {
  const ParamSet backbone = Backbone();
  auto weighted_entries = [&](double min_fraction) {
    std::unique_ptr<VitTrainer> t = New(Options(VitTuning::kSsfPool), &backbone);
    EXPECT_TRUE(t->BindExamples(Range(200)).ok());
    TrainConfig c;
    c.local_steps = 5;
    c.lr = 0.05;
    c.extra["fedins.upload_min_fraction"] = min_fraction;
    Result<TrainStats> stats = t->Train(c, CancelToken());
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    std::map<std::string, double> keys;
    for (const auto& [name, fraction] : stats->tensor_weights) {
      if (name.ends_with(".key")) keys[name] = fraction;
    }
    return keys;
  };
  const std::map<std::string, double> all = weighted_entries(0.0);
  double smallest = 1;
  for (const auto& [name, fraction] : all) smallest = std::min(smallest, fraction);
  ASSERT_LT(smallest, 1.0);
  // A threshold just above the rarest entry's share drops exactly the entries below it.
  const std::map<std::string, double> kept = weighted_entries(smallest + 1e-9);
  EXPECT_LT(kept.size(), all.size());
  for (const auto& [name, fraction] : all) {
    EXPECT_EQ(kept.count(name) > 0, fraction > smallest) << name;
    if (kept.count(name)) EXPECT_EQ(kept.at(name), fraction);
  }
  TrainConfig bad;
  bad.extra["fedins.upload_min_fraction"] = 1.5;
  std::unique_ptr<VitTrainer> t = New(Options(VitTuning::kSsfPool), &backbone);
  ASSERT_TRUE(t->BindExamples(Range(10)).ok());
  EXPECT_EQ(t->Train(bad, CancelToken()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(VitTrainerTest, PerInstanceSelectionMatchesOneImageAtATime) {
  const ParamSet backbone = Backbone();
  VitTrainerOptions o = Options(VitTuning::kSsfPool);
  o.init_seed = 3;
  std::unique_ptr<VitTrainer> t = New(o, &backbone);
  Result<std::vector<VitPrediction>> batch = t->PredictEvalRange(0, 40);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  std::set<std::vector<int32_t>> distinct;
  for (int64_t i = 0; i < 40; ++i) {
    Result<std::vector<VitPrediction>> one = t->PredictEvalRange(i, i + 1);
    ASSERT_TRUE(one.ok());
    const VitPrediction& a = (*batch)[static_cast<size_t>(i)];
    const VitPrediction& b = (*one)[0];
    EXPECT_EQ(a.entries, b.entries);
    EXPECT_EQ(a.label, b.label);
    for (size_t c = 0; c < a.logits.size(); ++c) EXPECT_NEAR(a.logits[c], b.logits[c], 1e-4);
    distinct.insert(a.entries);
  }
  // With random keys, instances do not all pick the same entries.
  EXPECT_GT(distinct.size(), 1u);
}

TEST_F(VitTrainerTest, BatchSharedSsfCombinesOneSetPerBatch) {
  const ParamSet backbone = Backbone();
  VitTrainerOptions o = Options(VitTuning::kSsfPool);
  o.pool.batch_shared_ssf = true;
  std::unique_ptr<VitTrainer> t = New(o, &backbone);
  // Batch-shared: an instance's logits depend on the other instances in its batch.
  Result<std::vector<VitPrediction>> batch = t->PredictEvalRange(0, 40);
  Result<std::vector<VitPrediction>> alone = t->PredictEvalRange(0, 1);
  ASSERT_TRUE(batch.ok() && alone.ok());
  float diff = 0;
  for (size_t c = 0; c < alone->front().logits.size(); ++c) {
    diff += std::fabs(alone->front().logits[c] - batch->front().logits[c]);
  }
  EXPECT_GT(diff, 1e-5);
}

TEST_F(VitTrainerTest, CachedQueriesGiveTheSamePredictionsAsRawImages) {
  const ParamSet backbone = Backbone();
  std::unique_ptr<VitTrainer> t = New(Options(VitTuning::kSsfPool), &backbone);
  Result<std::vector<VitPrediction>> cached = t->PredictEvalRange(0, 20);
  ASSERT_TRUE(cached.ok());
  // The same 20 test images through Predict (no cache): normalized pixels.
  ImageDataset test = Slice(DatasetSplit::kTest, 20);
  std::vector<float> pixels(test.images.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    pixels[i] = (static_cast<float>(test.images[i]) / 255.0f - 0.2860f) / 0.3530f;
  }
  Result<std::vector<VitPrediction>> raw = t->Predict(pixels.data(), 20);
  ASSERT_TRUE(raw.ok());
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ((*cached)[i].entries, (*raw)[i].entries);
    EXPECT_EQ((*cached)[i].label, (*raw)[i].label);
  }
}

TEST_F(VitTrainerTest, FineTuningTheHeadOnAPretrainedBackboneLearns) {
  const ParamSet backbone = Backbone();
  std::unique_ptr<VitTrainer> t = New(Options(VitTuning::kSsf), &backbone);
  Result<EvalStats> before = t->Evaluate();
  ASSERT_TRUE(t->BindExamples(Range(600)).ok());
  TrainConfig c;
  c.local_steps = 40;
  c.lr = 0.05;
  c.momentum = 0.9;
  ASSERT_TRUE(t->Train(c, CancelToken()).ok());
  Result<EvalStats> after = t->Evaluate();
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_LT(after->loss, before->loss);
}

}  // namespace
}  // namespace fl::internal
