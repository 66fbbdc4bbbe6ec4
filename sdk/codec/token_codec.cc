#include "codec/token_codec.h"

#include <algorithm>
#include <span>
#include <utility>

#include "codec/dense_codec.h"

namespace fl::internal {
namespace {

std::string ShapeString(int64_t batch, int64_t tokens, int64_t width) {
  return "[" + std::to_string(batch) + ", " + std::to_string(tokens) + ", " +
         std::to_string(width) + "]";
}

// Every sample's tokens [begin, begin + tokens) of `tensor`, zeros where beyond its own.
TokenTensor ResizeTokens(const TokenTensor& tensor, int64_t begin, int64_t tokens) {
  const int64_t copied = std::min(tokens, tensor.tokens - begin);
  const size_t row = static_cast<size_t>(tensor.width);
  TokenTensor out{tensor.batch, tokens, tensor.width,
                  std::vector<float>(static_cast<size_t>(tensor.batch * tokens) * row, 0.0f)};
  for (int64_t b = 0; b < tensor.batch; ++b) {
    auto from =
        tensor.values.begin() + static_cast<ptrdiff_t>((b * tensor.tokens + begin) * tensor.width);
    std::copy(from, from + static_cast<ptrdiff_t>(copied * tensor.width),
              out.values.begin() + static_cast<ptrdiff_t>(b * tokens * tensor.width));
  }
  return out;
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

Result<SplitTokenRanges> ResolveTokenRanges(const SplitSessionOptions& options, int64_t tokens) {
  if (options.output_tokens < 0 || options.output_tokens > tokens) {
    return Status::InvalidArgument("split output_tokens " + std::to_string(options.output_tokens) +
                                   " outside [0, " + std::to_string(tokens) + "]");
  }
  const bool all_grad = options.grad_begin == 0 && options.grad_end == 0;
  if (!all_grad && (options.grad_begin < 0 || options.grad_begin >= options.grad_end ||
                    options.grad_end > tokens)) {
    return Status::InvalidArgument("split gradient tokens [" + std::to_string(options.grad_begin) +
                                   ", " + std::to_string(options.grad_end) +
                                   ") are not a non-empty range within [0, " +
                                   std::to_string(tokens) + ") (or both 0: all)");
  }
  return SplitTokenRanges{options.output_tokens == 0 ? tokens : options.output_tokens,
                          all_grad ? 0 : options.grad_begin, all_grad ? tokens : options.grad_end};
}

TokenTensor SliceTokens(const TokenTensor& tensor, int64_t begin, int64_t end) {
  return ResizeTokens(tensor, begin, end - begin);
}

TokenTensor PadTokens(const TokenTensor& tensor, int64_t tokens) {
  return ResizeTokens(tensor, 0, tokens);
}

Result<TokenTensor> RoundThroughWire(const TokenTensor& tensor, Encoding encoding) {
  FL_ASSIGN_OR_RETURN(EncodedTokens encoded, EncodeTokens(tensor, encoding));
  return DecodeTokens(encoded);
}

}  // namespace fl::internal
