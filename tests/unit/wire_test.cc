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
  // 20: above every code, yet inside grpc::StatusCode's range of values (0..31), so
  // the cast is defined (99 was not: UBSan reports loading it).
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), "x")).code(),
            StatusCode::kUnknown);
}

// ToProto, then through bytes as on the wire, then FromProto. `parsed` (if given)
// receives the message as the receiver parsed it.
Result<Task> ThroughTheWire(const Task& task, v1::Task* parsed = nullptr) {
  v1::Task proto;
  ToProto(task, &proto);
  v1::Task received;
  if (!received.ParseFromString(proto.SerializeAsString())) {
    return Status::DataLoss("the serialized task does not parse");
  }
  if (parsed != nullptr) *parsed = received;
  return FromProto(received);
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
  Result<Task> back = ThroughTheWire(task);
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

TEST(WireTest, TypedExtraValuesRoundTripExactly) {
  Task task;
  task.kind = TaskKind::kTrain;
  task.round = 1;
  task.algorithm = "ferret";
  const uint64_t seed = (uint64_t{1} << 53) + 1;  // the first integer a double cannot hold
  const uint64_t top = 0xfedcba9876543211ull;      // above INT64_MAX: travels as its bits
  task.config.extra = {{"seed", seed},          {"top", top},       {"neg", int64_t{-7}},
                       {"flag", true},          {"lr", 0.125},      {"name", "adam"},
                       {"small", int64_t{42}}};
  v1::Task parsed;
  Result<Task> back = ThroughTheWire(task, &parsed);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->config.extra, task.config.extra);
  const std::map<std::string, TrainValue>& extra = back->config.extra;
  ASSERT_TRUE(extra.at("seed").is_int());
  EXPECT_EQ(*extra.at("seed").AsUint64(), seed);
  EXPECT_NE(static_cast<uint64_t>(static_cast<double>(seed)), seed) << "a double would round it";
  EXPECT_EQ(*extra.at("top").AsUint64(), top);
  EXPECT_EQ(*extra.at("neg").AsInt64(), -7);
  EXPECT_TRUE(*extra.at("flag").AsBool());
  EXPECT_EQ(*extra.at("lr").AsDouble(), 0.125);
  EXPECT_EQ(*extra.at("name").AsString(), "adam");

  // The older double field carries what a double holds exactly, for older receivers.
  const auto& legacy = parsed.config().extra();
  EXPECT_EQ(legacy.count("seed"), 0u);
  EXPECT_EQ(legacy.count("top"), 0u);
  EXPECT_EQ(legacy.count("name"), 0u);
  EXPECT_EQ(legacy.at("neg"), -7.0);
  EXPECT_EQ(legacy.at("flag"), 1.0);
  EXPECT_EQ(legacy.at("lr"), 0.125);
  EXPECT_EQ(legacy.at("small"), 42.0);
}

// A sender that predates extra_values writes only the double map: it is still read, and
// its integral doubles read as integers; extra_values wins where both name a key.
TEST(WireTest, OlderDoubleExtraIsStillRead) {
  v1::Task proto;
  proto.set_kind(v1::TASK_KIND_TRAIN);
  proto.set_round(1);
  proto.mutable_config()->set_upload_encoding(v1::ENCODING_DENSE_F32);
  (*proto.mutable_config()->mutable_extra())["optimizer"] = 1.0;
  (*proto.mutable_config()->mutable_extra())["clip_norm"] = 0.5;
  (*proto.mutable_config()->mutable_extra())["both"] = 3.0;
  (*proto.mutable_config()->mutable_extra_values())["both"].set_int_value(4);
  Result<Task> back = FromProto(proto);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const std::map<std::string, TrainValue>& extra = back->config.extra;
  ASSERT_EQ(extra.size(), 3u);
  EXPECT_TRUE(extra.at("optimizer").is_double());
  EXPECT_EQ(*extra.at("optimizer").AsInt64(), 1);
  EXPECT_EQ(*extra.at("clip_norm").AsDouble(), 0.5);
  EXPECT_FALSE(extra.at("clip_norm").AsInt64().ok());
  EXPECT_EQ(extra.at("both"), TrainValue(4));

  (*proto.mutable_config()->mutable_extra_values())["empty"];  // no oneof member set
  EXPECT_EQ(FromProto(proto).status().code(), StatusCode::kInvalidArgument);
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
