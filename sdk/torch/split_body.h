#ifndef FL_SDK_TORCH_SPLIT_BODY_H_
#define FL_SDK_TORCH_SPLIT_BODY_H_

// SFPrompt's server side: the frozen body of a TinyVit (blocks [begin, end)) serving many
// client sessions at once. Each session sends the activations at the cut (Forward) and
// later the gradient at the body's output (Backward); concurrent requests of the same
// kind are concatenated along the batch dimension into one body pass, because a few
// large passes use the cores far better than many small ones. LibTorch stays out of
// this header.
//
// Backward recomputes the body's forward pass on the session's saved input instead of
// keeping the autograd graph of its Forward: a graph pins every intermediate tensor of
// every open session until its Backward, and a batched graph could only be
// differentiated once all of its sessions' gradients had arrived together. The
// recomputation costs one more body forward per step; the server keeps only each
// session's input [b, T, D].

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codec/token_codec.h"
#include "fl/param_set.h"
#include "fl/split_session.h"
#include "fl/status.h"
#include "torch/vit_trainer.h"

namespace fl::internal {

struct BodyBatchingOptions {
  // false: every request is a pass of its own (still run on the worker thread, one at a
  // time, so on and off differ only in the gathering).
  bool enabled = true;
  // A pass holds at most this many samples (a single larger request still runs alone).
  int64_t max_batch_samples = 64;
  // How long the worker waits, after the first request of a pass arrives, for more of
  // the same kind before it runs what it has.
  int64_t max_wait_us = 2000;
};

struct SplitBodyOptions {
  VitOptions vit;
  int64_t begin = 1;  // the body is blocks [begin, end)
  int64_t end = 3;
  std::string device = "cpu";  // a resolved device (ResolveTorchDevice)
  // Initializes the ViT when Create gets no backbone.
  uint64_t init_seed = 1;
  BodyBatchingOptions batching;
  // LibTorch's intra-op threads (process-wide, SetTorchThreads); 0 leaves them as they
  // are. Body passes run one at a time on one worker, so that worker may use every core.
  int torch_threads = 0;
};

// What the worker has run so far, for tests and benchmarks.
struct BodyPassCounts {
  int64_t forward_passes = 0;
  int64_t backward_passes = 0;
  int64_t requests = 0;               // requests that ran in some pass
  int64_t samples = 0;                // samples through the body, forward and backward
  int64_t max_requests_in_a_pass = 0;
  int64_t passes_with_several_requests = 0;
  int64_t saved_sessions = 0;  // sessions whose activations are held now
};

// Thread-safe: any number of session threads call Forward / Backward / Close at once.
// Each call blocks until its slice of a pass is back. A session's calls must not overlap
// one another (one step at a time, as a client's stream does).
class SplitBodyServer {
 public:
  // `backbone`: a full ViT of FullVitLayout(options.vit) (null: initialized from
  // options.init_seed). InvalidArgument for bad options, a cut outside [0, depth] or
  // empty, a backbone of another layout, or bad batching options.
  static Result<std::unique_ptr<SplitBodyServer>> Create(const SplitBodyOptions& options,
                                                         const ParamSet* backbone);
  // Requests still waiting fail with Aborted.
  ~SplitBodyServer();
  SplitBodyServer(const SplitBodyServer&) = delete;
  SplitBodyServer& operator=(const SplitBodyServer&) = delete;

  // The body's output for `activations` [b, T, D], which the session's next Backward
  // differentiates at. InvalidArgument for a shape other than [b >= 1, tokens(),
  // width()] or a non-finite value; FailedPrecondition after Close(session).
  Result<TokenTensor> Forward(uint64_t session, const TokenTensor& activations);
  // The gradient at the body's input given `grad_output` at its output, at the
  // activations of the session's last Forward. FailedPrecondition without a prior
  // Forward or after Close(session); InvalidArgument for a shape other than that
  // Forward's or a non-finite value.
  Result<TokenTensor> Backward(uint64_t session, const TokenTensor& grad_output);
  // Forgets the session's activations; its later requests fail. Closing an unknown
  // session is not an error (it may never have sent anything).
  void Close(uint64_t session);

  int64_t tokens() const;  // T: 1 + prompts + patches
  int64_t width() const;   // D
  BodyPassCounts counts() const;

 private:
  struct Impl;
  explicit SplitBodyServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One session's step through `body` moving only the session's tokens (`ranges`): the
// body's output cut to tokens [0, ranges.output); the output gradient of those tokens
// zero-padded to the body's tokens (the client read no others) before its Backward, and
// the input gradient cut to [ranges.grad_begin, ranges.grad_end). The server's sessions
// step through these, and so do tests standing in for them. Errors as the body's;
// BackwardTokens: InvalidArgument for a grad_output of other than ranges.output tokens.
Result<TokenTensor> ForwardTokens(SplitBodyServer& body, uint64_t session,
                                  const TokenTensor& activations, const SplitTokenRanges& ranges);
Result<TokenTensor> BackwardTokens(SplitBodyServer& body, uint64_t session,
                                   const TokenTensor& grad_output, const SplitTokenRanges& ranges);

}  // namespace fl::internal

#endif  // FL_SDK_TORCH_SPLIT_BODY_H_
