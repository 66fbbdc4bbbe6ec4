// The byte-level GPT and its trainer on real fortune files.
#include "torch/lm_trainer.h"

#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "data/fortunes.h"
#include "torch/model_zoo.h"
#include "torch/models.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kTiny[] = "gpt:layers=2,width=32,heads=2,context=32";

const FortuneFile& Anekdoten() {
  static const FortuneFile* file = [] {
    const std::string path = std::string(kFortunesDefaultDir) + "/de/anekdoten";
    Result<std::string> text = Env::Default()->ReadFile(path);
    EXPECT_TRUE(text.ok()) << text.status().ToString();
    Result<FortuneFile> f = SplitFortuneFile("de", "anekdoten", path, text.ok() ? *text : "", 0.1);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return new FortuneFile(f.ok() ? *f : FortuneFile{});
  }();
  return *file;
}

std::unique_ptr<LmTrainer> NewTrainer(const std::string& model = kTiny, uint64_t seed = 1) {
  LmTrainerOptions options;
  options.model = model;
  options.init_seed = seed;
  Result<std::unique_ptr<LmTrainer>> t = LmTrainer::Create(options);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return nullptr;
  (*t)->BindText(Anekdoten().train_bytes(), {Anekdoten().heldout_bytes()});
  return std::move(*t);
}

TrainConfig AdamConfig(int steps) {
  TrainConfig c;
  c.local_steps = steps;
  c.batch_size = 8;
  c.lr = 3e-3;
  c.seed = 11;
  c.extra["optimizer"] = static_cast<int>(LmOptimizer::kAdam);
  c.extra["clip_norm"] = 1.0;
  return c;
}

class LmTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { SetTorchThreads(1); }
};

TEST_F(LmTrainerTest, ModelNames) {
  Result<GptOptions> tiny = ParseGptModelName("gpt-tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->layers, 4);
  EXPECT_EQ(tiny->width, 128);
  EXPECT_EQ(tiny->heads, 4);
  EXPECT_EQ(tiny->context, 128);
  Result<GptOptions> custom = ParseGptModelName("gpt:layers=2,heads=2");
  ASSERT_TRUE(custom.ok());
  EXPECT_EQ(custom->layers, 2);
  EXPECT_EQ(custom->width, 128);  // unspecified keys keep gpt-tiny's values
  EXPECT_FALSE(ParseGptModelName("gpt:layers=0").ok());
  EXPECT_FALSE(ParseGptModelName("gpt:width=30,heads=4").ok());
  EXPECT_FALSE(ParseGptModelName("gpt:depth=3").ok());
  EXPECT_FALSE(ParseGptModelName("gpt:layers=2x").ok());
  EXPECT_FALSE(ParseGptModelName("cnn").ok());
  EXPECT_EQ(CreateImageClassifier("gpt-tiny", 1).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LmTrainerTest, ParamSetHoldsEveryParameter) {
  Result<std::shared_ptr<GptImpl>> gpt = CreateGpt("gpt-tiny", 1);
  ASSERT_TRUE(gpt.ok());
  int64_t module_params = 0;
  for (const torch::Tensor& p : (*gpt)->parameters()) module_params += p.numel();
  Result<ParamSet> params = InitialModelParameters("gpt-tiny", 1);
  ASSERT_TRUE(params.ok()) << params.status().ToString();
  EXPECT_EQ(static_cast<int64_t>(params->size()), module_params);
  EXPECT_EQ(params->size(), 875264u);
  // 2 embeddings + 4 blocks x 12 tensors + final LayerNorm (2) + head.
  EXPECT_EQ(params->layout().num_tensors(), 2u + 4u * 12u + 2u + 1u);
  EXPECT_GE(params->layout().Find("blocks.3.attn.qkv.weight"), 0);
  EXPECT_GE(params->layout().Find("position_embedding.weight"), 0);
  Result<ParamSet> again = InitialModelParameters("gpt-tiny", 1);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(
      std::equal(params->values().begin(), params->values().end(), again->values().begin()));
}

TEST_F(LmTrainerTest, ForwardShapesAndCausality) {
  Result<std::shared_ptr<GptImpl>> gpt = CreateGpt(kTiny, 3);
  ASSERT_TRUE(gpt.ok());
  torch::NoGradGuard no_grad;
  (*gpt)->eval();
  torch::Tensor tokens = torch::randint(0, 256, {2, 32}, torch::kLong);
  torch::Tensor logits = (*gpt)->forward(tokens);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 32, 256}));
  torch::Tensor changed = tokens.clone();
  changed[0][20] = (tokens[0][20].item<int64_t>() + 1) % 256;
  torch::Tensor other = (*gpt)->forward(changed);
  // Positions before the change see exactly the same inputs.
  EXPECT_TRUE(torch::equal(other.narrow(1, 0, 20), logits.narrow(1, 0, 20)));
  EXPECT_FALSE(torch::allclose(other[0].narrow(0, 20, 12), logits[0].narrow(0, 20, 12)));
  EXPECT_TRUE(torch::equal(other[1], logits[1]));  // the other sequence is untouched
  // Shorter inputs are fine; longer than the context is an error, not a crash.
  EXPECT_EQ((*gpt)->forward(tokens.narrow(1, 0, 5)).size(1), 5);
  EXPECT_THROW((*gpt)->forward(torch::zeros({1, 33}, torch::kLong)), std::exception);
}

TEST_F(LmTrainerTest, UntrainedModelCostsAboutEightBitsPerByte) {
  std::unique_ptr<LmTrainer> t = NewTrainer("gpt-tiny", 5);
  ASSERT_TRUE(t);
  Result<EvalStats> e = t->Evaluate();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->num_examples, Anekdoten().heldout_bytes().size() - 1);  // every byte but the first
  EXPECT_NEAR(e->loss / kLn2, 8.0, 0.15);
}

TEST_F(LmTrainerTest, EvaluationCoversEveryByteOnce) {
  std::unique_ptr<LmTrainer> t = NewTrainer();
  ASSERT_TRUE(t);
  const std::string_view text = Anekdoten().text;
  std::vector<std::string_view> texts = {text.substr(0, 1000), text.substr(1000, 33),
                                         text.substr(2000, 1), text.substr(3000, 65)};
  Result<EvalStats> pooled = t->EvaluateTexts(texts);
  ASSERT_TRUE(pooled.ok()) << pooled.status().ToString();
  EXPECT_EQ(pooled->num_examples, 999u + 32u + 0u + 64u);
  // Pooling is weighted by bytes: the same as evaluating one by one.
  double loss = 0;
  for (std::string_view s : texts) {
    Result<EvalStats> one = t->EvaluateTexts({s});
    ASSERT_TRUE(one.ok());
    loss += one->loss * static_cast<double>(one->num_examples);
  }
  EXPECT_NEAR(pooled->loss, loss / 1095.0, 1e-5);
}

TEST_F(LmTrainerTest, AdamTrainingLowersHeldOutLossAndIsDeterministic) {
  std::unique_ptr<LmTrainer> a = NewTrainer(kTiny, 2);
  std::unique_ptr<LmTrainer> b = NewTrainer(kTiny, 2);
  ASSERT_TRUE(a && b);
  Result<EvalStats> before = a->Evaluate();
  ASSERT_TRUE(before.ok());
  std::vector<double> step_losses;
  a->set_step_callback([&](int64_t step, double loss) {
    EXPECT_EQ(step, static_cast<int64_t>(step_losses.size()));
    step_losses.push_back(loss);
  });
  CancelToken cancel;
  Result<TrainStats> sa = a->Train(AdamConfig(40), cancel);
  ASSERT_TRUE(sa.ok()) << sa.status().ToString();
  EXPECT_EQ(sa->dataset_size, Anekdoten().train_bytes().size());
  EXPECT_EQ(sa->num_examples, 40u * 8u * 32u);
  ASSERT_EQ(step_losses.size(), 40u);
  EXPECT_LT(step_losses.back(), step_losses.front() - 1.0);
  Result<EvalStats> after = a->Evaluate();
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->loss, before->loss - 1.0) << before->loss << " -> " << after->loss;

  Result<TrainStats> sb = b->Train(AdamConfig(40), cancel);
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sa->mean_loss, sb->mean_loss);
  ParamSet pa, pb;
  ASSERT_TRUE(a->GetParameters(&pa).ok() && b->GetParameters(&pb).ok());
  EXPECT_TRUE(std::equal(pa.values().begin(), pa.values().end(), pb.values().begin()));

  // Another seed draws other windows.
  std::unique_ptr<LmTrainer> c = NewTrainer(kTiny, 2);
  TrainConfig other = AdamConfig(40);
  other.seed = 12;
  Result<TrainStats> sc = c->Train(other, cancel);
  ASSERT_TRUE(sc.ok());
  EXPECT_NE(sc->mean_loss, sa->mean_loss);
}

TEST_F(LmTrainerTest, SgdDefaultsCosineScheduleAndBadExtras) {
  std::unique_ptr<LmTrainer> t = NewTrainer();
  ASSERT_TRUE(t);
  ParamSet start;
  ASSERT_TRUE(t->GetParameters(&start).ok());
  TrainConfig sgd;
  sgd.local_steps = 10;
  sgd.batch_size = 4;
  sgd.lr = 0.5;
  sgd.extra["lr_schedule"] = static_cast<int>(LmSchedule::kCosine);
  sgd.extra["warmup_steps"] = 3;
  CancelToken cancel;
  Result<TrainStats> s = t->Train(sgd, cancel);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE(std::isfinite(s->mean_loss));
  ParamSet trained;
  ASSERT_TRUE(t->GetParameters(&trained).ok());
  EXPECT_FALSE(std::equal(start.values().begin(), start.values().end(), trained.values().begin()));

  // local_steps = 0: one epoch's worth of windows over the training bytes.
  TrainConfig epoch = sgd;
  epoch.local_steps = 0;
  epoch.local_epochs = 1;
  epoch.batch_size = 64;
  Result<TrainStats> e = t->Train(epoch, cancel);
  ASSERT_TRUE(e.ok());
  const uint64_t bytes = Anekdoten().train_bytes().size();
  EXPECT_GE(e->num_examples, bytes);
  EXPECT_LT(e->num_examples, bytes + 64u * 32u);

  for (auto [key, value] : std::vector<std::pair<std::string, TrainValue>>{
           {"optimizer", 2},
           {"optimizer", 0.5},
           {"optimizer", "adam"},
           {"clip_norm", -1},
           {"clip_norm", true},
           {"lr_schedule", 7}}) {
    TrainConfig bad = sgd;
    bad.extra[key] = value;
    EXPECT_EQ(t->Train(bad, cancel).status().code(), StatusCode::kInvalidArgument) << key;
  }
  t->BindText("x", {});
  EXPECT_EQ(t->Train(sgd, cancel).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(t->Evaluate().status().code(), StatusCode::kFailedPrecondition);
  LmTrainerOptions cnn;
  cnn.model = "cnn";
  EXPECT_EQ(LmTrainer::Create(cnn).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LmTrainerTest, ParametersRoundTripAcrossTrainers) {
  std::unique_ptr<LmTrainer> a = NewTrainer(kTiny, 1);
  std::unique_ptr<LmTrainer> b = NewTrainer(kTiny, 9);
  ASSERT_TRUE(a && b);
  CancelToken cancel;
  ASSERT_TRUE(a->Train(AdamConfig(5), cancel).ok());
  ParamSet p;
  ASSERT_TRUE(a->GetParameters(&p).ok());
  ASSERT_TRUE(b->SetParameters(p).ok());
  Result<EvalStats> ea = a->Evaluate(), eb = b->Evaluate();
  ASSERT_TRUE(ea.ok() && eb.ok());
  EXPECT_DOUBLE_EQ(ea->loss, eb->loss);
  Result<ParamSet> other = InitialModelParameters("gpt:layers=1,width=32,heads=2,context=32", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(b->SetParameters(*other).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fl::internal
