#include "torch/torch_trainer.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include <gtest/gtest.h>

#include "codec/param_io.h"
#include "data/idx_reader.h"
#include "torch/model_zoo.h"

namespace fl::internal {
namespace {

// The first `n` images of a Fashion-MNIST split.
ImageDataset Slice(DatasetSplit split, int64_t n) {
  Result<ImageDataset> full = LoadMnistFormat(FL_FASHION_MNIST_DIR, split);
  EXPECT_TRUE(full.ok()) << full.status().ToString();
  if (!full.ok()) return {};
  ImageDataset out;
  out.rows = full->rows;
  out.cols = full->cols;
  out.num_classes = full->num_classes;
  out.images.assign(full->images.begin(), full->images.begin() + n * out.rows * out.cols);
  out.labels.assign(full->labels.begin(), full->labels.begin() + n);
  return out;
}

class TorchTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetTorchThreads(1);
    auto train = MakeTensorImageData(Slice(DatasetSplit::kTrain, 2000), "cpu");
    auto test = MakeTensorImageData(Slice(DatasetSplit::kTest, 1000), "cpu");
    ASSERT_TRUE(train.ok() && test.ok());
    train_ = new std::shared_ptr<const TensorImageData>(*train);
    test_ = new std::shared_ptr<const TensorImageData>(*test);
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
  }

  std::unique_ptr<TorchTrainer> NewTrainer(const std::string& model = "cnn", uint64_t seed = 1,
                                           bool with_eval = false) {
    TorchTrainerOptions options;
    options.model = model;
    options.init_seed = seed;
    auto t = TorchTrainer::Create(options, *train_, with_eval ? *test_ : nullptr);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

  static std::vector<int64_t> Range(int64_t begin, int64_t end) {
    std::vector<int64_t> v(end - begin);
    std::iota(v.begin(), v.end(), begin);
    return v;
  }

  static ParamSet Params(TorchTrainer& t) {
    ParamSet p;
    EXPECT_TRUE(t.GetParameters(&p).ok());
    return p;
  }

  static bool BitwiseEqual(const ParamSet& a, const ParamSet& b) {
    return a.size() == b.size() &&
           std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  }

  static double Distance(const ParamSet& a, const ParamSet& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      double d = static_cast<double>(a.data()[i]) - b.data()[i];
      s += d * d;
    }
    return std::sqrt(s);
  }

  static std::shared_ptr<const TensorImageData>* train_;
  static std::shared_ptr<const TensorImageData>* test_;
};

std::shared_ptr<const TensorImageData>* TorchTrainerTest::train_ = nullptr;
std::shared_ptr<const TensorImageData>* TorchTrainerTest::test_ = nullptr;

TEST_F(TorchTrainerTest, CnnLayoutFollowsRegistrationOrderAndHashIsStable) {
  Result<ParamSet> p = InitialModelParameters("cnn", 7);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  // The W1 architecture, written out independently of the model code.
  Layout expected;
  expected.Add("conv1.weight", {16, 1, 5, 5});
  expected.Add("conv1.bias", {16});
  expected.Add("conv2.weight", {32, 16, 5, 5});
  expected.Add("conv2.bias", {32});
  expected.Add("fc1.weight", {128, 1568});
  expected.Add("fc1.bias", {128});
  expected.Add("fc2.weight", {10, 128});
  expected.Add("fc2.bias", {10});
  EXPECT_EQ(p->layout().total_numel(), 215370u);
  ASSERT_EQ(p->layout().num_tensors(), expected.num_tensors());
  for (size_t i = 0; i < expected.num_tensors(); ++i) {
    EXPECT_EQ(p->layout().tensors()[i].name, expected.tensors()[i].name);
    EXPECT_EQ(p->layout().tensors()[i].shape, expected.tensors()[i].shape);
  }
  EXPECT_EQ(p->layout().hash(), expected.hash());
  auto trainer = NewTrainer("cnn", 99);
  EXPECT_EQ(trainer->layout().hash(), expected.hash());

  Result<ParamSet> mlp = InitialModelParameters("mlp", 7);
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(mlp->layout().total_numel(), 101770u);
  EXPECT_NE(mlp->layout().hash(), expected.hash());
  EXPECT_EQ(InitialModelParameters("resnet", 1).status().code(), StatusCode::kInvalidArgument);
}

// The layout examples/c_client.c and examples/python_client.py declare, written out here
// independently: a change to the model breaks this test before it breaks a federation.
TEST_F(TorchTrainerTest, LogRegIsTheOneLinearLayerTheCAndPythonExamplesDeclare) {
  Result<ParamSet> p = InitialModelParameters("logreg", 7);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Layout expected;
  expected.Add("fc.weight", {10, 784});
  expected.Add("fc.bias", {10});
  EXPECT_EQ(p->layout().hash(), expected.hash());
  EXPECT_EQ(p->layout().total_numel(), 7850u);

  auto trainer = NewTrainer("logreg", 7, /*with_eval=*/true);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(trainer->BindExamples(Range(0, 2000)).ok());
  Result<EvalStats> before = trainer->Evaluate();
  TrainConfig config;
  config.local_epochs = 1;
  config.batch_size = 32;
  config.lr = 0.05;
  config.seed = 3;
  ASSERT_TRUE(trainer->Train(config, CancelToken()).ok());
  Result<EvalStats> after = trainer->Evaluate();
  ASSERT_TRUE(before.ok() && after.ok());
  // One epoch over 2000 images takes softmax regression from chance to ~70%.
  EXPECT_GT(after->accuracy, before->accuracy + 0.3);
}

TEST_F(TorchTrainerTest, InitializationIsDeterministicInTheSeed) {
  Result<ParamSet> a = InitialModelParameters("cnn", 3);
  Result<ParamSet> b = InitialModelParameters("cnn", 3);
  Result<ParamSet> c = InitialModelParameters("cnn", 4);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(BitwiseEqual(*a, *b));
  EXPECT_FALSE(BitwiseEqual(*a, *c));
  EXPECT_TRUE(BitwiseEqual(Params(*NewTrainer("cnn", 3)), *a));
}

TEST_F(TorchTrainerTest, ParamSetRoundTripsThroughTheModule) {
  auto trainer = NewTrainer();
  ParamSet p(trainer->layout());
  for (size_t i = 0; i < p.size(); ++i) p.data()[i] = std::sin(static_cast<float>(i)) * 0.1f;
  ASSERT_TRUE(trainer->SetParameters(p).ok());
  EXPECT_TRUE(BitwiseEqual(Params(*trainer), p));
  // A ParamSet of another model is refused and leaves the weights alone.
  Result<ParamSet> mlp = InitialModelParameters("mlp", 1);
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(trainer->SetParameters(*mlp).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(BitwiseEqual(Params(*trainer), p));
}

TEST_F(TorchTrainerTest, TrainingOnRealDataLowersTheLoss) {
  auto trainer = NewTrainer();
  ASSERT_TRUE(trainer->BindExamples(Range(0, 1024)).ok());
  Result<EvalStats> before = trainer->Evaluate();  // no eval set: the bound examples
  ASSERT_TRUE(before.ok());
  TrainConfig config;
  config.lr = 0.05;
  config.momentum = 0.9;
  config.batch_size = 32;
  config.local_epochs = 2;
  config.seed = 5;
  CancelToken cancel;
  Result<TrainStats> stats = trainer->Train(config, cancel);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->num_examples, 2048u);
  EXPECT_EQ(stats->dataset_size, 1024u);
  EXPECT_TRUE(std::isfinite(stats->mean_loss));
  Result<EvalStats> after = trainer->Evaluate();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(before->loss, 2.0);  // untrained: about ln(10)
  EXPECT_LT(after->loss, 0.8 * before->loss);
  EXPECT_GT(after->accuracy, 0.6);
}

TEST_F(TorchTrainerTest, EvaluatesOnTheHeldOutSet) {
  auto trainer = NewTrainer("cnn", 1, /*with_eval=*/true);
  Result<EvalStats> e = trainer->Evaluate();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->num_examples, 1000u);
  EXPECT_GE(e->accuracy, 0.0);
  EXPECT_LT(e->accuracy, 0.35);  // untrained
  EXPECT_NEAR(e->loss, std::log(10.0), 0.3);
}

TEST_F(TorchTrainerTest, SeededTrainingIsBitwiseReproducible) {
  TrainConfig config;
  config.lr = 0.05;
  config.momentum = 0.5;
  config.weight_decay = 1e-4;
  config.local_steps = 20;
  config.seed = 77;
  CancelToken cancel;
  ParamSet results[3];
  for (int run = 0; run < 3; ++run) {
    auto t = NewTrainer("cnn", 11);
    ASSERT_TRUE(t->BindExamples(Range(100, 700)).ok());
    if (run == 2) config.seed = 78;
    Result<TrainStats> s = t->Train(config, cancel);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    // 600 examples: 18 full batches and one of 24 make an epoch; 20 steps run into the
    // next (reshuffled) epoch.
    EXPECT_EQ(s->num_examples, 18u * 32u + 24u + 32u);
    results[run] = Params(*t);
  }
  EXPECT_TRUE(BitwiseEqual(results[0], results[1]));
  EXPECT_FALSE(BitwiseEqual(results[0], results[2]));  // another shuffle
}

TEST_F(TorchTrainerTest, FedProxStaysCloserToTheAnchor) {
  Result<ParamSet> start = InitialModelParameters("cnn", 21);
  ASSERT_TRUE(start.ok());
  TrainConfig config;
  config.lr = 0.05;
  config.local_steps = 30;
  config.seed = 3;
  CancelToken cancel;
  double distance[2];
  for (int i = 0; i < 2; ++i) {
    auto t = NewTrainer("cnn", 1);
    ASSERT_TRUE(t->BindExamples(Range(0, 960)).ok());
    ASSERT_TRUE(t->SetParameters(*start).ok());
    config.prox_mu = i == 0 ? 0.0 : 5.0;
    ASSERT_TRUE(t->Train(config, cancel).ok());
    distance[i] = Distance(Params(*t), *start);
  }
  EXPECT_GT(distance[0], 0.0);
  EXPECT_LT(distance[1], 0.7 * distance[0]);
}

TEST_F(TorchTrainerTest, RejectsBadBindingsAndConfigsAndHonoursCancel) {
  auto trainer = NewTrainer("mlp");
  TrainConfig config;
  CancelToken cancel;
  EXPECT_EQ(trainer->Train(config, cancel).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(trainer->BindExamples({0, 1, 2000}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(trainer->BindExamples({-1}).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(trainer->BindExamples(Range(0, 64)).ok());
  EXPECT_EQ(trainer->num_bound_examples(), 64u);
  config.batch_size = 0;
  EXPECT_EQ(trainer->Train(config, cancel).status().code(), StatusCode::kInvalidArgument);
  config.batch_size = 32;
  cancel.Cancel();
  EXPECT_EQ(trainer->Train(config, cancel).status().code(), StatusCode::kCancelled);
}

TEST_F(TorchTrainerTest, DeviceResolution) {
  EXPECT_EQ(ResolveTorchDevice("tpu").status().code(), StatusCode::kInvalidArgument);
  Result<std::string> cpu = ResolveTorchDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(*cpu, "cpu");
  Result<std::string> automatic = ResolveTorchDevice("auto");
  ASSERT_TRUE(automatic.ok());
  Result<std::string> cuda = ResolveTorchDevice("cuda");
  if (*automatic == "cpu") {
    ASSERT_FALSE(cuda.ok());
    EXPECT_EQ(cuda.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(cuda.status().message().find("CUDA"), std::string::npos);
  } else {
    ASSERT_TRUE(cuda.ok());
    EXPECT_EQ(*cuda, "cuda");
  }
}

TEST_F(TorchTrainerTest, ExportedInitialModelParsesBack) {
  auto path = std::filesystem::temp_directory_path() /
              ("fl_model_export_" + std::to_string(::getpid()) + ".flps");
  ASSERT_TRUE(WriteInitialModel("cnn", 5, path.string()).ok());
  Result<std::string> bytes = Env::Default()->ReadFile(path.string());
  ASSERT_TRUE(bytes.ok());
  Result<ParamSet> parsed = ParseParamSet(*bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  Result<ParamSet> direct = InitialModelParameters("cnn", 5);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(parsed->layout().hash(), direct->layout().hash());
  EXPECT_TRUE(BitwiseEqual(*parsed, *direct));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace fl::internal
