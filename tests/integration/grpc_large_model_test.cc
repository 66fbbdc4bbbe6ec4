// A 50-million-parameter model (200 MB) through FetchModel and PushUpdate over TLS:
// many 1 MiB chunks each way, every byte checked.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "grpc_fixture.h"

namespace fl::internal {
namespace {

class GrpcLargeModelTest : public GrpcFixture {};

TEST_F(GrpcLargeModelTest, FiftyMillionParameterModelRoundTrips) {
  constexpr uint64_t kBig = 50'000'000;
  CoordinatorOptions o = Options();
  o.max_update_bytes = kBig * sizeof(float);
  o.num_rounds = 1;
  o.durable = false;  // the transport is under test here, not 400 MB of fsync
  Start(o, kBig);
  std::unique_ptr<GrpcLink> link = Joined("client-big");
  Task task = TrainTask(*link);

  Result<ModelSnapshot> model = link->FetchModel(task.model_version);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  {
    ModelSnapshot served = coordinator_->CurrentModel();
    ASSERT_EQ(model->params->size(), kBig);
    EXPECT_EQ(model->params->layout().hash(), served.params->layout().hash());
    EXPECT_EQ(std::memcmp(model->params->data(), served.params->data(), kBig * sizeof(float)), 0);
    EXPECT_GT(model->wire_bytes, kBig * sizeof(float));  // the whole file, many 1 MiB chunks
  }

  Payload update = GoodUpdate(task, *model->params, 0.001f);
  std::vector<float> expected(model->params->values().begin(), model->params->values().end());
  {
    std::vector<float> delta(kBig);
    ASSERT_TRUE(DecodeDense(update.bytes, Encoding::kDenseF32, delta).ok());
    for (size_t i = 0; i < kBig; ++i) expected[i] += delta[i];
  }
  model = Status::Cancelled("released");  // keep peak memory down
  Result<PushAck> ack = link->PushUpdate(update);
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  update = Payload();

  // One client, one round: the new global model is the old one plus exactly its delta,
  // so every byte of the upload arrived.
  ModelSnapshot after = coordinator_->CurrentModel();
  ASSERT_EQ(after.version, 1u);
  size_t mismatches = 0;
  for (size_t i = 0; i < kBig; ++i) {
    if (std::fabs(after.params->data()[i] - expected[i]) > 1e-6f) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0u);
}

}  // namespace
}  // namespace fl::internal
