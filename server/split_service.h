#ifndef FL_SERVER_SPLIT_SERVICE_H_
#define FL_SERVER_SPLIT_SERVICE_H_

// SFPrompt's server side (specs/sfprompt.md): the frozen body of a ViT serving split
// sessions of the clients selected for the open round. fl-server's SplitStep handler and
// fl-sim's InProcessLink both open their sessions here and hand it the tensors in their
// wire form (EncodedTokens), so both get the same checks, the same rounding and the same
// ledger rows. No LibTorch or gRPC in this header.
//
// Every value a session receives is checked before it reaches the body: the round is
// still open for the client, the encoding is the one opened, the shape is [b, tokens,
// width] with 1 <= b <= max_batch_samples (a Backward: its Forward's batch and the
// session's output tokens, SplitSessionOptions::output_tokens), the byte length
// matches and every value is finite. A session that ends with an error (refused input,
// steps out of order, a client that left without Finish, idle too long) writes one
// ledger row (Coordinator::RecordSplitRefusal); other sessions, even ones batched into
// the same body pass, go on.

#include <chrono>
#include <cstdint>
#include <memory>

#include "codec/token_codec.h"
#include "fl/env.h"
#include "fl/param_set.h"
#include "fl/split_session.h"
#include "fl/status.h"
#include "server/coordinator.h"
#include "torch/split_body.h"

namespace fl::internal {

struct SplitServiceOptions {
  // The body: the ViT, the cut [begin, end), device, batching and threads.
  SplitBodyOptions body;
  // Sessions open at once, over all clients; a client holds at most one.
  int max_sessions = 64;
  // Largest batch one Forward may carry.
  int64_t max_batch_samples = 64;
  // A session with no request for this long is ended with Aborted and its activations
  // are freed (on the Env clock).
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(2)};
  // How often (real time) the service's sweeper looks for idle sessions; 0: never (the
  // owner calls EndIdleSessions itself).
  std::chrono::milliseconds sweep_interval{std::chrono::seconds(1)};
  // Optional, not owned: the clock for idle_timeout. Default Env::Default().
  Env* env = nullptr;
};

struct SplitServiceStats {
  int64_t open_sessions = 0;
  int64_t steps_running = 0;        // sessions with a Forward or Backward in progress
  int64_t sessions_opened = 0;      // since start
  int64_t sessions_failed = 0;      // ended with an error (each has a ledger row)
  int64_t sessions_ended_idle = 0;  // of those, by idle_timeout
  BodyPassCounts body;
};

// One client's session as the server sees it. Not thread-safe: one call at a time (as
// one stream's messages arrive). Errors as fl::SplitSession's; every error ends the
// session (one ledger row, activations freed) and later steps fail with
// FailedPrecondition. Must not outlive its SplitService.
class SplitServerSession {
 public:
  // Ends a session that neither finished nor failed as abandoned (Fail with Cancelled).
  virtual ~SplitServerSession() = default;
  virtual int64_t tokens() const = 0;
  virtual int64_t width() const = 0;
  virtual int64_t max_batch() const = 0;
  virtual Encoding encoding() const = 0;
  // The tokens the session moves (SplitSessionOptions' ranges, resolved).
  virtual SplitTokenRanges ranges() const = 0;
  // The body's output at `activations` (tokens [0, ranges().output)), in the session's
  // encoding.
  virtual Result<EncodedTokens> Forward(const EncodedTokens& activations) = 0;
  // The gradient at the body's input tokens [ranges().grad_begin, ranges().grad_end) for
  // the last Forward, given the gradient at its ranges().output output tokens, in the
  // session's encoding.
  virtual Result<EncodedTokens> Backward(const EncodedTokens& grad_output) = 0;
  // Ends the session cleanly (no ledger row). Idempotent; OK after an error too.
  virtual Status Finish() = 0;
  // Ends the session with `status` (not OK): the transport lost or refused the client.
  // One ledger row (its reason notes a Forward left without its Backward); nothing if
  // the session had already ended.
  virtual void Fail(const Status& status) = 0;
};

// Thread-safe. Create starts the body's worker and the idle sweeper.
class SplitService {
 public:
  // `backbone`: a full ViT of options.body.vit (null: initialized from
  // options.body.init_seed); `coordinator` is not owned and must outlive the service.
  // InvalidArgument for bad options (SplitBodyServer::Create's, max_sessions < 1,
  // max_batch_samples < 1, idle_timeout <= 0, sweep_interval < 0) or a null coordinator.
  static Result<std::unique_ptr<SplitService>> Create(const SplitServiceOptions& options,
                                                      const ParamSet* backbone,
                                                      Coordinator* coordinator);
  // Ends every open session with Aborted (no ledger rows: the server stopped, not the
  // client). Sessions still held answer FailedPrecondition afterwards.
  virtual ~SplitService() = default;

  // Opens a session for `who` training task `options.round`. InvalidArgument for an
  // encoding other than dense f32/f16/bf16 or token ranges outside the body's tokens
  // (ResolveTokenRanges); FailedPrecondition unless
  // Coordinator::CheckTrainingFor(who, round); ResourceExhausted when max_sessions are
  // open or `who` holds one already. No ledger row for a refused Open.
  virtual Result<std::unique_ptr<SplitServerSession>> Open(const Session& who,
                                                           const SplitSessionOptions& options) = 0;
  // Ends the sessions that had no request for idle_timeout (Aborted, one ledger row each,
  // activations freed) and returns how many. The sweeper calls it every sweep_interval.
  virtual int EndIdleSessions() = 0;
  virtual SplitServiceStats Stats() const = 0;
};

}  // namespace fl::internal

#endif  // FL_SERVER_SPLIT_SERVICE_H_
