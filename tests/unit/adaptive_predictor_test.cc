// fl::AdaptivePredictor (no LibTorch) against the LibTorch reference it reproduces,
// VitTrainer, on real Fashion-MNIST test images: labels, logits and pool entries for every
// tuning, then the refusals.

#include "fl/adaptive_predictor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>
#include <string>

#include "data/idx_reader.h"
#include "infer/vit_kernel.h"
#include "torch/torch_trainer.h"
#include "torch/vit_trainer.h"

namespace fl {
namespace {

using internal::VitTrainer;
using internal::VitTrainerOptions;
using internal::VitTuning;
using ::testing::HasSubstr;

constexpr char kSmallVit[] = "vit:width=32,depth=2,heads=2";
constexpr int64_t kTestImages = 256;
constexpr int kEvalBatch = 64;

internal::ImageDataset Slice(internal::DatasetSplit split, int64_t n) {
  Result<internal::ImageDataset> full = internal::LoadMnistFormat(FL_FASHION_MNIST_DIR, split);
  EXPECT_TRUE(full.ok()) << full.status().ToString();
  if (!full.ok()) return {};
  internal::ImageDataset out = *full;
  out.images.resize(static_cast<size_t>(n * out.rows * out.cols));
  out.labels.resize(static_cast<size_t>(n));
  return out;
}

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The tensors of `params` that `keep` accepts, in order.
ParamSet Subset(const ParamSet& params, const std::function<bool(const std::string&)>& keep) {
  Layout layout;
  for (const TensorSpec& t : params.layout().tensors()) {
    if (keep(t.name)) layout.Add(t.name, t.shape);
  }
  ParamSet out(layout);
  for (size_t i = 0; i < layout.num_tensors(); ++i) {
    const auto from =
        params.tensor(static_cast<size_t>(params.layout().Find(layout.tensors()[i].name)));
    std::copy(from.begin(), from.end(), out.tensor(i).begin());
  }
  return out;
}

class AdaptivePredictorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    internal::SetTorchThreads(1);
    auto train = internal::MakeTensorImageData(Slice(internal::DatasetSplit::kTrain, 600), "cpu");
    test_pixels_ = new internal::ImageDataset(Slice(internal::DatasetSplit::kTest, kTestImages));
    auto test = internal::MakeTensorImageData(*test_pixels_, "cpu");
    ASSERT_TRUE(train.ok() && test.ok());
    train_ = new std::shared_ptr<const internal::TensorImageData>(*train);
    test_ = new std::shared_ptr<const internal::TensorImageData>(*test);
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
    delete test_pixels_;
  }

  static VitTrainerOptions Options(const std::string& vit, VitTuning tuning) {
    VitTrainerOptions o;
    o.vit = *internal::ParseVitModelName(vit);
    o.tuning = tuning;
    o.pool.entries = 5;
    o.pool.top_k = 2;
    o.eval_batch_size = kEvalBatch;
    return o;
  }

  static std::unique_ptr<VitTrainer> New(const VitTrainerOptions& o, const ParamSet* backbone) {
    auto t = VitTrainer::Create(o, backbone, *train_, *test_);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

  static void TrainSteps(VitTrainer* t, int steps, uint64_t seed) {
    ASSERT_TRUE(t->BindExamples(Range(600)).ok());
    TrainConfig c;
    c.local_steps = steps;
    c.lr = 0.05;
    c.momentum = 0.9;
    c.seed = seed;
    Result<TrainStats> stats = t->Train(c, CancelToken());
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  }

  // A backbone: the whole ViT after a little training from seed 7.
  static ParamSet Backbone(const std::string& vit) {
    VitTrainerOptions o = Options(vit, VitTuning::kFull);
    o.init_seed = 7;
    std::unique_ptr<VitTrainer> t = New(o, nullptr);
    TrainSteps(t.get(), 30, 1);
    ParamSet full;
    EXPECT_TRUE(t->GetFullModel(&full).ok());
    return full;
  }

  // A trainer of `o` on `backbone` whose tuned part took a few steps (so pool entries
  // and the SSF sets differ from their initialization and from each other).
  static std::unique_ptr<VitTrainer> Tuned(const VitTrainerOptions& o, const ParamSet& backbone) {
    std::unique_ptr<VitTrainer> t = New(o, &backbone);
    TrainSteps(t.get(), 8, 3);
    return t;
  }

  static std::unique_ptr<AdaptivePredictor> Predictor(const ParamSet& backbone,
                                                      const ParamSet& tuned,
                                                      const PredictorOptions& options) {
    auto p = AdaptivePredictor::Create(backbone, tuned, options);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(*p) : nullptr;
  }

  // The predictor's answers for the test images, in calls of `batch` images (a
  // batch_shared_ssf combination spans one call, as VitTrainer's spans one eval batch).
  static std::vector<Prediction> PredictAll(const AdaptivePredictor& p, int64_t batch) {
    std::vector<Prediction> all;
    const size_t pixels = 28 * 28;
    for (int64_t start = 0; start < kTestImages; start += batch) {
      const int64_t len = std::min(batch, kTestImages - start);
      auto part = p.Predict(test_pixels_->images.data() + start * pixels, static_cast<size_t>(len));
      EXPECT_TRUE(part.ok()) << part.status().ToString();
      if (!part.ok()) return {};
      all.insert(all.end(), part->begin(), part->end());
    }
    return all;
  }

  // Labels equal, logits within 1e-4 (absolute plus relative), entries identical.
  static void ExpectSame(const std::vector<Prediction>& got,
                         const std::vector<internal::VitPrediction>& want) {
    ASSERT_EQ(got.size(), want.size());
    ASSERT_GE(got.size(), 200u);
    float worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].logits.size(), want[i].logits.size());
      for (size_t c = 0; c < got[i].logits.size(); ++c) {
        const float diff = std::abs(got[i].logits[c] - want[i].logits[c]);
        worst = std::max(worst, diff);
        ASSERT_LE(diff, 1e-4f + 1e-4f * std::abs(want[i].logits[c]))
            << "image " << i << " class " << c;
      }
      EXPECT_EQ(got[i].label, want[i].label) << "image " << i;
      EXPECT_EQ(got[i].entries, want[i].entries) << "image " << i;
    }
    std::cout << "largest logit difference: " << worst << "\n";
  }

  static std::vector<internal::VitPrediction> Reference(VitTrainer* t) {
    auto r = t->PredictEvalRange(0, kTestImages);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<internal::VitPrediction>();
  }

  static size_t DistinctSelections(const std::vector<Prediction>& p) {
    std::set<std::vector<int32_t>> distinct;
    for (const Prediction& x : p) distinct.insert(x.entries);
    return distinct.size();
  }

  static PredictorOptions SmallOptions() {
    PredictorOptions o;
    o.heads = 2;
    o.top_k = 2;
    return o;
  }

  static std::shared_ptr<const internal::TensorImageData>* train_;
  static std::shared_ptr<const internal::TensorImageData>* test_;
  static internal::ImageDataset* test_pixels_;
};

std::shared_ptr<const internal::TensorImageData>* AdaptivePredictorTest::train_ = nullptr;
std::shared_ptr<const internal::TensorImageData>* AdaptivePredictorTest::test_ = nullptr;
internal::ImageDataset* AdaptivePredictorTest::test_pixels_ = nullptr;

TEST_F(AdaptivePredictorTest, BackboneAloneMatchesTheLibTorchForward) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = New(Options(kSmallVit, VitTuning::kHead), &backbone);
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, ParamSet(), SmallOptions());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->image_size(), 28);
  EXPECT_EQ(p->num_classes(), 10);
  EXPECT_EQ(p->pool_entries(), 0);
  ExpectSame(PredictAll(*p, kTestImages), Reference(t.get()));
}

TEST_F(AdaptivePredictorTest, FullTuningMatches) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = Tuned(Options(kSmallVit, VitTuning::kFull), backbone);
  ParamSet tuned;
  ASSERT_TRUE(t->GetParameters(&tuned).ok());
  const std::vector<internal::VitPrediction> want = Reference(t.get());
  // The fine-tuned model as the tuned part of the pretrained one, and as a backbone alone.
  ExpectSame(PredictAll(*Predictor(backbone, tuned, SmallOptions()), 100), want);
  ExpectSame(PredictAll(*Predictor(tuned, ParamSet(), SmallOptions()), 100), want);
}

TEST_F(AdaptivePredictorTest, HeadTuningMatches) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = Tuned(Options(kSmallVit, VitTuning::kHead), backbone);
  ParamSet tuned;
  ASSERT_TRUE(t->GetParameters(&tuned).ok());
  ASSERT_EQ(tuned.layout().num_tensors(), 2u);
  ExpectSame(PredictAll(*Predictor(backbone, tuned, SmallOptions()), 100), Reference(t.get()));
}

TEST_F(AdaptivePredictorTest, SsfTuningMatches) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = Tuned(Options(kSmallVit, VitTuning::kSsf), backbone);
  ParamSet tuned;
  ASSERT_TRUE(t->GetParameters(&tuned).ok());
  ExpectSame(PredictAll(*Predictor(backbone, tuned, SmallOptions()), 100), Reference(t.get()));
}

TEST_F(AdaptivePredictorTest, FedInsPoolMatchesPerInstance) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = Tuned(Options(kSmallVit, VitTuning::kSsfPool), backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, pool, SmallOptions());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->pool_entries(), 5);
  // Per-instance selection: how the images are split into calls does not matter.
  const std::vector<Prediction> got = PredictAll(*p, 100);
  ExpectSame(got, Reference(t.get()));
  EXPECT_GE(DistinctSelections(got), 2u) << "every image chose the same entries";
  for (const Prediction& x : got) EXPECT_EQ(x.entries.size(), 2u);
}

TEST_F(AdaptivePredictorTest, FedInsBatchSharedSsfMatchesPerCall) {
  const ParamSet backbone = Backbone(kSmallVit);
  VitTrainerOptions o = Options(kSmallVit, VitTuning::kSsfPool);
  o.pool.batch_shared_ssf = true;
  std::unique_ptr<VitTrainer> t = Tuned(o, backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  PredictorOptions options = SmallOptions();
  options.batch_shared_ssf = true;
  ExpectSame(PredictAll(*Predictor(backbone, pool, options), kEvalBatch), Reference(t.get()));
}

TEST_F(AdaptivePredictorTest, VitTinyFedInsPoolMatches) {
  const ParamSet backbone = Backbone("vit-tiny");
  VitTrainerOptions o = Options("vit-tiny", VitTuning::kSsfPool);
  o.pool.entries = 10;
  o.pool.top_k = 3;
  std::unique_ptr<VitTrainer> t = Tuned(o, backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, pool, PredictorOptions{});
  ASSERT_NE(p, nullptr);
  const std::vector<Prediction> got = PredictAll(*p, kTestImages);
  ExpectSame(got, Reference(t.get()));
  EXPECT_GE(DistinctSelections(got), 2u);
}

TEST_F(AdaptivePredictorTest, VitTinySsfTuningMatches) {
  const ParamSet backbone = Backbone("vit-tiny");
  std::unique_ptr<VitTrainer> t = Tuned(Options("vit-tiny", VitTuning::kSsf), backbone);
  ParamSet tuned;
  ASSERT_TRUE(t->GetParameters(&tuned).ok());
  ExpectSame(PredictAll(*Predictor(backbone, tuned, PredictorOptions{}), kTestImages),
             Reference(t.get()));
}

// The engine runs an AVX2 copy of the forward pass where the CPU has it; the baseline
// copy must match the reference as well.
TEST_F(AdaptivePredictorTest, BaselineInstructionSetCopyMatchesToo) {
  std::cout << "active copy: "
            << (internal::ActiveInferIsa() == internal::InferIsa::kAvx2 ? "avx2" : "baseline")
            << "\n";
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = Tuned(Options(kSmallVit, VitTuning::kSsfPool), backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, pool, SmallOptions());
  ASSERT_NE(p, nullptr);
  const std::vector<Prediction> best = PredictAll(*p, 100);
  internal::LimitInferIsa(internal::InferIsa::kBaseline);
  const std::vector<Prediction> baseline = PredictAll(*p, 100);
  internal::LimitInferIsa(internal::InferIsa::kAvx2);
  const std::vector<internal::VitPrediction> want = Reference(t.get());
  ExpectSame(baseline, want);
  ExpectSame(best, want);
}

TEST_F(AdaptivePredictorTest, SetTunedSwapsInANewerPool) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = New(Options(kSmallVit, VitTuning::kSsfPool), &backbone);
  ParamSet before;
  ASSERT_TRUE(t->GetParameters(&before).ok());
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, before, SmallOptions());
  ASSERT_NE(p, nullptr);
  TrainSteps(t.get(), 8, 5);
  ParamSet after;
  ASSERT_TRUE(t->GetParameters(&after).ok());
  ASSERT_TRUE(p->SetTuned(after).ok());
  ExpectSame(PredictAll(*p, 100), Reference(t.get()));
  // Back to the backbone alone.
  ASSERT_TRUE(p->SetTuned(ParamSet()).ok());
  EXPECT_EQ(p->pool_entries(), 0);
  EXPECT_TRUE(PredictAll(*p, 100).front().entries.empty());
}

TEST_F(AdaptivePredictorTest, RefusesABackboneThatIsNotATinyVit) {
  Layout layout;
  layout.Add("fc.weight", {10, 784});
  layout.Add("fc.bias", {10});
  auto refused = AdaptivePredictor::Create(ParamSet(layout), ParamSet(), PredictorOptions{});
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("not a TinyVit: no tensor \"cls\""));

  const ParamSet backbone = Backbone(kSmallVit);
  auto no_norm = AdaptivePredictor::Create(
      Subset(backbone, [](const std::string& n) { return n != "norm.bias"; }), ParamSet(),
      SmallOptions());
  EXPECT_EQ(no_norm.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(no_norm.status().message(), HasSubstr("\"norm.bias\""));

  PredictorOptions three_heads = SmallOptions();
  three_heads.heads = 3;
  auto bad_heads = AdaptivePredictor::Create(backbone, ParamSet(), three_heads);
  EXPECT_EQ(bad_heads.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_heads.status().message(),
              HasSubstr("heads 3 does not divide the backbone's width 32"));
}

TEST_F(AdaptivePredictorTest, RefusesTunedSetsThatDoNotFitTheBackbone) {
  const ParamSet backbone = Backbone(kSmallVit);
  VitTrainerOptions wider = Options("vit:width=64,depth=2,heads=2", VitTuning::kSsfPool);
  std::unique_ptr<VitTrainer> other = New(wider, nullptr);
  ParamSet wide_pool;
  ASSERT_TRUE(other->GetParameters(&wide_pool).ok());
  auto shapes = AdaptivePredictor::Create(backbone, wide_pool, SmallOptions());
  EXPECT_EQ(shapes.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(shapes.status().message(),
              HasSubstr("but the backbone (width 32, 10 classes, depth 2) needs"));

  std::unique_ptr<VitTrainer> t = New(Options(kSmallVit, VitTuning::kSsfPool), &backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  auto missing = AdaptivePredictor::Create(
      backbone, Subset(pool, [](const std::string& n) { return n != "pool.3.key"; }),
      SmallOptions());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("lacks \"pool.3.key\""));

  Layout unknown_layout;
  unknown_layout.Add("pool.0.colour", {32});
  auto unknown = AdaptivePredictor::Create(backbone, ParamSet(unknown_layout), SmallOptions());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("\"pool.0.colour\" is unknown"));

  Layout stray_layout;
  stray_layout.Add("head.weight", {10, 32});
  stray_layout.Add("adapter.weight", {32});
  auto stray = AdaptivePredictor::Create(backbone, ParamSet(stray_layout), SmallOptions());
  EXPECT_EQ(stray.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(stray.status().message(), HasSubstr("\"adapter.weight\" is unknown"));

  std::unique_ptr<VitTrainer> ssf = New(Options(kSmallVit, VitTuning::kSsf), &backbone);
  ParamSet ssf_set;
  ASSERT_TRUE(ssf->GetParameters(&ssf_set).ok());
  auto no_head = AdaptivePredictor::Create(
      backbone, Subset(ssf_set, [](const std::string& n) { return n.rfind("head.", 0) != 0; }),
      SmallOptions());
  EXPECT_EQ(no_head.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(no_head.status().message(), HasSubstr("lacks \"head.weight\""));
}

TEST_F(AdaptivePredictorTest, RefusesABadTopKAndKeepsThePreviousPool) {
  const ParamSet backbone = Backbone(kSmallVit);
  std::unique_ptr<VitTrainer> t = New(Options(kSmallVit, VitTuning::kSsfPool), &backbone);
  ParamSet pool;
  ASSERT_TRUE(t->GetParameters(&pool).ok());
  PredictorOptions zero = SmallOptions();
  zero.top_k = 0;
  auto refused = AdaptivePredictor::Create(backbone, ParamSet(), zero);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("top_k must be >= 1"));
  PredictorOptions six = SmallOptions();
  six.top_k = 6;
  auto too_many = AdaptivePredictor::Create(backbone, pool, six);
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr("top_k 6 exceeds the pool's 5 entries"));

  PredictorOptions three = SmallOptions();
  three.top_k = 3;
  std::unique_ptr<AdaptivePredictor> p = Predictor(backbone, pool, three);
  ASSERT_NE(p, nullptr);
  const std::vector<Prediction> before = PredictAll(*p, 100);
  ParamSet small_pool = Subset(pool, [](const std::string& n) {
    return n.rfind("pool.0.", 0) == 0 || n.rfind("pool.1.", 0) == 0;
  });
  EXPECT_EQ(p->SetTuned(small_pool).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p->pool_entries(), 5);
  const std::vector<Prediction> after = PredictAll(*p, 100);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].logits, before[i].logits);
    EXPECT_EQ(after[i].entries, before[i].entries);
  }
  EXPECT_EQ(p->Predict(nullptr, 3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(p->Predict(nullptr, 0)->empty());
}

}  // namespace
}  // namespace fl
