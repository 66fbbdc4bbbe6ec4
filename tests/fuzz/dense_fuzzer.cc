// Dense upload decoding: fl::DecodeDenseDelta (the checks of the built-in dense
// aggregator) and the codec under it (DecodeDense, AccumulateDense).
// Input: u8 encoding, u8 flags, f64 weight, f64 train loss, then the payload bytes.
// An accepted upload holds finite values only, so it re-encodes to the same bytes, and
// AccumulateDense must accept exactly what DecodeDense + FindNonFinite accept.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "codec/dense_codec.h"
#include "fl/algorithm.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 18) return 0;
  static const fl::Layout layout = fl::fuzz::FuzzLayout();
  fl::Payload payload;
  payload.meta.encoding = static_cast<fl::Encoding>(data[0] % 6);  // 0 and 4, 5 are not dense
  payload.meta.layout_hash = (data[1] & 1) ? layout.hash() : layout.hash() ^ data[1];
  std::memcpy(&payload.meta.weight, data + 2, 8);
  std::memcpy(&payload.meta.train_loss, data + 10, 8);
  payload.bytes.assign(reinterpret_cast<const char*>(data) + 18, size - 18);

  fl::Result<fl::ParamSet> delta = fl::DecodeDenseDelta(payload, layout);
  if (delta.ok()) {
    FUZZ_CHECK(delta->size() == layout.total_numel(), "wrong size");
    FUZZ_CHECK(delta->AllFinite(), "an accepted delta holds a non-finite value");
    std::string again;
    FUZZ_CHECK(fl::internal::EncodeDense(delta->values(), payload.meta.encoding, &again).ok(),
               "re-encode failed");
    FUZZ_CHECK(again == payload.bytes, "an accepted delta re-encodes to other bytes");
  }

  // The codec alone, with a length derived from the input so every size is reachable.
  const fl::Encoding encoding = payload.meta.encoding;
  const size_t width = fl::internal::DenseEncodedSize(1, encoding);
  const size_t n = width == 0 ? payload.bytes.size() : payload.bytes.size() / width +
                                                           (data[1] >> 7);
  std::vector<float> out(n);
  const fl::Status decoded = fl::internal::DecodeDense(payload.bytes, encoding, out);
  std::vector<double> acc(n, 0.0);
  const fl::Status folded = fl::internal::AccumulateDense(payload.bytes, encoding, 1.0, acc);
  const bool finite = decoded.ok() && fl::internal::FindNonFinite(out) == out.size();
  FUZZ_CHECK(folded.ok() == finite, "AccumulateDense and DecodeDense disagree: " +
                                        decoded.ToString() + " / " + folded.ToString());
  if (folded.ok()) {
    for (size_t i = 0; i < n; ++i) {
      FUZZ_CHECK(acc[i] == static_cast<double>(out[i]), "fold != decode at " + std::to_string(i));
    }
  } else {
    for (double v : acc) FUZZ_CHECK(v == 0.0, "a refused fold touched the accumulator");
  }
  return 0;
}
