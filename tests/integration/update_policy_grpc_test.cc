// No single client can steer or void a round: a real Coordinator (FedAvg, SQLite files)
// behind a real TLS gRPC server, two honest GrpcLink clients, and an attacker speaking
// fl.v1 through a raw stub with an inflated weight or huge (finite) values. The new model
// is compared with the one computed here from the honest deltas and the server's policy.

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "grpc_fixture.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

// Only keeps a broken run from hanging: the waits below end on an event long before.
constexpr std::chrono::seconds kSafetyCap(120);

// The honest clients' deltas (GrpcFixture::GoodUpdate) and weight.
constexpr float kScaleA = 0.01f;
constexpr float kScaleB = 0.015f;
constexpr double kHonestWeight = 10;

float HonestDelta(float scale, size_t i) { return scale * static_cast<float>(i % 7) - 3 * scale; }

class UpdatePolicyGrpcTest : public GrpcFixture {
 protected:
  // Starts the server with rounds of three clients, joins the honest clients a and b
  // through GrpcLink and the attacker through the raw stub, and takes round 1's task
  // and model.
  void StartRound(CoordinatorOptions o) {
    o.min_clients = 3;
    o.num_rounds = 1;
    Start(o);
    honest_a_ = Joined("honest-a");
    honest_b_ = Joined("honest-b");
    stub_ = RawStub();
    attacker_session_ = JoinRaw(stub_.get(), "attacker");
    task_ = TrainTask(*honest_a_);
    ASSERT_EQ(task_.round, 1u);
    ASSERT_EQ(TrainTask(*honest_b_).round, 1u);
    Result<ModelSnapshot> model = honest_a_->FetchModel(task_.model_version);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    before_ = model->params;
  }

  // The attacker's upload, every value `value`, claiming `weight`, streamed by hand.
  grpc::Status AttackerPush(float value, double weight) {
    std::vector<float> values(before_->size(), value);
    std::string bytes;
    EXPECT_TRUE(EncodeDense(values, Encoding::kDenseF32, &bytes).ok());
    UpdateMeta meta;
    meta.round = task_.round;
    meta.base_version = task_.model_version;
    meta.weight = weight;
    meta.num_examples = 1000000;
    meta.train_loss = 0.1;
    meta.layout_hash = before_->layout().hash();
    meta.encoding = Encoding::kDenseF32;
    meta.sha256 = Sha256(bytes);
    RawUpload upload(stub_.get(), attacker_session_);
    if (upload.Header(meta, bytes.size())) upload.Data(bytes);
    return upload.Finish();
  }

  void PushHonest() {
    Result<PushAck> a = honest_a_->PushUpdate(GoodUpdate(task_, *before_, kScaleA));
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    Result<PushAck> b = honest_b_->PushUpdate(GoodUpdate(task_, *before_, kScaleB));
    ASSERT_TRUE(b.ok()) << b.status().ToString();
  }

  // Checks new = before + mean, where mean(i) = (sum of honest w * delta + attacker_term)
  // / total_weight, computed in double.
  void ExpectModel(const ParamSet& after, double honest_weight, double attacker_term,
                   double total_weight) {
    ASSERT_EQ(after.size(), before_->size());
    for (size_t i = 0; i < after.size(); ++i) {
      const double honest = honest_weight * (static_cast<double>(HonestDelta(kScaleA, i)) +
                                             static_cast<double>(HonestDelta(kScaleB, i)));
      const double expected = before_->data()[i] + (honest + attacker_term) / total_weight;
      ASSERT_NEAR(after.data()[i], expected, 1e-6) << "parameter " << i;
    }
  }

  LedgerEntry AttackerRow(StatusCode code) {
    for (const LedgerEntry& e : Ledger(1)) {
      if (e.status_code == static_cast<int>(code) && e.client_id == 3) return e;
    }
    ADD_FAILURE() << "no ledger row with status " << static_cast<int>(code) << " for the attacker";
    return LedgerEntry();
  }

  std::unique_ptr<GrpcLink> honest_a_, honest_b_;
  std::unique_ptr<v1::FederatedLearning::Stub> stub_;
  std::string attacker_session_;
  Task task_;
  std::shared_ptr<const ParamSet> before_;
};

// Weight 1e12 with delta +0.5 used to set the global model to old + 0.5: now the weight is
// capped at coordinator.max_weight and the attacker moves the model by its capped share.
TEST_F(UpdatePolicyGrpcTest, InflatedWeightMovesTheModelOnlyByItsCappedShare) {
  CoordinatorOptions o = Options();
  o.update_policy.max_weight = 100;
  StartRound(o);
  grpc::Status attacker = AttackerPush(0.5f, 1e12);
  ASSERT_TRUE(attacker.ok()) << attacker.error_message();
  PushHonest();
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u) << "the round closes with all three updates";
  ExpectModel(*after.params, kHonestWeight, 100 * 0.5, 2 * kHonestWeight + 100);
  EXPECT_EQ(AttackerRow(StatusCode::kOk).weight, 100) << "the ledger records the weight used";
}

// Weight 1e300 with values 1e10 used to overflow the fold and void the round. With
// weight_over_cap = refuse the attacker gets INVALID_ARGUMENT naming the cap and the
// round closes at its deadline with exactly the honest mean.
TEST_F(UpdatePolicyGrpcTest, OverflowAttackerIsRefusedAndTheHonestUpdatesLand) {
  CoordinatorOptions o = Options();
  o.update_policy.over_cap = WeightOverCap::kRefuse;
  o.min_updates = 2;
  o.round_deadline = milliseconds(1);  // closes on the first tick with both honest updates
  std::promise<ModelSnapshot> closed;
  StartRound(o);
  coordinator_->SetRoundCallback([&closed](const RoundSummary&, const ModelSnapshot& m) {
    closed.set_value(m);
  });
  std::future<ModelSnapshot> model = closed.get_future();
  grpc::Status attacker = AttackerPush(1e10f, 1e300);
  EXPECT_EQ(attacker.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(attacker.error_message(), HasSubstr("coordinator.max_weight"));
  EXPECT_THAT(AttackerRow(StatusCode::kInvalidArgument).reason, HasSubstr("max_weight"));
  PushHonest();
  ASSERT_EQ(model.wait_for(kSafetyCap), std::future_status::ready);
  ModelSnapshot after = model.get();
  EXPECT_EQ(after.version, 1u);
  ExpectModel(*after.params, kHonestWeight, 0, 2 * kHonestWeight);
}

// The same attacker under the default policy alone (clip at max_weight = 1e6): the fold
// stays finite, so the round is not voided; the model moves by the capped share (which
// the norm bound below or a smaller max_weight limits further).
TEST_F(UpdatePolicyGrpcTest, OverflowAttackerCannotVoidTheRoundUnderTheDefaultPolicy) {
  StartRound(Options());
  grpc::Status attacker = AttackerPush(1e10f, 1e300);
  ASSERT_TRUE(attacker.ok()) << attacker.error_message();
  PushHonest();
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u);
  const double cap = CoordinatorOptions().update_policy.max_weight;
  for (size_t i = 0; i < after.params->size(); ++i) {
    const double honest = kHonestWeight * (static_cast<double>(HonestDelta(kScaleA, i)) +
                                           static_cast<double>(HonestDelta(kScaleB, i)));
    const double expected =
        before_->data()[i] + (honest + cap * double(1e10f)) / (2 * kHonestWeight + cap);
    ASSERT_TRUE(std::isfinite(after.params->data()[i]));
    ASSERT_NEAR(after.params->data()[i], expected, 1e-6 * std::fabs(expected)) << i;
  }
  EXPECT_EQ(AttackerRow(StatusCode::kOk).weight, cap);
}

// The same attacker under the default clip, with uniform weights and a norm bound: its
// weight is 1 and its delta is scaled to the bound, so the round applies and the model
// moves by the honest mean plus one bounded third.
TEST_F(UpdatePolicyGrpcTest, OverflowAttackerIsBoundedAndTheRoundApplies) {
  CoordinatorOptions o = Options();
  o.update_policy.weight_policy = WeightPolicy::kUniform;
  o.norm_bound = 2.0;  // above both honest norms (about 0.63 and 0.95)
  StartRound(o);
  grpc::Status attacker = AttackerPush(1e10f, 1e300);
  ASSERT_TRUE(attacker.ok()) << attacker.error_message();
  PushHonest();
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u);
  for (size_t i = 0; i < after.params->size(); ++i) {
    ASSERT_TRUE(std::isfinite(after.params->data()[i]));
  }
  // Every one of the attacker's values becomes bound / sqrt(n).
  const double clipped = 2.0 / std::sqrt(static_cast<double>(before_->size()));
  ExpectModel(*after.params, 1.0, clipped, 3.0);
  EXPECT_EQ(AttackerRow(StatusCode::kOk).weight, 1);
}

}  // namespace
}  // namespace fl::internal
