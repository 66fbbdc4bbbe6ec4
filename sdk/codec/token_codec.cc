#include "codec/token_codec.h"

#include <span>
#include <utility>

#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

std::string ShapeString(int64_t batch, int64_t tokens, int64_t width) {
  return "[" + std::to_string(batch) + ", " + std::to_string(tokens) + ", " +
         std::to_string(width) + "]";
}

}  // namespace

Status CheckTokenShape(int64_t batch, int64_t tokens, int64_t width) {
  if (batch < 1 || tokens < 1 || width < 1) {
    return Status::InvalidArgument("token tensor shape " + ShapeString(batch, tokens, width) +
                                   ": every dimension must be >= 1");
  }
  // Divisions, not a product, so no overflow before the bound is known to hold.
  if (tokens > kMaxTokenTensorValues / width || batch > kMaxTokenTensorValues / (tokens * width)) {
    return Status::InvalidArgument("token tensor shape " + ShapeString(batch, tokens, width) +
                                   " exceeds the limit of " +
                                   std::to_string(kMaxTokenTensorValues) + " values");
  }
  return Status::Ok();
}

Result<EncodedTokens> EncodeTokens(const TokenTensor& tensor, Encoding encoding) {
  FL_RETURN_IF_ERROR(CheckTokenShape(tensor.batch, tensor.tokens, tensor.width));
  const int64_t n = tensor.batch * tensor.tokens * tensor.width;
  if (tensor.values.size() != static_cast<size_t>(n)) {
    return Status::InvalidArgument(
        "token tensor of shape " + ShapeString(tensor.batch, tensor.tokens, tensor.width) +
        " holds " + std::to_string(tensor.values.size()) + " values, not " + std::to_string(n));
  }
  if (!IsDenseEncoding(encoding)) {
    return Status::InvalidArgument("token tensors travel as f32, f16 or bf16, not " +
                                   EncodingName(encoding));
  }
  EncodedTokens out{tensor.batch, tensor.tokens, tensor.width, encoding, {}};
  FL_RETURN_IF_ERROR(EncodeDense(tensor.values, encoding, &out.values));
  return out;
}

Result<TokenTensor> DecodeTokens(const EncodedTokens& encoded) {
  FL_RETURN_IF_ERROR(CheckTokenShape(encoded.batch, encoded.tokens, encoded.width));
  if (!IsDenseEncoding(encoded.encoding)) {
    return Status::InvalidArgument("token tensors travel as f32, f16 or bf16, not " +
                                   EncodingName(encoded.encoding));
  }
  const int64_t n = encoded.batch * encoded.tokens * encoded.width;
  const size_t want = DenseEncodedSize(static_cast<size_t>(n), encoded.encoding);
  if (encoded.values.size() != want) {
    return Status::InvalidArgument(
        "token tensor of shape " + ShapeString(encoded.batch, encoded.tokens, encoded.width) +
        " in " + EncodingName(encoded.encoding) + " takes " + std::to_string(want) +
        " bytes, got " + std::to_string(encoded.values.size()));
  }
  TokenTensor out{encoded.batch, encoded.tokens, encoded.width,
                  std::vector<float>(static_cast<size_t>(n))};
  FL_RETURN_IF_ERROR(DecodeDense(encoded.values, encoded.encoding, out.values));
  const size_t bad = FindNonFinite(out.values);
  if (bad != out.values.size()) {
    return Status::InvalidArgument("token tensor holds a non-finite value at index " +
                                   std::to_string(bad) + " (as " + EncodingName(encoded.encoding) +
                                   ")");
  }
  return out;
}

Result<TokenTensor> RoundThroughWire(const TokenTensor& tensor, Encoding encoding) {
  FL_ASSIGN_OR_RETURN(EncodedTokens encoded, EncodeTokens(tensor, encoding));
  return DecodeTokens(encoded);
}

}  // namespace fl::internal
