// SFPrompt's SplitStep messages from the network, converted as the server's handler does
// (proto/wire.h, codec/token_codec.h): a v1::SplitRequest whose open is resolved against a
// body of 25 tokens (ResolveTokenRanges) and whose forward / backward tensor is decoded
// (FromProto, DecodeTokens). Input: the serialized request.
// A refusal is InvalidArgument with a printable reason. An accepted tensor holds exactly
// batch x tokens x width finite values and re-encodes to the bytes it came in; accepted
// ranges lie inside the body's tokens.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "codec/token_codec.h"
#include "fl/v1/fl.pb.h"
#include "proto/wire.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

constexpr int64_t kBodyTokens = 25;

void CheckRefusal(const fl::Status& status) {
  FUZZ_CHECK(status.code() == fl::StatusCode::kInvalidArgument, status.ToString());
  for (unsigned char c : status.message()) {
    FUZZ_CHECK(c >= 0x20 && c < 0x7f, "a refusal quotes a raw byte " + std::to_string(c));
  }
}

void CheckOpen(const fl::v1::SplitOpen& open) {
  fl::Result<fl::SplitSessionOptions> options = fl::internal::FromProto(open);
  if (!options.ok()) return CheckRefusal(options.status());
  fl::Result<fl::internal::SplitTokenRanges> ranges =
      fl::internal::ResolveTokenRanges(*options, kBodyTokens);
  if (!ranges.ok()) return CheckRefusal(ranges.status());
  FUZZ_CHECK(ranges->output >= 1 && ranges->output <= kBodyTokens, "output tokens out of range");
  FUZZ_CHECK(ranges->grad_begin >= 0 && ranges->grad_begin < ranges->grad_end &&
                 ranges->grad_end <= kBodyTokens,
             "gradient tokens out of range");
}

void CheckTensor(const fl::v1::SplitTensor& message) {
  fl::Result<fl::internal::EncodedTokens> encoded = fl::internal::FromProto(message);
  if (!encoded.ok()) return CheckRefusal(encoded.status());
  fl::Result<fl::TokenTensor> tensor = fl::internal::DecodeTokens(*encoded);
  if (!tensor.ok()) return CheckRefusal(tensor.status());
  FUZZ_CHECK(tensor->batch >= 1 && tensor->tokens >= 1 && tensor->width >= 1, "an empty dimension");
  FUZZ_CHECK(tensor->values.size() ==
                 static_cast<size_t>(tensor->batch * tensor->tokens * tensor->width),
             "value count differs from the shape");
  for (float v : tensor->values) FUZZ_CHECK(std::isfinite(v), "a non-finite value accepted");
  fl::Result<fl::internal::EncodedTokens> again =
      fl::internal::EncodeTokens(*tensor, encoded->encoding);
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK(again->values == encoded->values, "decoded values re-encode to other bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fl::v1::SplitRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (request.has_open()) CheckOpen(request.open());
  if (request.has_forward()) CheckTensor(request.forward());
  if (request.has_backward()) CheckTensor(request.backward());
  return 0;
}
