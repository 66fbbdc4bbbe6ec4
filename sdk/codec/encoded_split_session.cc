#include "codec/encoded_split_session.h"

#include <string>
#include <utility>

namespace fl::internal {

EncodedSplitSession::EncodedSplitSession(int64_t tokens, int64_t width,
                                         const SplitTokenRanges& ranges, Encoding encoding,
                                         std::unique_ptr<SplitChannel> channel)
    : tokens_(tokens),
      width_(width),
      ranges_(ranges),
      encoding_(encoding),
      channel_(std::move(channel)) {
  traffic_.bytes_up = kSplitFramingBytes;
  traffic_.bytes_down = kSplitFramingBytes;
}

EncodedSplitSession::~EncodedSplitSession() {
  if (!ended_) channel_->Abandon();
}

Result<TokenTensor> EncodedSplitSession::Forward(const TokenTensor& activations) {
  return Step(SplitStepKind::kForward, activations);
}

Result<TokenTensor> EncodedSplitSession::Backward(const TokenTensor& grad_output) {
  return Step(SplitStepKind::kBackward, grad_output);
}

Result<TokenTensor> EncodedSplitSession::Step(SplitStepKind kind, const TokenTensor& tensor) {
  if (ended_) {
    return Status::FailedPrecondition("split session has ended" +
                                      (end_.ok() ? std::string() : " (" + end_.ToString() + ")"));
  }
  Result<TokenTensor> answer = Exchange(kind, tensor);
  if (!answer.ok()) {
    ended_ = true;
    end_ = answer.status();
    channel_->Abandon();
  }
  return answer;
}

Result<TokenTensor> EncodedSplitSession::Exchange(SplitStepKind kind, const TokenTensor& tensor) {
  FL_ASSIGN_OR_RETURN(EncodedTokens sent, EncodeTokens(tensor, encoding_));
  traffic_.bytes_up += SplitMessageBytes(sent);
  FL_ASSIGN_OR_RETURN(EncodedTokens got, channel_->Exchange(kind, sent));
  traffic_.bytes_down += SplitMessageBytes(got);
  ++traffic_.steps;
  const int64_t tokens =
      kind == SplitStepKind::kForward ? ranges_.output : ranges_.grad_end - ranges_.grad_begin;
  if (got.batch != sent.batch || got.tokens != tokens || got.width != width_ ||
      got.encoding != encoding_) {
    return Status::DataLoss("the server answered a split step with [" + std::to_string(got.batch) +
                            ", " + std::to_string(got.tokens) + ", " + std::to_string(got.width) +
                            "] " + EncodingName(got.encoding) + ", not [" +
                            std::to_string(sent.batch) + ", " + std::to_string(tokens) + ", " +
                            std::to_string(width_) + "] " + EncodingName(encoding_));
  }
  Result<TokenTensor> decoded = DecodeTokens(got);
  if (!decoded.ok()) {
    return Status::DataLoss("the server's split answer: " + decoded.status().message());
  }
  return decoded;
}

Status EncodedSplitSession::Finish() {
  if (ended_) return Status::Ok();
  ended_ = true;
  return channel_->Close();
}

}  // namespace fl::internal
