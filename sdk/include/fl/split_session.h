#ifndef FL_SDK_INCLUDE_FL_SPLIT_SESSION_H_
#define FL_SDK_INCLUDE_FL_SPLIT_SESSION_H_

// Split learning (SFPrompt): the client runs the first and last layers of a model and
// the server runs the frozen middle ("the body") for it. One SplitSession is one
// client's conversation with the body during one training task: per minibatch the
// client sends the activations at the cut (Forward), gets the body's output, computes
// its loss and sends the gradient at the body's output (Backward), and gets the
// gradient at the body's input back. The body is frozen: Backward is a vector-Jacobian
// product and changes nothing on the server.
//
// A GrpcLink session is a bidirectional SplitStep stream to fl-server; an InProcessLink
// session calls the same server-side service directly (fl-sim). Values cross the wire
// as float32, float16 or bfloat16 (SplitSessionOptions::encoding); both links round
// them the same way, so fl-sim sees what a real client would.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fl/export.h"
#include "fl/status.h"
#include "fl/update.h"

namespace fl {

// Activations or gradients at a cut: [batch, tokens, width] float32, row-major.
struct TokenTensor {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t width = 0;
  std::vector<float> values;  // batch * tokens * width
};

struct SplitSessionOptions {
  // The task the session trains for (Task::round): the server serves only clients
  // selected for that round (in async mode: holding that task) while it is open.
  uint64_t round = 0;
  // How activations and gradients travel, both ways: kDenseF32, kDenseF16 or kDenseBF16.
  Encoding encoding = Encoding::kDenseF32;
  // Only the tokens the client reads travel (with T = tokens()). Forward returns the
  // body's output at tokens [0, output_tokens) only, and Backward takes the gradient at
  // those tokens only (the server takes the others' as zero): a tail without blocks
  // reads only CLS (output_tokens = 1). 0: all T. Otherwise 1 <= output_tokens <= T.
  int64_t output_tokens = 0;
  // Backward returns the gradient at the body's input tokens [grad_begin, grad_end)
  // only: a client without head blocks needs it at its prompts alone. Both 0: all T;
  // otherwise 0 <= grad_begin < grad_end <= T. The server refuses other values of
  // these three on open (InvalidArgument).
  int64_t grad_begin = 0;
  int64_t grad_end = 0;
  // The body the client's head and tail were cut for, in the server's naming (a ViT:
  // "vit:width=128,depth=4,heads=4,mlp_ratio=4,prompts=8 blocks [0, 4)"): tensors of the
  // right shape through another body would train silently wrong, so the server refuses a
  // body other than its own with FailedPrecondition naming both (InvalidArgument beyond
  // 256 bytes). Empty: any body.
  std::string body;
};

// What a session has moved so far: encoded tensor bytes plus message framing.
struct SplitTraffic {
  uint64_t bytes_up = 0;    // client to server
  uint64_t bytes_down = 0;  // server to client
  uint64_t steps = 0;       // Forward + Backward calls answered
};

// One client's session with the server's body. Not thread-safe; one step at a time:
// Forward, then (optionally) Backward at that Forward's activations, then the next
// Forward. Any error ends the session: later calls fail with FailedPrecondition.
class FL_EXPORT SplitSession {
 public:
  virtual ~SplitSession() = default;
  // The body's token count T and width D: what Forward takes per sample.
  virtual int64_t tokens() const = 0;
  virtual int64_t width() const = 0;
  // The body's output at `activations` [b, T, D] (b >= 1, at most the server's batch
  // limit): its tokens [0, output_tokens), [b, output_tokens, D] (all: [b, T, D]).
  // InvalidArgument for another shape or a non-finite value; ResourceExhausted for a
  // batch over the server's limit; FailedPrecondition once the round closed or the
  // session ended; Aborted if the server shut the session down (idle too long, server
  // stopping).
  virtual Result<TokenTensor> Forward(const TokenTensor& activations) = 0;
  // The gradient at the body's input tokens [grad_begin, grad_end), [b, grad_end -
  // grad_begin, D] (all: [b, T, D]), given `grad_output` [b, output_tokens, D] at the
  // output tokens Forward returned, for the last Forward's activations. InvalidArgument
  // unless grad_output has the shape of the last Forward's answer and finite values;
  // FailedPrecondition without a Forward since the last Backward.
  virtual Result<TokenTensor> Backward(const TokenTensor& grad_output) = 0;
  // Ends the session cleanly (the server forgets its activations). Idempotent.
  virtual Status Finish() = 0;
  virtual SplitTraffic traffic() const = 0;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_SPLIT_SESSION_H_
