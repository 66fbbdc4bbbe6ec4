// ParseFerretReplay (records a client downloads to catch up), then ApplyFerretReplay on
// a small model: a record that parses must serialize back to the same bytes, and
// applying it either succeeds or leaves the model untouched.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "algorithms/ferret/ferret_replay.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  fl::Result<fl::internal::FerretReplay> replay = fl::internal::ParseFerretReplay(bytes);
  if (!replay.ok()) return 0;
  FUZZ_CHECK(fl::internal::SerializeFerretReplay(*replay) == bytes,
             "a parsed record re-encodes to other bytes");

  static const fl::Layout layout = fl::fuzz::FuzzLayout();
  static const fl::ParamSet base = fl::fuzz::FuzzParams(layout, 7);
  fl::ParamSet model = base;
  fl::Result<fl::internal::ferret::ReconstructStats> stats =
      fl::internal::ApplyFerretReplay(*replay, {}, &model);
  if (!stats.ok()) {
    FUZZ_CHECK(std::memcmp(model.data(), base.data(), base.size() * sizeof(float)) == 0,
               "a failed apply changed the model: " + stats.status().ToString());
  }
  return 0;
}
