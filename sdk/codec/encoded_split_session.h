#ifndef FL_SDK_CODEC_ENCODED_SPLIT_SESSION_H_
#define FL_SDK_CODEC_ENCODED_SPLIT_SESSION_H_

// The client's half of a split session (fl/split_session.h), shared by both links: it
// encodes each tensor in the session's encoding (token_codec.h), hands it to a
// SplitChannel (GrpcLink: a SplitStep stream; InProcessLink: the server's session
// object), checks and decodes the answer, counts the traffic and ends the session on
// the first error. The links differ only in their channel, so fl-sim's clients see the
// same rounding, errors and byte counts as gRPC clients.

#include <cstdint>
#include <memory>

#include "codec/token_codec.h"
#include "fl/split_session.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl::internal {

enum class SplitStepKind { kForward, kBackward };

// How one session's steps reach the server. Called one step at a time.
class SplitChannel {
 public:
  virtual ~SplitChannel() = default;
  // Sends `tensor` as a Forward or Backward and returns the server's answer, or the
  // status the server ended the session with.
  virtual Result<EncodedTokens> Exchange(SplitStepKind kind, const EncodedTokens& tensor) = 0;
  // Ends the session cleanly; the server's final status.
  virtual Status Close() = 0;
  // Ends the session without Finish (after an error, or when dropped unfinished).
  virtual void Abandon() = 0;
};

class EncodedSplitSession final : public SplitSession {
 public:
  // `tokens`, `width` and `ranges`: what the server announced when the session opened
  // (the answers must have exactly those tokens); the open exchange counts
  // kSplitFramingBytes each way.
  EncodedSplitSession(int64_t tokens, int64_t width, const SplitTokenRanges& ranges,
                      Encoding encoding, std::unique_ptr<SplitChannel> channel);
  // Abandons the channel unless Finish was called.
  ~EncodedSplitSession() override;

  int64_t tokens() const override { return tokens_; }
  int64_t width() const override { return width_; }
  // Errors as SplitSession::Forward; InvalidArgument (local, the session ends) for a
  // tensor that cannot be encoded; DataLoss for an answer of another shape.
  Result<TokenTensor> Forward(const TokenTensor& activations) override;
  Result<TokenTensor> Backward(const TokenTensor& grad_output) override;
  Status Finish() override;
  SplitTraffic traffic() const override { return traffic_; }

 private:
  Result<TokenTensor> Step(SplitStepKind kind, const TokenTensor& tensor);
  Result<TokenTensor> Exchange(SplitStepKind kind, const TokenTensor& tensor);

  const int64_t tokens_;
  const int64_t width_;
  const SplitTokenRanges ranges_;
  const Encoding encoding_;
  std::unique_ptr<SplitChannel> channel_;
  bool ended_ = false;
  Status end_;  // why the session ended (OK: Finish)
  SplitTraffic traffic_;
};

}  // namespace fl::internal

#endif  // FL_SDK_CODEC_ENCODED_SPLIT_SESSION_H_
