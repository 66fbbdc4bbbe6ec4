#ifndef FL_SDK_CODEC_TOKEN_CODEC_H_
#define FL_SDK_CODEC_TOKEN_CODEC_H_

// Split learning's tensors on the wire (fl/split_session.h): a TokenTensor's values as
// little-endian float32, IEEE half or bfloat16 (the dense codecs of dense_codec.h), with
// their shape beside them. Both links and the server use these functions, so a
// simulated client (InProcessLink) sees exactly the rounding a gRPC client sees, and the
// server checks what it receives in one place. Every shape and byte count here comes from
// the network: decoding checks them all before allocating anything.

#include <cstdint>
#include <string>

#include "fl/split_session.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

// A TokenTensor as it travels: shape, encoding and the encoded values.
struct EncodedTokens {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t width = 0;
  Encoding encoding = Encoding::kDenseF32;
  std::string values;  // batch * tokens * width values in `encoding`
};

// Largest tensor accepted, in values (1 GiB as float32); bounds every product of dims
// before it is computed in 64 bits.
inline constexpr int64_t kMaxTokenTensorValues = int64_t{1} << 28;

// What one split message costs besides its values (shape, encoding, tags), as counted in
// SplitTraffic by both links; an estimate, fixed so that the links agree.
inline constexpr uint64_t kSplitFramingBytes = 32;

// InvalidArgument unless batch, tokens and width are each >= 1 and their product is at
// most kMaxTokenTensorValues.
Status CheckTokenShape(int64_t batch, int64_t tokens, int64_t width);

// Encodes `tensor` in `encoding` (kDenseF32, kDenseF16 or kDenseBF16). InvalidArgument
// for a bad shape (CheckTokenShape), values.size() other than batch * tokens * width, or
// another encoding. Non-finite values are encoded as they are (the receiver refuses them).
Result<EncodedTokens> EncodeTokens(const TokenTensor& tensor, Encoding encoding);

// Decodes `encoded`. InvalidArgument for a bad shape, an encoding that is not dense, a
// byte length other than batch * tokens * width * the encoding's size, or a value that is
// not finite (also one that became infinite when narrowed, e.g. above 65504 as f16).
Result<TokenTensor> DecodeTokens(const EncodedTokens& encoded);

// `tensor` rounded as it would be by crossing the wire in `encoding` (encode + decode).
// Errors as EncodeTokens and DecodeTokens.
Result<TokenTensor> RoundThroughWire(const TokenTensor& tensor, Encoding encoding);

// The tokens a split session moves (SplitSessionOptions' output_tokens, grad_begin and
// grad_end with their 0s resolved against the body's T): Forward answers output tokens
// [0, output), Backward takes those and answers input tokens [grad_begin, grad_end).
struct SplitTokenRanges {
  int64_t output = 0;
  int64_t grad_begin = 0;
  int64_t grad_end = 0;
  bool operator==(const SplitTokenRanges&) const = default;
};

// `options`' ranges against a body of `tokens` tokens. InvalidArgument unless
// 0 <= output_tokens <= tokens and either grad_begin = grad_end = 0 or
// 0 <= grad_begin < grad_end <= tokens (they come from the network).
Result<SplitTokenRanges> ResolveTokenRanges(const SplitSessionOptions& options, int64_t tokens);

// Tokens [begin, end) of every sample of `tensor`. REQUIRES 0 <= begin < end <= tokens.
TokenTensor SliceTokens(const TokenTensor& tensor, int64_t begin, int64_t end);

// `tensor` with zeros appended to every sample up to `tokens` tokens: the gradient at
// tokens the client did not read. REQUIRES tokens >= tensor.tokens.
TokenTensor PadTokens(const TokenTensor& tensor, int64_t tokens);

// What one split message carrying `encoded` counts in SplitTraffic.
inline uint64_t SplitMessageBytes(const EncodedTokens& encoded) {
  return encoded.values.size() + kSplitFramingBytes;
}

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_TOKEN_CODEC_H_
