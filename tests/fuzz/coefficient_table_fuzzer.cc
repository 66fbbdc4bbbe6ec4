// ParseCoefficientTable on untrusted bytes (all four formats). A table that parses has
// exactly one encoding in its format, so serializing it again must give the input back;
// Validate and the accumulator must accept or refuse it without crashing.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "codec/ferret/coefficient_table.h"
#include "tests/fuzz/fuzz_common.h"

using fl::internal::ferret::CoefficientAccumulator;
using fl::internal::ferret::CoefficientTable;
using fl::internal::ferret::CoefficientTableFormat;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  fl::Result<CoefficientTable> table = fl::internal::ferret::ParseCoefficientTable(bytes);
  if (!table.ok()) return 0;

  uint32_t version = 0;
  std::memcpy(&version, data + 4, sizeof(version));  // parsed, so the header is there
  const auto format = static_cast<CoefficientTableFormat>(version);
  std::string again;
  if (format == CoefficientTableFormat::kFloat32 || format == CoefficientTableFormat::kBFloat16) {
    again = fl::internal::ferret::SerializeCoefficientTable(*table, format);
  } else {
    uint64_t selection_seed = 0;  // after magic, version, 2 hashes, K, L, num_records
    std::memcpy(&selection_seed, data + 36, sizeof(selection_seed));
    fl::Result<std::string> sampled =
        fl::internal::ferret::SerializeSampledCoefficientTable(*table, selection_seed, format);
    FUZZ_CHECK(sampled.ok(), sampled.status().ToString());
    again = *std::move(sampled);
  }
  if (again != bytes) {
    // The one exception: bfloat16 writes every NaN quiet (FloatToBFloat16), so a
    // signaling NaN comes back quiet; everything else must be bit for bit the same.
    FUZZ_CHECK(format == CoefficientTableFormat::kBFloat16, "a parsed table re-encodes to other bytes");
    fl::Result<CoefficientTable> back = fl::internal::ferret::ParseCoefficientTable(again);
    FUZZ_CHECK(back.ok() && back->size() == table->size(), "the re-encoded table does not parse");
    for (size_t i = 0; i < table->size(); ++i) {
      const auto& a = table->entries()[i];
      const auto& b = back->entries()[i];
      const bool same = (a.value == b.value || (std::isnan(a.value) && std::isnan(b.value))) &&
                        std::signbit(a.value) == std::signbit(b.value);
      FUZZ_CHECK(a.block == b.block && a.seed == b.seed && same,
                 "bfloat16 entry " + std::to_string(i) + " changed beyond NaN quieting");
    }
  }

  const CoefficientTable& t = *table;
  const fl::Status valid = fl::internal::ferret::ValidateCoefficientTable(
      t, t.plan_hash(), t.basis_hash(), t.num_seeds(), t.num_blocks());
  CoefficientAccumulator acc(t.plan_hash(), t.basis_hash(), t.num_seeds(), t.num_blocks());
  const fl::Status added = acc.Add(t, 0.5);
  FUZZ_CHECK(valid.ok() == added.ok(), "Validate and Add disagree: " + valid.ToString() +
                                           " / " + added.ToString());
  if (added.ok()) {
    fl::Result<CoefficientTable> sum = acc.ToTable(2.0);
    FUZZ_CHECK(!sum.ok() || sum->size() <= t.size(), "the sum has more entries than its input");
  }
  return 0;
}
