#ifndef FL_ALGORITHMS_FERRET_FERRET_REPLAY_H_
#define FL_ALGORITHMS_FERRET_FERRET_REPLAY_H_

// Ferret's downlink by replay. A round moves the global model by one reconstruction:
//   w_r = w_{r-1} + multiplier * sum_{k,l} clip(C[k,l] v_{k,l})
// where C is the round's final coefficient table (after server momentum), multiplier is
// -server_lr, and the bases come from the round's spec. A replay record holds exactly
// those inputs, so w_r is a deterministic function of w_{r-1} and the record. The server
// applies each round through ApplyFerretReplay, and clients holding w_{r-1} call the
// very same function on the same record: the reconstruction kernels are bitwise
// reproducible for any thread count (codec/ferret/kernels.h), so both get the same bits.
//
// Record format v1 (integers little endian):
//   "FLFR"  u32 version (1)  u64 layout_hash
//   u32 plan_kind  u64 block_size  u32 distribution  u32 amplitude
//   u64 pool_seed  u64 epoch  u32 num_bases
//   f64 multiplier  f64 clip_norm  (IEEE bits)
//   the coefficient table (codec/ferret/coefficient_table.h wire format) to the end

#include <cstdint>
#include <string>
#include <string_view>

#include "algorithms/ferret/ferret_spec.h"
#include "codec/ferret/coefficient_table.h"
#include "codec/ferret/projection.h"
#include "fl/param_set.h"
#include "fl/status.h"

namespace fl::internal {

inline constexpr char kFerretReplayMagic[4] = {'F', 'L', 'F', 'R'};
inline constexpr uint32_t kFerretReplayVersion = 1;

struct FerretReplay {
  uint64_t layout_hash = 0;  // of the model the record applies to
  FerretRoundSpec spec;
  double multiplier = -1.0;
  double clip_norm = 0.0;
  ferret::CoefficientTable table;
};

std::string SerializeFerretReplay(const FerretReplay& replay);

// Bounds-checked parse of untrusted bytes. DataLoss if truncated; InvalidArgument for a
// wrong magic or version, an invalid spec, a non-finite multiplier, a negative or
// non-finite clip, or a table that does not parse, is not float32 (format 1) or holds
// non-finite values.
Result<FerretReplay> ParseFerretReplay(std::string_view bytes);

struct FerretApplyOptions {
  int num_threads = 1;  // 0: hardware concurrency; the result does not depend on it
  // Optional, caller-owned (servers with a fixed seed pool keep one across rounds).
  ferret::BasisNormCache* norm_cache = nullptr;
};

// model += multiplier * sum clip(C[k,l] v_{k,l}), the one code path for server and
// replaying clients. FailedPrecondition if the record belongs to another layout, block
// plan or basis; InvalidArgument for a malformed record. *model is unchanged on error.
// A result that is not finite is not an error here (the server refuses it itself).
Result<ferret::ReconstructStats> ApplyFerretReplay(const FerretReplay& replay,
                                                   const FerretApplyOptions& options,
                                                   ParamSet* model);

// Parses `record` and applies it with default options: the replayer registered for
// "ferret" (algorithms/registry.h). Errors as ParseFerretReplay and ApplyFerretReplay.
Status ApplyFerretReplayRecord(std::string_view record, ParamSet* model);

}  // namespace fl::internal

#endif  // FL_ALGORITHMS_FERRET_FERRET_REPLAY_H_
