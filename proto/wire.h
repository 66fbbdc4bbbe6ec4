#ifndef FL_PROTO_WIRE_H_
#define FL_PROTO_WIRE_H_

// What both ends of the gRPC transport must agree on: conversions between the fl.v1
// messages and the domain types, Status <-> grpc::Status, the chunk size, the session
// metadata keys and the keepalive policy. GrpcService (server/) and GrpcLink (client/)
// both use this file, so the two sides cannot drift apart.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "codec/token_codec.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/task.h"
#include "fl/update.h"
#include "fl/v1/fl.pb.h"

namespace fl::internal {

// Largest data chunk in a FetchModel or PushUpdate stream.
inline constexpr size_t kMaxChunkBytes = 1 << 20;
// Message size limit on both sides: one chunk plus room for the header fields.
inline constexpr int kMaxMessageBytes = kMaxChunkBytes + (64 << 10);

// Session token metadata; keys are lower case as HTTP/2 requires.
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";
inline constexpr char kSessionKey[] = "x-fl-session";

// Keepalive: the client pings an idle connection every kKeepaliveTime so NATs and
// proxies keep it open; the server must tolerate pings that often, so its minimum
// accepted ping interval is below the client's ping time.
inline constexpr std::chrono::milliseconds kKeepaliveTime{30000};
inline constexpr std::chrono::milliseconds kKeepaliveTimeout{10000};
inline constexpr std::chrono::milliseconds kServerMinPingInterval{10000};

// Status codes are numerically identical (fl/status.h), so conversion is a cast.
grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

// Enums. FromProto returns InvalidArgument for values this version does not know.
v1::Encoding ToProto(Encoding encoding);
Result<Encoding> FromProto(v1::Encoding encoding);
v1::TaskKind ToProto(TaskKind kind);
Result<TaskKind> FromProto(v1::TaskKind kind);

void ToProto(const TrainConfig& config, v1::TrainConfig* out);
Result<TrainConfig> FromProto(const v1::TrainConfig& config);
void ToProto(const Task& task, v1::Task* out);
Result<Task> FromProto(const v1::Task& task);
void ToProto(const ServerStatusInfo& info, v1::GetStatusResponse* out);
ServerStatusInfo FromProto(const v1::GetStatusResponse& info);

// The update header carries the payload's metadata plus its total size.
void ToProto(const UpdateMeta& meta, uint64_t total_bytes, v1::UpdateHeader* out);
// client_id 0 in the header stays 0 here; the server substitutes the session's id.
Result<UpdateMeta> FromProto(const v1::UpdateHeader& header);

// Split tensors. FromProto: InvalidArgument for a dimension beyond int64 or an unknown
// encoding; the rest (shape bounds, length, finiteness) is DecodeTokens' to check.
void ToProto(const EncodedTokens& tensor, v1::SplitTensor* out);
Result<EncodedTokens> FromProto(const v1::SplitTensor& tensor);

// A split session's open and the token ranges it serves. FromProto(SplitOpen):
// InvalidArgument for an unknown encoding or a range beyond int64 (ResolveTokenRanges
// checks the rest). FromProto(SplitOpened, tokens): the served ranges resolved against
// `tokens` (an older server's 0s: all); InvalidArgument for ranges that do not fit.
void ToProto(const SplitSessionOptions& options, v1::SplitOpen* out);
Result<SplitSessionOptions> FromProto(const v1::SplitOpen& open);
void ToProto(const SplitTokenRanges& ranges, v1::SplitOpened* out);
Result<SplitTokenRanges> FromProto(const v1::SplitOpened& opened, int64_t tokens);

// The session token of a call: "authorization: Bearer <token>" or "x-fl-session".
// nullopt if neither is present (or the bearer value is empty).
std::optional<std::string> SessionTokenFromMetadata(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

}  // namespace fl::internal

#endif  // FL_PROTO_WIRE_H_
