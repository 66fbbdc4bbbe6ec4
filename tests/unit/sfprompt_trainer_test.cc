// VitTrainer's tuning sfprompt against a split body server in this process: one split
// step equals one SGD step of the whole model, EL2N keeps the hardest examples, the
// local phase's pooling decides whether the prompts learn there, errors and bad settings
// end Train with the right codes, and the cost figures add up.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "codec/token_codec.h"
#include "torch/models.h"
#include "torch/sfprompt_train.h"
#include "torch/split_body.h"
#include "torch/tensor_image_data.h"
#include "torch/vit_model.h"
#include "torch/vit_trainer.h"

namespace fl::internal {
namespace {

constexpr uint64_t kBackboneSeed = 5;

VitOptions SmallVit() {
  Result<VitOptions> o = ParseVitModelName("vit:width=32,depth=3,heads=2,prompts=2");
  EXPECT_TRUE(o.ok()) << o.status().ToString();
  return *o;
}

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// What a session moved, as the test's adapter saw it.
struct Seen {
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  std::vector<torch::Tensor> activations;  // every Forward's input
  SplitSessionOptions options;
  int opened = 0;
};

torch::Tensor ToTensor(const TokenTensor& t) {
  return torch::tensor(t.values).reshape({t.batch, t.tokens, t.width});
}

uint64_t Bytes(const TokenTensor& t) { return t.values.size() * sizeof(float); }

// An in-process SplitSession over a SplitBodyServer (float32 on the "wire") moving only
// the session's tokens as the server does, counting the tensor bytes each way;
// `fail_forward` makes every Forward fail with Aborted.
class BodySession final : public SplitSession {
 public:
  BodySession(SplitBodyServer* server, uint64_t id, const SplitTokenRanges& ranges, Seen* seen,
              bool fail_forward)
      : server_(server), id_(id), ranges_(ranges), seen_(seen), fail_forward_(fail_forward) {}
  int64_t tokens() const override { return server_->tokens(); }
  int64_t width() const override { return server_->width(); }
  Result<TokenTensor> Forward(const TokenTensor& a) override {
    if (fail_forward_) return Status::Aborted("injected body failure");
    seen_->bytes_up += Bytes(a);
    seen_->activations.push_back(ToTensor(a));
    Result<TokenTensor> z = ForwardTokens(*server_, id_, a, ranges_);
    if (z.ok()) seen_->bytes_down += Bytes(*z);
    traffic_.steps++;
    return z;
  }
  Result<TokenTensor> Backward(const TokenTensor& g) override {
    seen_->bytes_up += Bytes(g);
    Result<TokenTensor> ga = BackwardTokens(*server_, id_, g, ranges_);
    if (ga.ok()) seen_->bytes_down += Bytes(*ga);
    traffic_.steps++;
    return ga;
  }
  Status Finish() override {
    server_->Close(id_);
    return Status::Ok();
  }
  SplitTraffic traffic() const override {
    return {seen_->bytes_up, seen_->bytes_down, traffic_.steps};
  }

 private:
  SplitBodyServer* server_;
  uint64_t id_;
  SplitTokenRanges ranges_;
  Seen* seen_;
  bool fail_forward_;
  SplitTraffic traffic_;
};

class SfPromptTrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    data_ = std::make_shared<TensorImageData>(torch::randn({24, 1, 28, 28}),
                                              torch::randint(0, 10, {24}));
    reference_ = *CreateTinyVit(SmallVit(), kBackboneSeed);
    ASSERT_TRUE(ParamBridge(*reference_).Read(&backbone_).ok());
  }

  // A trainer with cut (head_blocks, tail_blocks) whose sessions go to a body server of
  // the same backbone.
  // `body_prompts` >= 0: the server's ViT has that many prompts instead (and its own
  // weights).
  std::unique_ptr<VitTrainer> New(int64_t head_blocks, int64_t tail_blocks,
                                  bool fail_forward = false, int64_t body_prompts = -1) {
    SplitBodyOptions b;
    b.vit = SmallVit();
    b.begin = head_blocks;
    b.end = b.vit.depth - tail_blocks;
    b.batching.enabled = false;
    if (body_prompts >= 0) b.vit.prompts = body_prompts;
    Result<std::unique_ptr<SplitBodyServer>> server =
        SplitBodyServer::Create(b, body_prompts >= 0 ? nullptr : &backbone_);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    VitTrainerOptions o;
    o.vit = SmallVit();
    o.tuning = VitTuning::kPrompt;
    o.sfprompt.head_blocks = head_blocks;
    o.sfprompt.tail_blocks = tail_blocks;
    o.sfprompt.open_split_session = [this, fail_forward](const SplitSessionOptions& options)
        -> Result<std::unique_ptr<SplitSession>> {
      if (server_ == nullptr) return Status::Unavailable("no body server");
      seen_.options = options;
      seen_.opened++;
      FL_ASSIGN_OR_RETURN(SplitTokenRanges ranges, ResolveTokenRanges(options, server_->tokens()));
      return std::unique_ptr<SplitSession>(new BodySession(
          server_.get(), static_cast<uint64_t>(seen_.opened), ranges, &seen_, fail_forward));
    };
    o.eval_batch_size = 7;
    Result<std::unique_ptr<VitTrainer>> t = VitTrainer::Create(o, &backbone_, data_, data_);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(t).value() : nullptr;
  }

  static TrainConfig Config(int64_t local_epochs, double keep_ratio) {
    TrainConfig c;
    c.lr = 0.1;
    c.batch_size = 64;
    c.local_epochs = 1;
    c.round = 9;
    c.extra["sfprompt.local_epochs"] = local_epochs;
    c.extra["sfprompt.keep_ratio"] = keep_ratio;
    return c;
  }

  // Binds examples [0, n) and trains once.
  static Result<TrainStats> TrainOn(VitTrainer& t, int64_t n, const TrainConfig& c) {
    FL_RETURN_IF_ERROR(t.BindExamples(Range(n)));
    return t.Train(c, CancelToken());
  }

  static torch::Tensor Tensor(const ParamSet& p, const std::string& name) {
    const int idx = p.layout().Find(name);
    EXPECT_GE(idx, 0) << name;
    const TensorSpec& spec = p.layout().tensors()[static_cast<size_t>(idx)];
    return torch::from_blob(const_cast<float*>(p.data()) + spec.offset, {static_cast<int64_t>(spec.numel)}, torch::kFloat)
        .clone();
  }

  // `t`'s whole model equals reference_ after one SGD step at `lr` on the mean CE of
  // examples [0, 8) (order-free), on the trainable tensors only, and that step moved
  // the prompts and the classifier head.
  void ExpectOneSgdStep(VitTrainer& t, double lr) {
    torch::Tensor x = data_->images.narrow(0, 0, 8), y = data_->labels.narrow(0, 0, 8);
    torch::nn::functional::cross_entropy(reference_->forward(x), y).backward();
    {
      torch::NoGradGuard no_grad;
      for (const auto& p : reference_->named_parameters()) {
        if (t.layout().Find(p.key()) >= 0) p.value().sub_(p.value().grad() * lr);
      }
    }
    ParamSet want, got;
    ASSERT_TRUE(ParamBridge(*reference_).Read(&want).ok());
    ASSERT_TRUE(t.GetFullModel(&got).ok());
    ASSERT_EQ(want.layout().hash(), got.layout().hash());
    for (const TensorSpec& s : want.layout().tensors()) {
      torch::Tensor w = Tensor(want, s.name), g = Tensor(got, s.name);
      EXPECT_TRUE(torch::allclose(g, w, 1e-5, 1e-5))
          << s.name << ": max diff " << (g - w).abs().max().item<float>();
    }
    EXPECT_FALSE(torch::equal(Tensor(got, "prompts"), Tensor(backbone_, "prompts")));
    EXPECT_FALSE(torch::equal(Tensor(got, "head.weight"), Tensor(backbone_, "head.weight")));
  }

  std::shared_ptr<TensorImageData> data_;
  TinyVit reference_{nullptr};
  ParamSet backbone_;
  std::unique_ptr<SplitBodyServer> server_;
  Seen seen_;
};

TEST_F(SfPromptTrainerTest, TrainsPromptsAndTailUnderTheViTsNames) {
  std::unique_ptr<VitTrainer> t = New(/*head_blocks=*/1, /*tail_blocks=*/1);
  std::vector<std::string> names;
  for (const TensorSpec& s : t->layout().tensors()) names.push_back(s.name);
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "prompts");
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.2.fc1.weight"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "blocks.1.fc1.weight"), names.end());
  EXPECT_EQ(names.back(), "head.bias");
  EXPECT_NE(std::find(names.begin(), names.end(), "norm.weight"), names.end());
  ParamSet initial;
  ASSERT_TRUE(t->GetParameters(&initial).ok());
  EXPECT_TRUE(torch::equal(Tensor(initial, "prompts"), Tensor(backbone_, "prompts")));
  EXPECT_TRUE(torch::equal(Tensor(initial, "blocks.2.qkv.weight"), Tensor(backbone_, "blocks.2.qkv.weight")));
  // Evaluation is the whole model locally: the backbone's own forward pass.
  Result<EvalStats> e = t->Evaluate();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  torch::NoGradGuard no_grad;
  const double want = torch::nn::functional::cross_entropy(reference_->forward(data_->images), data_->labels)
                          .item<double>();
  EXPECT_NEAR(e->loss, want, 1e-5);
}

// For every cut, so with every token range the trainer asks for: all tokens (1, 1),
// the CLS output only (1, 0), the prompts' input gradient only (0, 1), both (0, 0).
TEST_F(SfPromptTrainerTest, OneSplitStepIsOneSgdStepOfTheWholeModel) {
  struct Cut {
    int64_t head, tail;
    SplitSessionOptions want;  // the ranges asked for (round and encoding as below)
  };
  const std::vector<Cut> cuts = {{1, 1, {9, Encoding::kDenseF32, 0, 0, 0}},
                                 {1, 0, {9, Encoding::kDenseF32, 1, 0, 0}},
                                 {0, 1, {9, Encoding::kDenseF32, 0, 1, 3}},
                                 {0, 0, {9, Encoding::kDenseF32, 1, 1, 3}}};
  for (const Cut& cut : cuts) {
    SCOPED_TRACE("head_blocks " + std::to_string(cut.head) + ", tail_blocks " +
                 std::to_string(cut.tail));
    reference_ = *CreateTinyVit(SmallVit(), kBackboneSeed);
    seen_ = Seen();
    std::unique_ptr<VitTrainer> t = New(cut.head, cut.tail);
    TrainConfig c = Config(/*local_epochs=*/0, /*keep_ratio=*/1.0);
    c.local_steps = 1;
    Result<TrainStats> stats = TrainOn(*t, 8, c);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->num_examples, 8u);
    EXPECT_EQ(stats->dataset_size, 8u);
    // Keeping every example needs no EL2N scores.
    EXPECT_EQ(stats->metrics.at("sfprompt.prune.flops"), 0);
    EXPECT_EQ(stats->metrics.at("sfprompt.kept_examples"), 8);
    EXPECT_EQ(seen_.options.round, cut.want.round);
    EXPECT_EQ(seen_.options.encoding, cut.want.encoding);
    EXPECT_EQ(seen_.options.output_tokens, cut.want.output_tokens);
    EXPECT_EQ(seen_.options.grad_begin, cut.want.grad_begin);
    EXPECT_EQ(seen_.options.grad_end, cut.want.grad_end);
    // The body it was cut for: blocks [head, depth - tail) of the test ViT.
    EXPECT_EQ(seen_.options.body, VitBodyName(SmallVit(), cut.head, SmallVit().depth - cut.tail));
    // Activations, then the gradient at the output tokens returned; the body's output
    // and the input gradient at the tokens asked for.
    const double up_tokens = 19 + (cut.tail == 0 ? 1 : 19);
    const double down_tokens = (cut.tail == 0 ? 1 : 19) + (cut.head == 0 ? 2 : 19);
    EXPECT_EQ(seen_.bytes_up, static_cast<uint64_t>(8 * up_tokens * 32 * sizeof(float)));
    EXPECT_EQ(seen_.bytes_down, static_cast<uint64_t>(8 * down_tokens * 32 * sizeof(float)));
    ExpectOneSgdStep(*t, c.lr);
  }
}

TEST(SfPromptKeepHardestTest, KeepsTheHighestScoresTiesToTheLowerIndex) {
  const std::vector<int64_t> examples = {40, 10, 30, 20, 50};
  const std::vector<float> scores = {0.5f, 0.9f, 0.5f, 0.5f, 0.1f};
  EXPECT_EQ(KeepHardest(examples, scores, 0.5), (std::vector<int64_t>{10, 30, 20}));  // ceil(2.5)
  EXPECT_EQ(KeepHardest(examples, scores, 1.0), examples);
  EXPECT_EQ(KeepHardest(examples, scores, 0.1), (std::vector<int64_t>{10}));
}

TEST_F(SfPromptTrainerTest, PruningKeepsTheHighestEl2nScores) {
  constexpr int64_t kN = 11;
  std::unique_ptr<VitTrainer> t = New(/*head_blocks=*/0, /*tail_blocks=*/1);
  Result<TrainStats> stats = TrainOn(*t, kN, Config(/*local_epochs=*/0, /*keep_ratio=*/0.5));
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  const size_t keep = 6;  // ceil(0.5 * 11)
  EXPECT_EQ(stats->metrics.at("sfprompt.kept_examples"), static_cast<double>(keep));
  EXPECT_EQ(stats->num_examples, keep);

  // Reference EL2N scores on the local path (mean pooling, the body skipped) of the
  // untouched backbone, computed here.
  torch::NoGradGuard no_grad;
  torch::Tensor x = data_->images.narrow(0, 0, kN), y = data_->labels.narrow(0, 0, kN);
  torch::Tensor embedded = reference_->Embed(x, {});
  torch::Tensor tokens = reference_->RunBlocks(embedded, {}, 2, 3);
  torch::Tensor logits = reference_->head()->forward(reference_->norm()->forward(tokens).mean(1));
  torch::Tensor scores = (torch::softmax(logits, 1) - torch::one_hot(y, 10)).norm(2, {1});
  std::vector<int64_t> by_score = Range(kN);
  std::sort(by_score.begin(), by_score.end(), [&](int64_t i, int64_t j) {
    return scores[i].item<float>() > scores[j].item<float>();
  });
  const std::set<int64_t> want(by_score.begin(), by_score.begin() + keep);

  // The examples the split phase sent: each activation row is one example's Embed.
  ASSERT_EQ(seen_.activations.size(), 1u);
  std::set<int64_t> sent;
  for (int64_t r = 0; r < seen_.activations[0].size(0); ++r) {
    for (int64_t i = 0; i < kN; ++i) {
      if (torch::allclose(seen_.activations[0][r], embedded[i], 1e-6, 1e-6)) sent.insert(i);
    }
  }
  EXPECT_EQ(sent, want);
}

// The opener fails, so Train ends after the local phase and its effect stays visible.
TEST_F(SfPromptTrainerTest, ClsPoolingWithoutClientBlocksLeavesPromptsUnchangedLocally) {
  for (const char* pool : {"cls", "mean"}) {
    std::unique_ptr<VitTrainer> t = New(/*head_blocks=*/0, /*tail_blocks=*/0);
    ASSERT_TRUE(t->BindExamples(Range(16)).ok());
    TrainConfig c = Config(/*local_epochs=*/2, /*keep_ratio=*/1.0);
    c.batch_size = 8;
    c.extra["sfprompt.local_pool"] = pool;
    server_.reset();  // no body: opening would fail, so stop after the local phase
    Result<TrainStats> stats = t->Train(c, CancelToken());
    (void)stats;
    ParamSet after;
    ASSERT_TRUE(t->GetParameters(&after).ok());
    const bool prompts_same = torch::equal(Tensor(after, "prompts"), Tensor(backbone_, "prompts"));
    EXPECT_EQ(prompts_same, std::string(pool) == "cls") << pool;
    EXPECT_FALSE(torch::equal(Tensor(after, "head.weight"), Tensor(backbone_, "head.weight"))) << pool;
  }
}

TEST_F(SfPromptTrainerTest, ErrorsEndTrainWithTheirCodes) {
  std::unique_ptr<VitTrainer> failing = New(0, 1, /*fail_forward=*/true);
  ASSERT_TRUE(failing->BindExamples(Range(8)).ok());
  Result<TrainStats> r = failing->Train(Config(0, 1.0), CancelToken());
  EXPECT_EQ(r.status().code(), StatusCode::kAborted) << r.status().ToString();

  // A body of a ViT with other prompts: refused before any step.
  std::unique_ptr<VitTrainer> mismatched = New(0, 1, /*fail_forward=*/false, /*body_prompts=*/3);
  Result<TrainStats> m = TrainOn(*mismatched, 8, Config(0, 1.0));
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition) << m.status().ToString();
  EXPECT_TRUE(seen_.activations.empty());

  VitTrainerOptions o;
  o.vit = SmallVit();
  o.tuning = VitTuning::kPrompt;
  std::unique_ptr<VitTrainer> no_opener = std::move(VitTrainer::Create(o, &backbone_, data_, data_)).value();
  ASSERT_TRUE(no_opener->BindExamples(Range(8)).ok());
  EXPECT_EQ(no_opener->Train(Config(0, 1.0), CancelToken()).status().code(),
            StatusCode::kFailedPrecondition);

  std::unique_ptr<VitTrainer> t = New(0, 1);
  ASSERT_TRUE(t->BindExamples(Range(8)).ok());
  const std::vector<std::pair<std::string, TrainValue>> bad = {
      {"sfprompt.local_epochs", -1},     {"sfprompt.local_epochs", "two"},
      {"sfprompt.local_pool", "max"},    {"sfprompt.local_pool", 1},
      {"sfprompt.keep_ratio", 0.0},      {"sfprompt.keep_ratio", 1.5},
      {"sfprompt.keep_ratio", "half"},   {"sfprompt.wire", "f8"},
      {"sfprompt.wire", 16},
  };
  for (const auto& [key, value] : bad) {
    TrainConfig c = Config(0, 1.0);
    c.extra[key] = value;
    Result<TrainStats> s = t->Train(c, CancelToken());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << key << "=" << value.ToString();
    EXPECT_NE(s.status().message().find(key), std::string::npos) << s.status().ToString();
  }

  o.vit.prompts = 0;
  EXPECT_EQ(VitTrainer::Create(o, &backbone_, data_, data_).status().code(), StatusCode::kInvalidArgument);
  o.vit = SmallVit();
  o.sfprompt.head_blocks = 1;
  o.sfprompt.tail_blocks = 2;  // empty body
  EXPECT_EQ(VitTrainer::Create(o, nullptr, data_, data_).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SfPromptTrainerTest, MetricsCountBytesAndFlops) {
  std::unique_ptr<VitTrainer> t = New(/*head_blocks=*/0, /*tail_blocks=*/0);
  TrainConfig c = Config(/*local_epochs=*/1, /*keep_ratio=*/0.5);
  c.batch_size = 5;
  Result<TrainStats> stats = TrainOn(*t, 24, c);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  const std::map<std::string, double>& m = stats->metrics;
  EXPECT_EQ(m.at("sfprompt.split.bytes_up"), static_cast<double>(seen_.bytes_up));
  EXPECT_EQ(m.at("sfprompt.split.bytes_down"), static_cast<double>(seen_.bytes_down));
  // 12 kept examples, each sent once as activations (19 tokens) and once as the
  // gradient at CLS (tail_blocks 0); back come CLS and the input gradient at the 2
  // prompts (head_blocks 0).
  const double per_token = 32 * sizeof(float);
  EXPECT_EQ(m.at("sfprompt.split.bytes_up"), 12 * (19 + 1) * per_token);
  EXPECT_EQ(m.at("sfprompt.split.bytes_down"), 12 * (1 + 2) * per_token);
  EXPECT_EQ(stats->num_examples, 12u);
  for (const char* phase : {"local", "prune", "split"}) {
    EXPECT_GT(m.at(std::string("sfprompt.") + phase + ".flops"), 0) << phase;
    EXPECT_GE(m.at(std::string("sfprompt.") + phase + ".seconds"), 0) << phase;
  }
  EXPECT_GE(m.at("sfprompt.split.wait_seconds"), 0);
  EXPECT_EQ(m.at("compute.flops"), m.at("sfprompt.local.flops") + m.at("sfprompt.prune.flops") +
                                       m.at("sfprompt.split.flops"));

  // Federated full fine-tuning of the same model on the same data and epochs.
  VitTrainerOptions o;
  o.vit = SmallVit();
  o.tuning = VitTuning::kFull;
  std::unique_ptr<VitTrainer> full = std::move(VitTrainer::Create(o, &backbone_, data_, data_)).value();
  Result<TrainStats> full_stats = TrainOn(*full, 24, c);
  ASSERT_TRUE(full_stats.ok()) << full_stats.status().ToString();
  const double full_flops = full_stats->metrics.at("compute.flops");
  EXPECT_EQ(full_flops, 3 * 2 * full->ForwardMacsPerImage() * 24);
  EXPECT_LT(m.at("compute.flops"), 0.1 * full_flops);
  EXPECT_GT(full_stats->metrics.count("compute.seconds"), 0u);
}

}  // namespace
}  // namespace fl::internal
