#include "proto/wire.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace fl::internal {
namespace {

TEST(WireTest, StatusCodesConvertOneToOne) {
  for (int code = 0; code <= static_cast<int>(StatusCode::kUnauthenticated); ++code) {
    Status s(static_cast<StatusCode>(code), "why");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    Status back = FromGrpcStatus(g);
    EXPECT_EQ(back.code(), s.code());
    if (code != 0) EXPECT_EQ(back.message(), "why");
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "x")).code(),
            StatusCode::kUnknown);
}

TEST(WireTest, TaskRoundTrips) {
  Task task;
  task.kind = TaskKind::kTrain;
  task.round = 7;
  task.model_version = 6;
  task.algorithm = "fedprox";
  task.config.local_epochs = 2;
  task.config.local_steps = 5;
  task.config.batch_size = 16;
  task.config.lr = 0.125;
  task.config.momentum = 0.9;
  task.config.weight_decay = 1e-4;
  task.config.prox_mu = 0.01;
  task.config.seed = 1234567890123ull;
  task.config.upload_encoding = Encoding::kDenseBF16;
  task.config.extra = {{"k", 3.0}, {"block", 64.0}};
  v1::Task proto;
  ToProto(task, &proto);
  // Through bytes, as on the wire.
  v1::Task parsed;
  ASSERT_TRUE(parsed.ParseFromString(proto.SerializeAsString()));
  Result<Task> back = FromProto(parsed);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->kind, task.kind);
  EXPECT_EQ(back->round, task.round);
  EXPECT_EQ(back->model_version, task.model_version);
  EXPECT_EQ(back->algorithm, task.algorithm);
  EXPECT_EQ(back->config.local_epochs, 2);
  EXPECT_EQ(back->config.local_steps, 5);
  EXPECT_EQ(back->config.batch_size, 16);
  EXPECT_DOUBLE_EQ(back->config.lr, 0.125);
  EXPECT_DOUBLE_EQ(back->config.momentum, 0.9);
  EXPECT_DOUBLE_EQ(back->config.weight_decay, 1e-4);
  EXPECT_DOUBLE_EQ(back->config.prox_mu, 0.01);
  EXPECT_EQ(back->config.seed, task.config.seed);
  EXPECT_EQ(back->config.upload_encoding, Encoding::kDenseBF16);
  EXPECT_EQ(back->config.extra, task.config.extra);
}

TEST(WireTest, WaitTaskKeepsRetryHint) {
  Task task;
  task.kind = TaskKind::kWait;
  task.retry_after_ms = 1500;
  v1::Task proto;
  ToProto(task, &proto);
  Result<Task> back = FromProto(proto);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->kind, TaskKind::kWait);
  EXPECT_EQ(back->retry_after_ms, 1500);
}

TEST(WireTest, UnknownEnumsAreInvalidArgument) {
  v1::Task proto;  // kind unspecified
  EXPECT_EQ(FromProto(proto).status().code(), StatusCode::kInvalidArgument);
  proto.set_kind(static_cast<v1::TaskKind>(42));
  EXPECT_EQ(FromProto(proto).status().code(), StatusCode::kInvalidArgument);
  v1::UpdateHeader header;  // encoding unspecified
  EXPECT_EQ(FromProto(header).status().code(), StatusCode::kInvalidArgument);
}

TEST(WireTest, UpdateHeaderRoundTrips) {
  UpdateMeta meta;
  meta.client_id = 3;
  meta.round = 4;
  meta.base_version = 3;
  meta.weight = 12.5;
  meta.layout_hash = 0xfeedfacecafebeefull;
  meta.encoding = Encoding::kDenseF16;
  meta.sha256 = std::string(32, '\x7f');
  meta.num_examples = 99;
  meta.train_loss = 0.75;
  v1::UpdateHeader header;
  ToProto(meta, 1234, &header);
  EXPECT_EQ(header.total_bytes(), 1234u);
  Result<UpdateMeta> back = FromProto(header);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->client_id, 3u);
  EXPECT_EQ(back->round, 4u);
  EXPECT_EQ(back->base_version, 3u);
  EXPECT_DOUBLE_EQ(back->weight, 12.5);
  EXPECT_EQ(back->layout_hash, meta.layout_hash);
  EXPECT_EQ(back->encoding, Encoding::kDenseF16);
  EXPECT_EQ(back->sha256, meta.sha256);
  EXPECT_EQ(back->num_examples, 99u);
  EXPECT_DOUBLE_EQ(back->train_loss, 0.75);
}

TEST(WireTest, SessionTokenFromEitherMetadataKey) {
  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;
  EXPECT_FALSE(SessionTokenFromMetadata(Metadata{}).has_value());
  EXPECT_EQ(SessionTokenFromMetadata(Metadata{{"authorization", "Bearer abc"}}), "abc");
  EXPECT_EQ(SessionTokenFromMetadata(Metadata{{"authorization", "bearer abc"}}), "abc");
  EXPECT_EQ(SessionTokenFromMetadata(Metadata{{"x-fl-session", "xyz"}}), "xyz");
  EXPECT_FALSE(SessionTokenFromMetadata(Metadata{{"authorization", "Bearer "}}).has_value());
  EXPECT_FALSE(SessionTokenFromMetadata(Metadata{{"authorization", "Basic abc"}}).has_value());
  EXPECT_FALSE(SessionTokenFromMetadata(Metadata{{"x-fl-session", ""}}).has_value());
}

}  // namespace
}  // namespace fl::internal
