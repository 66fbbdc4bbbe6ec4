// Keyed (named-subset) upload decoding: LocateNamedSubsetValues (the norm bound's walk),
// DecodeNamedSubset against a small pool layout, then the fold of what it accepts.
// Input: the payload bytes, as a client sends them.
// A refusal is InvalidArgument with a printable reason. An accepted payload names each
// layout tensor at most once, with the layout's value count, a fraction in [0, 1] and
// finite values, so it re-encodes to the same bytes and folds into a KeyedAccumulator
// without error.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agg/keyed_accumulator.h"
#include "codec/dense_codec.h"
#include "codec/named_subset_codec.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto layout = std::make_shared<const fl::Layout>(fl::fuzz::FuzzPoolLayout());
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The norm bound's layout-free walk runs first on the server: any spans it finds lie
  // inside the payload.
  fl::Result<fl::internal::NamedSubsetValues> runs = fl::internal::LocateNamedSubsetValues(bytes);
  if (runs.ok()) {
    const size_t width = fl::internal::DenseEncodedSize(1, runs->value_encoding);
    for (const fl::internal::NamedSubsetValues::Span& span : runs->spans) {
      FUZZ_CHECK(span.offset <= size && span.count <= (size - span.offset) / width,
                 "a value span runs past the payload");
    }
  } else {
    FUZZ_CHECK(runs.status().code() == fl::StatusCode::kInvalidArgument, runs.status().ToString());
  }
  fl::Result<fl::internal::NamedSubset> subset = fl::internal::DecodeNamedSubset(bytes, *layout);
  if (!subset.ok()) {
    FUZZ_CHECK(subset.status().code() == fl::StatusCode::kInvalidArgument,
               subset.status().ToString());
    // Reasons go to the ledger and logs: one line of printable ASCII, whatever the input.
    for (unsigned char c : subset.status().message()) {
      FUZZ_CHECK(c >= 0x20 && c < 0x7f, "a refusal quotes a raw byte " + std::to_string(c));
    }
    return 0;
  }
  FUZZ_CHECK(!subset->tensors.empty(), "an accepted payload has no tensors");
  FUZZ_CHECK(runs.ok() && runs->spans.size() == subset->tensors.size(),
             "the norm bound's walk disagrees with the decoder");
  std::vector<bool> seen(layout->num_tensors(), false);
  std::vector<fl::internal::NamedTensorView> views;
  for (const fl::internal::NamedTensor& t : subset->tensors) {
    FUZZ_CHECK(t.index < layout->num_tensors(), "index beyond the layout");
    FUZZ_CHECK(!seen[t.index], "a tensor accepted twice");
    seen[t.index] = true;
    const fl::TensorSpec& spec = layout->tensors()[t.index];
    FUZZ_CHECK(t.values.size() == spec.numel, spec.name + ": wrong value count");
    FUZZ_CHECK(std::isfinite(t.fraction) && t.fraction >= 0 && t.fraction <= 1,
               spec.name + ": fraction outside [0, 1]");
    FUZZ_CHECK(fl::internal::FindNonFinite(t.values) == t.values.size(),
               spec.name + ": non-finite value accepted");
    views.push_back({spec.name, t.fraction, t.values});
  }
  std::string again;
  FUZZ_CHECK(fl::internal::EncodeNamedSubset(views, subset->value_encoding, &again).ok(),
             "re-encode failed");
  FUZZ_CHECK(again == bytes, "an accepted payload re-encodes to other bytes");

  for (fl::internal::KeyedRule rule :
       {fl::internal::KeyedRule::kSelected, fl::internal::KeyedRule::kUniform}) {
    fl::internal::KeyedAccumulator acc(layout, rule);
    const fl::Status folded = acc.Accumulate(*subset, 3.0);
    FUZZ_CHECK(folded.ok(), "an accepted payload does not fold: " + folded.ToString());
    fl::Result<fl::ParamSet> mean = acc.Mean();
    FUZZ_CHECK(mean.ok() && mean->AllFinite(), "the mean of an accepted payload is not finite");
  }
  return 0;
}
