#include "algorithms/fedavg/fedavg_learner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "algorithms/fedavg/fedavg_strategy.h"
#include "codec/dense_codec.h"
#include "crypto/sha256.h"

namespace fl::internal {
namespace {

// A tiny deterministic trainer: one "step" moves every parameter by lr * (i + 1).
class FakeTrainer : public Trainer {
 public:
  FakeTrainer() {
    layout_.Add("w", {2});
    layout_.Add("b", {1});
    params_ = ParamSet(layout_);
  }
  const Layout& layout() const override { return layout_; }
  Status GetParameters(ParamSet* out) override {
    *out = params_;
    return Status::Ok();
  }
  Status SetParameters(const ParamSet& p) override {
    if (p.layout().hash() != layout_.hash()) return Status::InvalidArgument("layout");
    params_ = p;
    ++set_calls;
    return Status::Ok();
  }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override {
    if (cancel.cancelled()) return Status::Cancelled("stop");
    seen_config = config;
    for (size_t i = 0; i < params_.size(); ++i) {
      params_.data()[i] += diverge ? INFINITY : static_cast<float>(config.lr * (i + 1));
    }
    TrainStats s;
    s.dataset_size = dataset_size;
    s.num_examples = 2 * dataset_size;
    s.mean_loss = 0.75;
    return s;
  }
  Result<EvalStats> Evaluate() override { return EvalStats{}; }

  Layout layout_;
  ParamSet params_;
  TrainConfig seen_config;
  int set_calls = 0;
  uint64_t dataset_size = 10;
  bool diverge = false;
};

Task TrainTask(Encoding encoding = Encoding::kDenseF32) {
  Task t;
  t.kind = TaskKind::kTrain;
  t.round = 3;
  t.model_version = 2;
  t.algorithm = "fedavg";
  t.config.lr = 0.125;
  t.config.batch_size = 4;
  t.config.prox_mu = 0.01;
  t.config.upload_encoding = encoding;
  return t;
}

ParamSet Global(const FakeTrainer& trainer) {
  ParamSet g(trainer.layout());
  g.data()[0] = 1.0f;
  g.data()[1] = -0.5f;
  g.data()[2] = 0.25f;
  return g;
}

TEST(FedAvgLearnerTest, UploadsDeltaWithCompleteMeta) {
  FakeTrainer trainer;
  ParamSet global = Global(trainer);
  FedAvgLearner learner;
  CancelToken cancel;
  Result<Payload> p = learner.Train(TrainTask(), global, trainer, cancel);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(trainer.set_calls, 1);
  EXPECT_EQ(trainer.seen_config.lr, 0.125);
  EXPECT_EQ(trainer.seen_config.prox_mu, 0.01);
  EXPECT_EQ(trainer.seen_config.batch_size, 4);

  const UpdateMeta& m = p->meta;
  EXPECT_EQ(m.round, 3u);
  EXPECT_EQ(m.base_version, 2u);
  EXPECT_EQ(m.weight, 10.0);
  EXPECT_EQ(m.num_examples, 20u);
  EXPECT_EQ(m.train_loss, 0.75);
  EXPECT_EQ(m.layout_hash, trainer.layout().hash());
  EXPECT_EQ(m.encoding, Encoding::kDenseF32);
  EXPECT_EQ(m.sha256, Sha256(p->bytes));
  EXPECT_EQ(m.client_id, 0u);  // the runtime's job

  std::vector<float> delta(3);
  ASSERT_TRUE(DecodeDense(p->bytes, Encoding::kDenseF32, delta).ok());
  for (size_t i = 0; i < 3; ++i) {
    const float local = global.data()[i] + static_cast<float>(0.125 * (i + 1));
    EXPECT_EQ(delta[i], local - global.data()[i]) << i;
  }
}

TEST(FedAvgLearnerTest, HonoursUploadEncoding) {
  FakeTrainer trainer;
  FedAvgLearner learner;
  CancelToken cancel;
  Result<Payload> p = learner.Train(TrainTask(Encoding::kDenseF16), Global(trainer), trainer, cancel);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->bytes.size(), 3u * 2);
  EXPECT_EQ(p->meta.encoding, Encoding::kDenseF16);
  std::vector<float> delta(3);
  ASSERT_TRUE(DecodeDense(p->bytes, Encoding::kDenseF16, delta).ok());
  EXPECT_EQ(delta[2], 0.375f);  // exact in half
  EXPECT_EQ(learner.Train(TrainTask(Encoding::kFerret), Global(trainer), trainer, cancel).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(FedAvgLearnerTest, Errors) {
  FakeTrainer trainer;
  FedAvgLearner learner;
  CancelToken cancel;
  Task wait = TrainTask();
  wait.kind = TaskKind::kWait;
  EXPECT_EQ(learner.Train(wait, Global(trainer), trainer, cancel).status().code(),
            StatusCode::kInvalidArgument);

  Layout other;
  other.Add("w", {3});
  EXPECT_EQ(learner.Train(TrainTask(), ParamSet(other), trainer, cancel).status().code(),
            StatusCode::kInvalidArgument);

  trainer.dataset_size = 0;
  EXPECT_EQ(learner.Train(TrainTask(), Global(trainer), trainer, cancel).status().code(),
            StatusCode::kFailedPrecondition);
  trainer.dataset_size = 10;

  trainer.diverge = true;
  EXPECT_EQ(learner.Train(TrainTask(), Global(trainer), trainer, cancel).status().code(),
            StatusCode::kFailedPrecondition);
  trainer.diverge = false;

  cancel.Cancel();
  EXPECT_EQ(learner.Train(TrainTask(), Global(trainer), trainer, cancel).status().code(),
            StatusCode::kCancelled);
}

TEST(FedAvgLearnerTest, OneClientRoundReproducesItsModel) {
  // Learner -> aggregator -> sgd server step with lr 1: the new global model is the
  // client's local model (the deltas here are exact in float).
  FakeTrainer trainer;
  ParamSet global = Global(trainer);
  FedAvgLearner learner;
  CancelToken cancel;
  Result<Payload> p = learner.Train(TrainTask(), global, trainer, cancel);
  ASSERT_TRUE(p.ok());
  FedAvgStrategy strategy{FedAvgOptions{}};
  std::unique_ptr<RoundAggregator> agg = strategy.NewRoundAggregator(global, 3);
  ASSERT_TRUE(agg->Accumulate(*p).ok());
  Result<AggregateReport> report = std::move(*agg).Report();
  ASSERT_TRUE(report.ok());
  ASSERT_TRUE(strategy.ApplyRound(std::move(report).value(), &global).ok());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(global.data()[i], trainer.params_.data()[i]) << i;
}

}  // namespace
}  // namespace fl::internal
