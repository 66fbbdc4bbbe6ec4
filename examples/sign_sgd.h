#ifndef FL_EXAMPLES_SIGN_SGD_H_
#define FL_EXAMPLES_SIGN_SGD_H_

// Writing your own algorithm: sign-SGD with majority vote (Bernstein et al., "signSGD
// with Majority Vote is Communication Efficient and Fault Tolerant", ICLR 2019), built
// from the public headers alone (fl/...), exactly as an application would.
//
//   Client: trains like FedAvg and uploads its dense delta (fl::NewDenseDeltaLearner).
//   Server: every client casts one vote sign(delta_i) per coordinate, whatever its
//           example count: weighting by the count a client reports would let one client
//           claiming a huge dataset outvote everyone, which is what the majority vote is
//           there to prevent. The votes are summed as they arrive, so the server holds
//           one counter per parameter however many clients report.
//   Step:   global_i += server_lr * sign(vote_i); a tie leaves the coordinate alone.
//
// Config: signsgd.server_lr (default 0.01; finite and > 0), plus the shared train.*.
//
//   fl::Status s = fl::examples::RegisterSignSgd();  // once, before anything starts
//   // then run with algorithm.name=signsgd (server, fl::RunSimulation, ...)

#include "fl/algorithm.h"
#include "fl/status.h"

namespace fl::examples {

inline constexpr char kSignSgdName[] = "signsgd";
inline constexpr char kSignSgdServerLrKey[] = "signsgd.server_lr";

// The definition RegisterSignSgd() registers; exposed so that an app or a test can wrap
// or rename it.
fl::AlgorithmDefinition SignSgdAlgorithm();

// Registers "signsgd" in the process-wide registry: AlreadyExists if it already is.
fl::Status RegisterSignSgd();

}  // namespace fl::examples

#endif  // FL_EXAMPLES_SIGN_SGD_H_
