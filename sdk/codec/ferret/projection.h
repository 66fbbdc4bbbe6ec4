#ifndef FL_SDK_CODEC_FERRET_PROJECTION_H_
#define FL_SDK_CODEC_FERRET_PROJECTION_H_

// Ferret's numerical core: project a full-parameter update onto shared random bases
// (client) and rebuild an update from coefficients (server, and clients replaying).
//
//   Client:  table = Project(plan, basis, delta, options)      delta = w_old - w_new
//   Server:  acc.Add(table_i, weight_i) ...; C = acc.ToTable(1 / acc.total_weight())
//            Reconstruct(plan, basis, C, {.multiplier = -server_lr, .clip_norm = 10}, w)
//   Replay:  the same Reconstruct call, with the same table and options, on the same
//            model version gives the same bits on any machine, thread count or device.
//
// Maths. Block l has d_l entries and uses n_l of the K pool bases, S_l. The coefficient
// of basis k in S_l is c[k,l] = s_l * <delta_l, v_{k,l}>, and the reconstruction is
// delta~_l = sum_k C[k,l] v_{k,l}. With rho_l the per-entry variance of v (basis.h),
//   unbiased:  s_l = 1 / (rho_l * n_l)  gives E[delta~_l] = delta_l;
//   reference: s_l = d_l / n_l          (the reference code; with its uniform entries of
//              amplitude 1/sqrt(d_l) this is E[delta~] = delta / 3, compensated there by a
//              server learning rate of 10).
//
// Cost. Projection: one pass for the block norms (kProportional only) plus sum_l n_l d_l
// fused multiply-adds, never materializing a basis (kernels.h). Reconstruction: K d at
// most, plus one generating pass per term for clipping norms with uniform or gaussian
// entries (rademacher norms are known: |c| a_l sqrt(d_l)).

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "codec/ferret/basis.h"
#include "codec/ferret/block_plan.h"
#include "codec/ferret/coefficient_table.h"
#include "fl/status.h"

namespace fl::internal::ferret {

// Persisted in configs: never change existing values.
enum class CoefficientScale : uint32_t {
  kUnbiased = 1,   // s_l = 1 / (rho_l n_l)
  kReference = 2,  // s_l = d_l / n_l
};

// Persisted in configs: never change existing values.
enum class SelectionPolicy : uint32_t {
  kFixed = 1,         // n_l = min(budget, K) for every block
  kProportional = 2,  // n_l = max(min_per_block, floor(budget * |d_l| / max_j |d_j|)), <= K
};

enum class ComputeDevice {
  kCpu = 0,
  kCuda = 1,  // sdk/cuda twins; Unimplemented if built without CUDA, Unavailable if no GPU
};

struct ProjectOptions {
  SelectionPolicy selection = SelectionPolicy::kFixed;
  // Bases per block (kFixed) or the proportional budget (kProportional). 0 means K.
  uint32_t budget = 0;
  // kProportional floor (the reference uses 2). Capped at K.
  uint32_t min_per_block = 2;
  CoefficientScale scale = CoefficientScale::kUnbiased;
  // Drives which indices a block uses when n_l < K (SelectBasisIndices in basis.h). Derive it from (run, client, round) for independent draws.
  uint64_t selection_seed = 0;
  // CPU threads; 0 means hardware concurrency. Results do not depend on it.
  int num_threads = 1;
  ComputeDevice device = ComputeDevice::kCpu;
};

// Squared norms of unit-scale bases, keyed by (distribution, seed, block, block size).
// They never change, so a server that clips every round with a fixed seed pool computes
// each one once instead of paying a generating pass per term and round. Values are the
// exact, device-independent ones of NormJob. Not thread-safe: one per concurrent
// Reconstruct caller.
class BasisNormCache {
 public:
  // The cached value, or nullptr.
  const double* Find(BasisDistribution dist, uint64_t seed, uint32_t block, size_t size) const;
  void Insert(BasisDistribution dist, uint64_t seed, uint32_t block, size_t size, double norm_sq);
  size_t size() const { return map_.size(); }
  void Clear() { map_.clear(); }

 private:
  struct Key {
    uint64_t seed;
    uint64_t size;
    uint32_t block;
    uint32_t dist;
    bool operator==(const Key& o) const {
      return seed == o.seed && size == o.size && block == o.block && dist == o.dist;
    }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  std::unordered_map<Key, double, KeyHash> map_;
};

struct ReconstructOptions {
  // params += multiplier * sum_{k,l} C[k,l] v_{k,l}. A server applying descent
  // directions uses -server_lr; replaying clients must use the server's value.
  double multiplier = 1.0;
  // If > 0, each term C[k,l] v_{k,l} whose norm exceeds clip_norm is scaled down to it
  // (before the multiplier), as the reference does with 10. 0 disables clipping.
  double clip_norm = 0.0;
  // Optional, caller-owned; used only when clipping uniform or gaussian bases.
  BasisNormCache* norm_cache = nullptr;
  int num_threads = 1;
  ComputeDevice device = ComputeDevice::kCpu;
};

struct ReconstructStats {
  uint64_t terms_applied = 0;            // (seed, block) terms added to the parameters
  uint64_t terms_clipped = 0;            // of those, scaled down to clip_norm
  uint64_t terms_skipped_nonfinite = 0;  // non-finite coefficient or term scale: skipped
};

// ||delta_l|| per block, in double, summed in entry order. InvalidArgument if
// delta.size() != plan.total_size() or delta holds a non-finite value (named by index).
Result<std::vector<double>> BlockNorms(const BlockPlan& plan, std::span<const float> delta);

// n_l per block under `options` for a pool of num_seeds bases; `norms` is only read for
// kProportional (all-zero norms give min_per_block everywhere).
std::vector<uint32_t> BasesPerBlock(std::span<const double> norms, uint32_t num_seeds,
                                    const ProjectOptions& options);

// s_l * a_l: multiplies a raw dot product with the unit-scale entries u into a
// coefficient.
double CoefficientFactor(const BasisSpec& basis, CoefficientScale scale, size_t block_size,
                         uint32_t n);

// The client half. Returns the coefficient table (header: plan.hash(), basis.Hash(), K,
// L) with n_l entries for every block. InvalidArgument if the basis spec is invalid,
// delta.size() != plan.total_size(), delta has a non-finite value or options are out of
// range; Unimplemented / Unavailable for kCuda without CUDA support or device.
// Thread-safe (no shared state).
Result<CoefficientTable> Project(const BlockPlan& plan, const BasisSpec& basis,
                                 std::span<const float> delta, const ProjectOptions& options);

// The server half and the replay: params += multiplier * sum C[k,l] v_{k,l} over the
// table's entries, clipped per term. Non-finite coefficients (or term scales that
// overflow) are skipped and counted, never applied; a warning is logged when any term
// is skipped. FailedPrecondition if the table's plan or basis hash differs from
// plan/basis; InvalidArgument if params.size() != plan.total_size(), the basis spec or
// options are invalid, or the table names an unknown block or seed. params is untouched
// on error. Bitwise identical results for any num_threads and for CPU and CUDA.
Result<ReconstructStats> Reconstruct(const BlockPlan& plan, const BasisSpec& basis,
                                     const CoefficientTable& table,
                                     const ReconstructOptions& options, std::span<float> params);

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_PROJECTION_H_
