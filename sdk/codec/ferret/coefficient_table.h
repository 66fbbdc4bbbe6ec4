#ifndef FL_SDK_CODEC_FERRET_COEFFICIENT_TABLE_H_
#define FL_SDK_CODEC_FERRET_COEFFICIENT_TABLE_H_

// Ferret coefficient tables: the sparse K x L matrix C[k, l] a client uploads (its
// projection) and the server aggregates, stores and broadcasts for replay.
//
// Wire format (all integers little endian):
//   "FLFC"  u32 version: the table format (1 float32, 2 bfloat16, 3 sampled int8,
//           4 sampled int4)
//   u64 plan_hash   u64 basis_hash   u32 num_seeds (K)   u32 num_blocks (L)
//   u32 num_records
// Formats 1 and 2, per record, blocks strictly increasing:
//     u32 block   u8 used[ceil(K / 8)] (bit k%8 of byte k/8 = seed k present)
//     value[popcount(used)] in increasing k, as float32 or bfloat16
//   A record lists at least one seed and bits at k >= K are zero.
//   About 4 (or 2) bytes per coefficient plus K/8 + 4 bytes per block.
// Formats 3 and 4 ("sampled"): after the header, u64 selection_seed; per record, blocks
// strictly increasing:
//     u32 block   u32 n (1..K)   i8 exponent   codes q[n]
//   The record's seeds are SelectBasisIndices(K, n, selection_seed, block) (basis.h) in
//   increasing order, with values q_j * 2^exponent. Codes are int8 (format 3, |q| <= 127)
//   or int4 (format 4, |q| <= 7, two per byte, low nibble first, a zero nibble pads an
//   odd n). The exponent is the smallest in [-128, 127] that keeps every |q| within
//   range (round to nearest even), so the most negative code never occurs and a record
//   with exponent > -128 has some |q| above half the range.
//   One byte (or half a byte) per coefficient plus 9 bytes per block, whatever K is: a
//   client that draws a few bases from a large pool sends their seed instead of a K-bit
//   map.
// Every table has exactly one encoding in each format.
//
// bfloat16, int8 and int4 are for uploads: their rounding (< 0.4% of a value; < 0.8%
// and < 15% of a record's largest value) adds a variance small against the projection's
// own (a coefficient is one noisy measurement of the update), and none underflows on
// small updates as IEEE half would. Aggregates and replay records stay float32.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fl/status.h"

namespace fl::internal::ferret {

inline constexpr char kCoefficientTableMagic[4] = {'F', 'L', 'F', 'C'};
// Persisted on the wire as the table's version: never change existing values.
enum class CoefficientTableFormat : uint32_t {
  kFloat32 = 1,
  kBFloat16 = 2,
  kSampledInt8 = 3,
  kSampledInt4 = 4,
};
// Upper bound on L accepted from the wire.
inline constexpr uint32_t kMaxBlocks = 1u << 24;

struct Coefficient {
  uint32_t block = 0;  // l
  uint32_t seed = 0;   // k: index into the seed pool, not the seed itself
  float value = 0.0f;
};

// Entries sorted by (block, seed), each pair at most once. The header names the block
// plan and basis spec the coefficients belong to. A value type; thread-compatible.
class CoefficientTable {
 public:
  CoefficientTable() = default;
  CoefficientTable(uint64_t plan_hash, uint64_t basis_hash, uint32_t num_seeds,
                   uint32_t num_blocks);

  uint64_t plan_hash() const { return plan_hash_; }
  uint64_t basis_hash() const { return basis_hash_; }
  uint32_t num_seeds() const { return num_seeds_; }
  uint32_t num_blocks() const { return num_blocks_; }
  const std::vector<Coefficient>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  // Appends C[seed, block] = value. InvalidArgument if block >= num_blocks(),
  // seed >= num_seeds(), or (block, seed) does not come strictly after the last entry.
  // Any float value is stored as is (ValidateCoefficientTable rejects non-finite ones).
  Status Append(uint32_t block, uint32_t seed, float value);

  // The entries of one block (empty if none), in increasing seed order.
  std::span<const Coefficient> BlockEntries(uint32_t block) const;

  // Equal headers and entries, values compared bit for bit.
  bool operator==(const CoefficientTable& other) const;

 private:
  uint64_t plan_hash_ = 0;
  uint64_t basis_hash_ = 0;
  uint32_t num_seeds_ = 0;
  uint32_t num_blocks_ = 0;
  std::vector<Coefficient> entries_;
};

// Formats 1 and 2 (kSampledInt8 is SerializeSampledCoefficientTable's). kBFloat16
// rounds each value to nearest even; the parsed table holds the rounded values.
std::string SerializeCoefficientTable(
    const CoefficientTable& table,
    CoefficientTableFormat format = CoefficientTableFormat::kFloat32);

// Formats 3 and 4: every block's seeds must be SelectBasisIndices(K, n_l,
// selection_seed, l), as Project draws them. InvalidArgument naming the block if they
// are not, if a value is not finite, or if `format` is not a sampled one. The parsed
// table holds the quantized values.
Result<std::string> SerializeSampledCoefficientTable(
    const CoefficientTable& table, uint64_t selection_seed,
    CoefficientTableFormat format = CoefficientTableFormat::kSampledInt8);

// Bounds-checked parse of untrusted bytes; never crashes, never allocates more than the
// input justifies. DataLoss: truncated input or trailing bytes. InvalidArgument: wrong
// magic or unknown version (table format), K = 0 or K > kMaxSeeds, L > kMaxBlocks, a
// block index >= L or not strictly increasing, an empty record, a used-bit at k >= K,
// or (formats 3, 4) n outside [1, K], a code out of range, a non-zero padding nibble or
// an exponent that is not the smallest.
// Non-finite values parse (they round-trip bit for bit, except that bfloat16 writes a
// signaling NaN back quiet); ValidateCoefficientTable rejects them. Work and memory are
// linear in the input size.
Result<CoefficientTable> ParseCoefficientTable(std::string_view bytes);

// Checks a table against what the receiver expects before it is used.
// FailedPrecondition: the plan or basis hash differs (computed for another block plan,
// seed pool or distribution). InvalidArgument: K or L in the header differ from the
// expected ones, an entry names an unknown block or seed index, or a value is not
// finite; the message names the (block, seed) at fault.
Status ValidateCoefficientTable(const CoefficientTable& table, uint64_t plan_hash,
                                uint64_t basis_hash, uint32_t num_seeds, uint32_t num_blocks);

// Coefficient-space aggregation: sum_i w_i * C_i over tables of one (plan, basis),
// kept sparse and in double. For server momentum C <- beta * C_prev + C, add the previous
// round's table with weight beta (meaningful only when the basis is the same).
// Not thread-safe; use one per thread and MergeWith (tree aggregation).
class CoefficientAccumulator {
 public:
  CoefficientAccumulator(uint64_t plan_hash, uint64_t basis_hash, uint32_t num_seeds,
                         uint32_t num_blocks);

  // Adds weight * table. FailedPrecondition if the table's header differs from this
  // accumulator's; InvalidArgument if weight or a value is not finite. On error the
  // accumulator is unchanged.
  Status Add(const CoefficientTable& table, double weight);

  // Adds other's sums. FailedPrecondition if the headers differ.
  Status MergeWith(const CoefficientAccumulator& other);

  size_t num_added() const { return num_added_; }
  double total_weight() const { return total_weight_; }
  // Distinct (block, seed) pairs used by any added table.
  size_t num_entries() const { return sums_.size(); }

  // scale * sum, rounded to float, for every pair some table used (bases no client used
  // are absent, so reconstruction skips them). Use scale = 1 / total_weight() for a
  // weighted mean. InvalidArgument if scale is not finite or a scaled value overflows.
  Result<CoefficientTable> ToTable(double scale = 1.0) const;

 private:
  struct Sum {
    uint64_t key;  // block << 32 | seed: sorts like (block, seed)
    double value;
  };
  Status CheckHeader(uint64_t plan_hash, uint64_t basis_hash, uint32_t num_seeds,
                     uint32_t num_blocks) const;
  void MergeSorted(const std::vector<Sum>& other, double weight);

  uint64_t plan_hash_;
  uint64_t basis_hash_;
  uint32_t num_seeds_;
  uint32_t num_blocks_;
  std::vector<Sum> sums_;  // sorted by key
  size_t num_added_ = 0;
  double total_weight_ = 0.0;
};

// sum_i weights[i] * tables[i] as one table (a one-shot CoefficientAccumulator).
// InvalidArgument if the spans differ in length or are empty; otherwise as Add.
Result<CoefficientTable> WeightedSum(std::span<const CoefficientTable> tables,
                                     std::span<const double> weights);

}  // namespace fl::internal::ferret

#endif  // FL_SDK_CODEC_FERRET_COEFFICIENT_TABLE_H_
