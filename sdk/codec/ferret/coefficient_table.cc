#include "codec/ferret/coefficient_table.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "codec/byte_io.h"
#include "codec/dense_codec.h"
#include "codec/ferret/basis.h"

namespace fl::internal::ferret {
namespace {

Status Truncated(const char* what) {
  return Status::DataLoss(std::string("truncated ferret coefficient table: ") + what);
}

std::string Where(uint32_t block, uint32_t seed) {
  return "block " + std::to_string(block) + " seed " + std::to_string(seed);
}

uint64_t Key(uint32_t block, uint32_t seed) { return (static_cast<uint64_t>(block) << 32) | seed; }

// Number of block records (runs of one block) in the entries.
uint32_t CountRecords(const std::vector<Coefficient>& e) {
  uint32_t records = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    if (i == 0 || e[i].block != e[i - 1].block) ++records;
  }
  return records;
}

void PutHeader(const CoefficientTable& table, CoefficientTableFormat format, uint32_t records,
               std::string* out) {
  out->append(kCoefficientTableMagic, 4);
  PutU32(out, static_cast<uint32_t>(format));
  PutU64(out, table.plan_hash());
  PutU64(out, table.basis_hash());
  PutU32(out, table.num_seeds());
  PutU32(out, table.num_blocks());
  PutU32(out, records);
}

// The value width of a sampled format (3: int8, 4: int4) and its largest magnitude.
struct SampledWidth {
  int bits;
  int max_q;  // 127 or 7: -2^(bits-1) is never used, so the code is symmetric
};

SampledWidth WidthOf(CoefficientTableFormat format) {
  return format == CoefficientTableFormat::kSampledInt4 ? SampledWidth{4, 7}
                                                        : SampledWidth{8, 127};
}

size_t PackedBytes(uint32_t n, SampledWidth w) {
  return w.bits == 8 ? n : (static_cast<size_t>(n) + 1) / 2;
}

// Value j of a record's packed codes (int4: low nibble first).
int CodeAt(std::string_view packed, uint32_t j, SampledWidth w) {
  if (w.bits == 8) return static_cast<int8_t>(packed[j]);
  const unsigned byte = static_cast<unsigned char>(packed[j / 2]);
  const int nibble = static_cast<int>(j % 2 == 0 ? byte & 0xfu : byte >> 4);
  return nibble >= 8 ? nibble - 16 : nibble;
}

// A sampled record's exponent for a largest magnitude `max_abs`: the smallest e in
// [-128, 127] with round(max_abs * 2^-e) <= max_q.
int SampledExponent(double max_abs, int max_q) {
  int e = -128;
  if (max_abs > 0) {
    e = std::max(-128, static_cast<int>(std::ceil(std::log2(max_abs / max_q))) - 1);
    while (std::nearbyint(std::ldexp(max_abs, -e)) > max_q) ++e;
  }
  return e;
}

// A sampled format's body after the header, into `table` (its header already set).
Status ParseSampledRecords(uint32_t records, SampledWidth w, ByteReader* r,
                           CoefficientTable* table) {
  uint64_t selection_seed = 0;
  if (!r->U64(&selection_seed)) return Truncated("selection seed");
  // Each record takes at least 4 + 4 + 1 + 1 bytes.
  if (records > r->remaining() / 10) return Truncated("block records");
  bool have_previous = false;
  uint32_t previous = 0;
  for (uint32_t rec = 0; rec < records; ++rec) {
    uint32_t block = 0, n = 0;
    std::string_view exponent_byte, q;
    if (!r->U32(&block) || !r->U32(&n) || !r->Bytes(1, &exponent_byte)) {
      return Truncated("block record");
    }
    if (block >= table->num_blocks()) {
      return Status::InvalidArgument("unknown ferret block " + std::to_string(block) +
                                     " (plan has " + std::to_string(table->num_blocks()) + ")");
    }
    if (have_previous && block <= previous) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     " does not follow block " + std::to_string(previous));
    }
    have_previous = true;
    previous = block;
    if (n == 0 || n > table->num_seeds()) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) + " samples " +
                                     std::to_string(n) + " of " +
                                     std::to_string(table->num_seeds()) + " bases");
    }
    // Checked before drawing the n indices, so the work stays linear in the
    // input.
    if (!r->Bytes(PackedBytes(n, w), &q)) return Truncated("values");
    const int exponent = static_cast<int8_t>(exponent_byte[0]);
    int max_q = 0;
    for (uint32_t j = 0; j < n; ++j) {
      const int v = CodeAt(q, j, w);
      if (v < -w.max_q) {
        return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                       " holds the code " + std::to_string(v) +
                                       " (outside [-" + std::to_string(w.max_q) + ", " +
                                       std::to_string(w.max_q) + "])");
      }
      max_q = std::max(max_q, std::abs(v));
    }
    if (w.bits == 4 && n % 2 == 1 && (static_cast<unsigned char>(q.back()) >> 4) != 0) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     ": the padding nibble is not zero");
    }
    if (exponent > -128 && 2 * max_q <= w.max_q) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     " has a non-minimal exponent " + std::to_string(exponent));
    }
    const std::vector<uint32_t> seeds =
        SelectBasisIndices(table->num_seeds(), n, selection_seed, block);
    for (uint32_t j = 0; j < n; ++j) {
      const float value = static_cast<float>(std::ldexp(CodeAt(q, j, w), exponent));
      if (!std::isfinite(value)) {
        return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                       ": exponent " + std::to_string(exponent) +
                                       " overflows float");
      }
      FL_RETURN_IF_ERROR(table->Append(block, seeds[j], value));
    }
  }
  if (r->remaining() != 0) {
    return Status::DataLoss("ferret coefficient table followed by " +
                            std::to_string(r->remaining()) + " trailing bytes");
  }
  return Status::Ok();
}

}  // namespace

CoefficientTable::CoefficientTable(uint64_t plan_hash, uint64_t basis_hash, uint32_t num_seeds,
                                   uint32_t num_blocks)
    : plan_hash_(plan_hash),
      basis_hash_(basis_hash),
      num_seeds_(num_seeds),
      num_blocks_(num_blocks) {}

Status CoefficientTable::Append(uint32_t block, uint32_t seed, float value) {
  if (block >= num_blocks_) {
    return Status::InvalidArgument("unknown ferret block " + std::to_string(block) + " (plan has " +
                                   std::to_string(num_blocks_) + ")");
  }
  if (seed >= num_seeds_) {
    return Status::InvalidArgument("unknown ferret seed index " + std::to_string(seed) +
                                   " (pool has " + std::to_string(num_seeds_) + ")");
  }
  if (!entries_.empty() && Key(entries_.back().block, entries_.back().seed) >= Key(block, seed)) {
    return Status::InvalidArgument("ferret coefficient " + Where(block, seed) + " is not after " +
                                   Where(entries_.back().block, entries_.back().seed));
  }
  entries_.push_back({block, seed, value});
  return Status::Ok();
}

std::span<const Coefficient> CoefficientTable::BlockEntries(uint32_t block) const {
  auto first = std::lower_bound(entries_.begin(), entries_.end(), block,
                                [](const Coefficient& c, uint32_t b) { return c.block < b; });
  auto last = std::upper_bound(first, entries_.end(), block,
                               [](uint32_t b, const Coefficient& c) { return b < c.block; });
  return {entries_.data() + (first - entries_.begin()), static_cast<size_t>(last - first)};
}

bool CoefficientTable::operator==(const CoefficientTable& other) const {
  if (plan_hash_ != other.plan_hash_ || basis_hash_ != other.basis_hash_ ||
      num_seeds_ != other.num_seeds_ || num_blocks_ != other.num_blocks_ ||
      entries_.size() != other.entries_.size()) {
    return false;
  }
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Coefficient& a = entries_[i];
    const Coefficient& b = other.entries_[i];
    if (a.block != b.block || a.seed != b.seed ||
        std::bit_cast<uint32_t>(a.value) != std::bit_cast<uint32_t>(b.value)) {
      return false;
    }
  }
  return true;
}

std::string SerializeCoefficientTable(const CoefficientTable& table,
                                      CoefficientTableFormat format) {
  const bool bf16 = format == CoefficientTableFormat::kBFloat16;
  const size_t bitmap_bytes = (static_cast<size_t>(table.num_seeds()) + 7) / 8;
  const std::vector<Coefficient>& e = table.entries();
  const uint32_t records = CountRecords(e);
  std::string out;
  out.reserve(36 + records * (4 + bitmap_bytes) + (bf16 ? 2 : 4) * e.size());
  PutHeader(table, bf16 ? CoefficientTableFormat::kBFloat16 : CoefficientTableFormat::kFloat32,
            records, &out);
  std::string bitmap;
  for (size_t i = 0; i < e.size();) {
    size_t end = i;
    while (end < e.size() && e[end].block == e[i].block) ++end;
    PutU32(&out, e[i].block);
    bitmap.assign(bitmap_bytes, '\0');
    for (size_t j = i; j < end; ++j) {
      bitmap[e[j].seed / 8] = static_cast<char>(bitmap[e[j].seed / 8] | (1u << (e[j].seed % 8)));
    }
    out.append(bitmap);
    for (size_t j = i; j < end; ++j) {
      if (bf16) {
        PutU16(&out, FloatToBFloat16(e[j].value));
      } else {
        PutU32(&out, std::bit_cast<uint32_t>(e[j].value));
      }
    }
    i = end;
  }
  return out;
}

Result<std::string> SerializeSampledCoefficientTable(const CoefficientTable& table,
                                                     uint64_t selection_seed,
                                                     CoefficientTableFormat format) {
  if (format != CoefficientTableFormat::kSampledInt8 &&
      format != CoefficientTableFormat::kSampledInt4) {
    return Status::InvalidArgument("not a sampled ferret table format: " +
                                   std::to_string(static_cast<uint32_t>(format)));
  }
  const SampledWidth w = WidthOf(format);
  const std::vector<Coefficient>& e = table.entries();
  const uint32_t records = CountRecords(e);
  std::string out;
  out.reserve(44 + 9 * static_cast<size_t>(records) + e.size());
  PutHeader(table, format, records, &out);
  PutU64(&out, selection_seed);
  for (size_t i = 0; i < e.size();) {
    size_t end = i;
    while (end < e.size() && e[end].block == e[i].block) ++end;
    const uint32_t block = e[i].block;
    const uint32_t n = static_cast<uint32_t>(end - i);
    const std::vector<uint32_t> expected =
        SelectBasisIndices(table.num_seeds(), n, selection_seed, block);
    double max_abs = 0;
    for (size_t j = i; j < end; ++j) {
      if (e[j].seed != expected[j - i]) {
        return Status::InvalidArgument("ferret block " + std::to_string(block) +
                                       " was not sampled from selection seed " +
                                       std::to_string(selection_seed));
      }
      if (!std::isfinite(e[j].value)) {
        return Status::InvalidArgument("non-finite ferret coefficient at " +
                                       Where(block, e[j].seed));
      }
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(e[j].value)));
    }
    const int exponent = SampledExponent(max_abs, w.max_q);
    if (std::ldexp(std::nearbyint(std::ldexp(max_abs, -exponent)), exponent) >
        std::numeric_limits<float>::max()) {
      return Status::InvalidArgument("ferret coefficient of block " + std::to_string(block) +
                                     " is too large for a sampled integer format");
    }
    PutU32(&out, block);
    PutU32(&out, n);
    out.push_back(static_cast<char>(static_cast<int8_t>(exponent)));
    const size_t first = out.size();
    out.append(PackedBytes(n, w), '\0');
    for (size_t j = i; j < end; ++j) {
      const int q =
          static_cast<int>(std::nearbyint(std::ldexp(static_cast<double>(e[j].value), -exponent)));
      const size_t k = j - i;
      if (w.bits == 8) {
        out[first + k] = static_cast<char>(static_cast<int8_t>(q));
      } else {
        const unsigned nibble = static_cast<unsigned>(q) & 0xfu;
        out[first + k / 2] =
            static_cast<char>(static_cast<unsigned char>(out[first + k / 2]) |
                              (k % 2 == 0 ? nibble : nibble << 4));
      }
    }
    i = end;
  }
  return out;
}

Result<CoefficientTable> ParseCoefficientTable(std::string_view bytes) {
  ByteReader r(bytes);
  std::string_view magic;
  if (!r.Bytes(4, &magic)) return Truncated("magic");
  if (std::memcmp(magic.data(), kCoefficientTableMagic, 4) != 0) {
    return Status::InvalidArgument("not a ferret coefficient table (bad magic)");
  }
  uint32_t version = 0;
  if (!r.U32(&version)) return Truncated("version");
  const bool bf16 = version == static_cast<uint32_t>(CoefficientTableFormat::kBFloat16);
  const bool sampled = version == static_cast<uint32_t>(CoefficientTableFormat::kSampledInt8) ||
                       version == static_cast<uint32_t>(CoefficientTableFormat::kSampledInt4);
  if (version != static_cast<uint32_t>(CoefficientTableFormat::kFloat32) && !bf16 && !sampled) {
    return Status::InvalidArgument("unsupported ferret coefficient table version " +
                                   std::to_string(version));
  }
  uint64_t plan_hash = 0, basis_hash = 0;
  uint32_t num_seeds = 0, num_blocks = 0, records = 0;
  if (!r.U64(&plan_hash) || !r.U64(&basis_hash) || !r.U32(&num_seeds) || !r.U32(&num_blocks) ||
      !r.U32(&records)) {
    return Truncated("header");
  }
  if (num_seeds == 0 || num_seeds > kMaxSeeds) {
    return Status::InvalidArgument("ferret table seed count " + std::to_string(num_seeds) +
                                   " outside [1, " + std::to_string(kMaxSeeds) + "]");
  }
  if (num_blocks > kMaxBlocks) {
    return Status::InvalidArgument("ferret table block count " + std::to_string(num_blocks) +
                                   " above " + std::to_string(kMaxBlocks));
  }
  if (records > num_blocks) {
    return Status::InvalidArgument("ferret table has " + std::to_string(records) +
                                   " block records for " + std::to_string(num_blocks) + " blocks");
  }
  if (sampled) {
    CoefficientTable table(plan_hash, basis_hash, num_seeds, num_blocks);
    FL_RETURN_IF_ERROR(ParseSampledRecords(
        records, WidthOf(static_cast<CoefficientTableFormat>(version)), &r, &table));
    return table;
  }
  const size_t bitmap_bytes = (static_cast<size_t>(num_seeds) + 7) / 8;
  const size_t value_bytes = bf16 ? 2 : 4;
  // Each record takes at least 4 + bitmap + one value: reject counts the input
  // cannot hold before reserving anything.
  if (records > r.remaining() / (4 + bitmap_bytes + value_bytes)) {
    return Truncated("block records");
  }
  CoefficientTable table(plan_hash, basis_hash, num_seeds, num_blocks);
  bool have_previous = false;
  uint32_t previous = 0;
  for (uint32_t rec = 0; rec < records; ++rec) {
    uint32_t block = 0;
    std::string_view bitmap;
    if (!r.U32(&block) || !r.Bytes(bitmap_bytes, &bitmap)) return Truncated("block record");
    if (block >= num_blocks) {
      return Status::InvalidArgument("unknown ferret block " + std::to_string(block) +
                                     " (plan has " + std::to_string(num_blocks) + ")");
    }
    if (have_previous && block <= previous) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     " does not follow block " + std::to_string(previous));
    }
    have_previous = true;
    previous = block;
    const unsigned tail_bits = num_seeds % 8;
    if (tail_bits != 0 &&
        (static_cast<unsigned char>(bitmap[bitmap_bytes - 1]) >> tail_bits) != 0) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     " uses a seed index beyond " + std::to_string(num_seeds));
    }
    size_t count = 0;
    for (char c : bitmap) count += std::popcount(static_cast<unsigned char>(c));
    if (count == 0) {
      return Status::InvalidArgument("ferret table block " + std::to_string(block) +
                                     " record lists no seed");
    }
    if (count > r.remaining() / value_bytes) return Truncated("values");
    for (uint32_t k = 0; k < num_seeds; ++k) {
      if (((static_cast<unsigned char>(bitmap[k / 8]) >> (k % 8)) & 1u) == 0) continue;
      float value = 0.0f;
      if (bf16) {
        uint16_t bits = 0;
        r.U16(&bits);  // cannot fail: checked above
        value = BFloat16ToFloat(bits);
      } else {
        uint32_t bits = 0;
        r.U32(&bits);  // cannot fail: checked above
        value = std::bit_cast<float>(bits);
      }
      FL_RETURN_IF_ERROR(table.Append(block, k, value));
    }
  }
  if (r.remaining() != 0) {
    return Status::DataLoss("ferret coefficient table followed by " +
                            std::to_string(r.remaining()) + " trailing bytes");
  }
  return table;
}

Status ValidateCoefficientTable(const CoefficientTable& table, uint64_t plan_hash,
                                uint64_t basis_hash, uint32_t num_seeds, uint32_t num_blocks) {
  if (table.plan_hash() != plan_hash) {
    return Status::FailedPrecondition("ferret table was computed for block plan " +
                                      std::to_string(table.plan_hash()) + ", expected " +
                                      std::to_string(plan_hash));
  }
  if (table.basis_hash() != basis_hash) {
    return Status::FailedPrecondition("ferret table was computed for basis " +
                                      std::to_string(table.basis_hash()) + ", expected " +
                                      std::to_string(basis_hash));
  }
  if (table.num_seeds() != num_seeds || table.num_blocks() != num_blocks) {
    return Status::InvalidArgument(
        "ferret table header has K=" + std::to_string(table.num_seeds()) +
        " L=" + std::to_string(table.num_blocks()) + ", expected K=" + std::to_string(num_seeds) +
        " L=" + std::to_string(num_blocks));
  }
  for (const Coefficient& c : table.entries()) {
    if (c.block >= num_blocks) {
      return Status::InvalidArgument("unknown ferret block at " + Where(c.block, c.seed));
    }
    if (c.seed >= num_seeds) {
      return Status::InvalidArgument("unknown ferret seed index at " + Where(c.block, c.seed));
    }
    if (!std::isfinite(c.value)) {
      return Status::InvalidArgument("non-finite ferret coefficient at " + Where(c.block, c.seed));
    }
  }
  return Status::Ok();
}

CoefficientAccumulator::CoefficientAccumulator(uint64_t plan_hash, uint64_t basis_hash,
                                               uint32_t num_seeds, uint32_t num_blocks)
    : plan_hash_(plan_hash),
      basis_hash_(basis_hash),
      num_seeds_(num_seeds),
      num_blocks_(num_blocks) {}

Status CoefficientAccumulator::CheckHeader(uint64_t plan_hash, uint64_t basis_hash,
                                           uint32_t num_seeds, uint32_t num_blocks) const {
  if (plan_hash != plan_hash_ || basis_hash != basis_hash_ || num_seeds != num_seeds_ ||
      num_blocks != num_blocks_) {
    return Status::FailedPrecondition(
        "ferret coefficients belong to another (plan, basis): plan " + std::to_string(plan_hash) +
        " basis " + std::to_string(basis_hash) + " K=" + std::to_string(num_seeds) +
        " L=" + std::to_string(num_blocks) + ", accumulator has plan " +
        std::to_string(plan_hash_) + " basis " + std::to_string(basis_hash_) +
        " K=" + std::to_string(num_seeds_) + " L=" + std::to_string(num_blocks_));
  }
  return Status::Ok();
}

void CoefficientAccumulator::MergeSorted(const std::vector<Sum>& other, double weight) {
  std::vector<Sum> merged;
  merged.reserve(sums_.size() + other.size());
  size_t i = 0, j = 0;
  while (i < sums_.size() || j < other.size()) {
    if (j == other.size() || (i < sums_.size() && sums_[i].key < other[j].key)) {
      merged.push_back(sums_[i++]);
    } else if (i == sums_.size() || other[j].key < sums_[i].key) {
      merged.push_back({other[j].key, weight * other[j].value});
      ++j;
    } else {
      merged.push_back({sums_[i].key, sums_[i].value + weight * other[j].value});
      ++i;
      ++j;
    }
  }
  sums_ = std::move(merged);
}

Status CoefficientAccumulator::Add(const CoefficientTable& table, double weight) {
  FL_RETURN_IF_ERROR(
      CheckHeader(table.plan_hash(), table.basis_hash(), table.num_seeds(), table.num_blocks()));
  if (!std::isfinite(weight)) {
    return Status::InvalidArgument("non-finite ferret aggregation weight");
  }
  std::vector<Sum> incoming;
  incoming.reserve(table.size());
  for (const Coefficient& c : table.entries()) {
    if (!std::isfinite(c.value)) {
      return Status::InvalidArgument("non-finite ferret coefficient at " + Where(c.block, c.seed));
    }
    incoming.push_back({Key(c.block, c.seed), static_cast<double>(c.value)});
  }
  MergeSorted(incoming, weight);
  ++num_added_;
  total_weight_ += weight;
  return Status::Ok();
}

Status CoefficientAccumulator::MergeWith(const CoefficientAccumulator& other) {
  FL_RETURN_IF_ERROR(
      CheckHeader(other.plan_hash_, other.basis_hash_, other.num_seeds_, other.num_blocks_));
  MergeSorted(other.sums_, 1.0);
  num_added_ += other.num_added_;
  total_weight_ += other.total_weight_;
  return Status::Ok();
}

Result<CoefficientTable> CoefficientAccumulator::ToTable(double scale) const {
  if (!std::isfinite(scale)) return Status::InvalidArgument("non-finite ferret table scale");
  CoefficientTable table(plan_hash_, basis_hash_, num_seeds_, num_blocks_);
  for (const Sum& s : sums_) {
    const double v = scale * s.value;
    if (!(std::fabs(v) <= static_cast<double>(std::numeric_limits<float>::max()))) {
      return Status::InvalidArgument(
          "aggregated ferret coefficient at " +
          Where(static_cast<uint32_t>(s.key >> 32), static_cast<uint32_t>(s.key)) +
          " overflows float");
    }
    FL_RETURN_IF_ERROR(table.Append(static_cast<uint32_t>(s.key >> 32),
                                    static_cast<uint32_t>(s.key), static_cast<float>(v)));
  }
  return table;
}

Result<CoefficientTable> WeightedSum(std::span<const CoefficientTable> tables,
                                     std::span<const double> weights) {
  if (tables.empty() || tables.size() != weights.size()) {
    return Status::InvalidArgument("WeightedSum needs one weight per table and at least one table");
  }
  CoefficientAccumulator acc(tables[0].plan_hash(), tables[0].basis_hash(), tables[0].num_seeds(),
                             tables[0].num_blocks());
  for (size_t i = 0; i < tables.size(); ++i) FL_RETURN_IF_ERROR(acc.Add(tables[i], weights[i]));
  return acc.ToTable();
}

}  // namespace fl::internal::ferret
